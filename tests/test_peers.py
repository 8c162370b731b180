"""benchmarks/peers.py runs end to end on a tiny random model: every peer trains the same
steps on the same data, and the ratios and precisions it reports are the ones it measured."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from harness.loop.env import choose_precision

ROOT = Path(__file__).resolve().parents[1]


def load_peers():
    spec = importlib.util.spec_from_file_location("peers", ROOT / "benchmarks" / "peers.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["peers"] = module
    spec.loader.exec_module(module)
    return module


def test_peers_train_the_same_steps_and_report_ratios(tmp_path, capsys):
    peers = load_peers()
    # the Trainer needs accelerate (in the dev and bench extras); without it, the loops that need nothing more
    names = "tutorial,trainer,trainer-fast,harness" if importlib.util.find_spec("accelerate") else "tutorial,harness"
    out = tmp_path / "peers.json"
    code = peers.main([
        "--model", "bert-tiny", "--init", "random", "--train-size", "96", "--max-len", "32", "--batch-size", "16",
        "--peers", names, "--harness-precision", "bf16", "--json", str(out),
    ])
    assert code == 0
    result = json.loads(out.read_text())["results"]
    assert list(result) == names.split(",")
    assert {r["steps"] for r in result.values()} == {6}  # 96 / 16, for every peer
    assert len({r["real_tokens"] for r in result.values()}) == 1  # the same data, tokenized alike
    assert result["tutorial"]["padded_tokens"] == 96 * 32  # padded to MAX_LEN
    assert result["harness"]["padded_tokens"] < 96 * 32  # bucketed
    assert result["harness"]["precision"] == "bf16" and result["tutorial"]["precision"] == "fp32"
    if "trainer-fast" in result:
        # auto: the harness's choice, bf16 only on a CPU that computes it natively
        assert result["trainer-fast"]["precision"] == choose_precision("auto", "cpu").precision
    table = capsys.readouterr().out
    assert "(a) tutorial" in table and "(d) harness" in table and "1.00x" in table  # (a) against itself


def test_unknown_peer_is_refused():
    with pytest.raises(SystemExit) as exc:
        load_peers().parse_args(["--peers", "tutorial,trainr"])
    assert exc.value.code == 2
