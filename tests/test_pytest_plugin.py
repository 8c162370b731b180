"""The `harness_benchmark` fixture (pytest11 entry point): a user benchmarks their own plugin.

The inner pytest sessions run in a subprocess: torch cannot be imported twice in one
process, which an in-process pytester run would do when it restores sys.modules.
"""

import json
import subprocess
import sys

pytest_plugins = ["pytester"]

PLUGIN = '''
from harness import hookimpl
from harness.base import TokenizerStrategy


class PadTo16(TokenizerStrategy):
    name = "pad16"
    description = "pad each batch to its longest example, rounded up to a multiple of 16"

    def pad_to(self, batch_lengths):
        return min(self.max_len, -(-int(batch_lengths.max()) // 16) * 16)


@hookimpl
def harness_register_tokenizer_strategies(register):
    register(PadTo16)
'''

TEST = '''
TINY = {"model": "bert-tiny", "init": "random", "dataset.subset.train": 32, "dataset.subset.validation": 32}


def test_mine(harness_benchmark):
    record = harness_benchmark(TINY, strategy="pad16", plugins=["my_plugin.py"], rounds=2, warmup_rounds=1)
    assert record["status"] == "ok"


def test_typo(harness_benchmark):
    harness_benchmark(TINY, strategy="pad17", plugins=["my_plugin.py"])
'''


def test_a_user_benchmarks_a_local_strategy_plugin(pytester, tmp_path):
    pytester.makepyfile(my_plugin=PLUGIN, test_mine=TEST)
    out = tmp_path / "bench.json"
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--benchmark-json={out}")
    result.assert_outcomes(passed=1, failed=1)
    [bench] = json.loads(out.read_text())["benchmarks"]
    assert bench["name"] == "test_mine"
    assert bench["stats"]["rounds"] == 2 and bench["stats"]["median"] > 0
    info = bench["extra_info"]
    assert info["config"]["strategy"]["name"] == "pad16" and info["config"]["max_len"] == 64
    assert set(info["metrics"]) == {"mcc", "accuracy"} and info["main_metric"] == "mcc"
    assert len(info["epoch_seconds"]) == 2 and all(s > 0 for s in info["epoch_seconds"])
    assert info["padded_tokens"] % 16 == 0 and info["padded_tokens"] < 32 * 64  # padded per batch, not to 64
    assert info["device"] == "cpu" and info["device_name"]
    # a mistake in the keys fails that benchmark with one line naming it, no traceback
    result.stdout.fnmatch_lines(["*unknown strategy 'pad17'. Did you mean 'pad16'?*"])
    assert "Traceback" not in result.stdout.str()


def test_machine_info_names_the_device_and_versions():
    import torch
    import transformers

    from harness.pytest_plugin import machine_info

    info = machine_info("cpu")
    assert info["torch"] == torch.__version__ and info["transformers"] == transformers.__version__
    assert info["device"] == "cpu" and info["device_name"] and info["gpu"] is None
    assert info["harness"]


def test_loading_the_plugin_does_not_import_torch():
    # every pytest session in the environment imports the plugin: it must stay cheap
    code = "import sys, harness.pytest_plugin; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
