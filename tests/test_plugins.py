"""Plugin discovery: built-ins, entry points (without pip-installing), local modules."""

import textwrap

import pytest

from harness.errors import HarnessError
from harness.registry import load_registry

from helpers import tiny_sets

DATASET_PLUGIN = '''
from harness import hookimpl
from harness.base import Dataset, Example


class Echo(Dataset):
    name = "{name}"
    description = "sentences that say whether they are positive"
    labels = ("neg", "pos")
    metrics = ("accuracy",)

    def load(self, split):
        rows = [("good fine great", 1), ("bad awful poor", 0)] * 8
        return [Example(text=t, label=y) for t, y in rows]


@hookimpl
def harness_register_datasets(register):
    register(Echo)
'''


@pytest.fixture
def installed_plugin(tmp_path, monkeypatch, plugin_autoload):
    """A package 'installed' by putting it and its .dist-info (entry_points.txt) on sys.path,
    with entry-point autoload on (conftest turns it off for every other test)."""
    site = tmp_path / "site"
    (site / "echo_plugin").mkdir(parents=True)
    (site / "echo_plugin" / "__init__.py").write_text(DATASET_PLUGIN.format(name="echo"))
    dist = site / "echo_plugin-1.2.3.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: echo-plugin\nVersion: 1.2.3\n")
    (dist / "entry_points.txt").write_text("[harness]\necho = echo_plugin\n")
    monkeypatch.syspath_prepend(str(site))
    return site


def test_builtins_register_through_the_hooks():
    registry = load_registry()
    assert "cola" in registry.names("dataset")
    assert "fixed" in registry.names("strategy")
    assert "linear" in registry.names("head")
    assert registry.get("dataset", "cola").source == "built-in"


def test_entry_point_plugin_is_discovered_with_its_distribution(installed_plugin):
    entry = load_registry().get("dataset", "echo")
    assert entry.source == "entry point echo-plugin 1.2.3"
    assert entry.plugin == "echo"


def test_autoload_can_be_disabled_and_a_plugin_blocked(installed_plugin, monkeypatch):
    monkeypatch.setenv("HARNESS_DISABLE_PLUGIN_AUTOLOAD", "1")
    assert "echo" not in load_registry().names("dataset")
    monkeypatch.delenv("HARNESS_DISABLE_PLUGIN_AUTOLOAD")
    monkeypatch.setenv("HARNESS_BLOCK_PLUGINS", "echo")
    assert "echo" not in load_registry().names("dataset")


def test_trace_logs_hook_calls(installed_plugin, monkeypatch, capsys):
    monkeypatch.setenv("HARNESS_TRACE_PLUGINS", "1")
    load_registry()
    assert "harness_register_datasets" in capsys.readouterr().err


def test_local_module_named_in_the_suite_runs_end_to_end(cli, write_suite, tmp_path):
    (tmp_path / "my_data.py").write_text(DATASET_PLUGIN.format(name="mine"))
    suite = write_suite("name: local\nplugins: [my_data.py]\ndefaults: {dataset: mine}\n")
    code, out, err = cli("run", suite, "--out", tmp_path / "out", "--no-progress", *tiny_sets())
    assert code == 0, err
    assert "accuracy" in out


def test_local_module_from_the_command_line(cli, write_suite, tmp_path, monkeypatch):
    (tmp_path / "cmdline_data.py").write_text(DATASET_PLUGIN.format(name="fromcli"))
    monkeypatch.chdir(tmp_path)
    suite = write_suite("name: local\ndefaults: {dataset: fromcli}\n")
    code, out, err = cli("validate", suite, "--plugin", "cmdline_data.py")
    assert code == 0, err
    code, out, err = cli("plugins", "--plugin", "cmdline_data.py")
    assert code == 0 and "fromcli" in out and "local module" in out


def test_plugins_command_lists_every_family_with_source_and_options(cli, installed_plugin):
    code, out, _ = cli("plugins")
    assert code == 0
    for text in ("datasets", "tokenizer strategies", "heads", "cola", "fixed", "linear", "echo",
                 "echo-plugin 1.2.3", "built-in", "truncation", "freeze_backbone"):
        assert text in out


EXPORTER_PLUGIN = '''
from pydantic import Field

from harness import hookimpl
from harness.base import Options
from harness.base import Exporter


class TrackerOptions(Options):
    project: str = Field("bench", description="the tracker's project")


class Tracker(Exporter):
    name = "tracker"
    description = "each record to the team's tracker"
    extra = "tracker"
    requires = ("no_such_tracker_client",)
    Options = TrackerOptions

    @hookimpl
    def harness_record_stored(self, record, out_dir):
        pass
'''


def test_plugins_command_lists_the_exporters_with_options_and_the_extra_that_installs_them(cli, tmp_path, monkeypatch):
    """What `--export NAME` can switch on: the built-ins and a local module's, each with its
    options and the pip command of its extra, saying whether that is installed."""
    import sys

    monkeypatch.setenv("COLUMNS", "400")  # no cell wraps
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as without the mlflow extra
    (tmp_path / "tracker_export.py").write_text(EXPORTER_PLUGIN)
    monkeypatch.chdir(tmp_path)
    code, out, err = cli("plugins", "--plugin", "tracker_export.py")
    assert code == 0, err
    assert "exporters (--export NAME, or the suite's export: list)" in out
    exporters = out.split("exporters (--export NAME", 1)[1]
    for text in ("tensorboard", "pip install 'seqcls-harness[tensorboard]'", "harness.builtin.mlflow_export",
                 "tracking_uri: str | None = None", "pip install 'seqcls-harness[mlflow]' (not installed: mlflow)",
                 "tracker", "local module", "project: str = 'bench'", "each record to the team's tracker",
                 "pip install 'seqcls-harness[tracker]' (not installed: no_such_tracker_client)"):
        assert text in exporters, text


@pytest.mark.parametrize(
    "source, expected",
    [
        ("import not_a_module_anywhere\n", "failed to import: ModuleNotFoundError"),
        ("from harness import hookimpl\n@hookimpl\ndef harness_register_dataset(register):\n    pass\n",
         "unknown hook 'harness_register_dataset'"),
        ("from harness import hookimpl\n@hookimpl\ndef harness_register_heads(reg, extra):\n    pass\n",
         "harness_register_heads"),
        ("from harness import hookimpl\n@hookimpl\ndef harness_register_heads(register):\n    register(int)\n",
         "must subclass harness.base.Head"),
    ],
)
def test_broken_local_plugins_are_one_line_errors(tmp_path, source, expected):
    (tmp_path / "bad.py").write_text(textwrap.dedent(source))
    with pytest.raises(HarnessError) as info:
        load_registry(["bad.py"], base_dir=tmp_path)
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


def test_two_plugins_with_one_name_is_an_error(installed_plugin, tmp_path):
    (tmp_path / "dup.py").write_text(DATASET_PLUGIN.format(name="echo"))
    with pytest.raises(HarnessError, match="two plugins register the dataset 'echo'"):
        load_registry(["dup.py"], base_dir=tmp_path)
