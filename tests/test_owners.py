"""One owner for each fact, and the small defects the house-keeping fixed: whether a key is
part of a run id, the resume command, a plugin's traceback on demand, a downloaded file
named in a later error."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from harness.cli import build_parser, resume_command
from harness.config.docs import key_table
from harness.config.keys import RunConfig, run_id, run_id_keys
from harness.data import DataFiles
from harness.records.record import RunRecord
from harness.records.summary import config_group, hidden, varied_keys


def test_target_is_out_of_the_run_id_everywhere():
    """Marked once on the field; the hash, the key table, the record's prose and the
    summaries all read it there (the record's prose had left `target` out)."""
    never, when_set = run_id_keys()
    assert {"data_dir", "target", "launcher.rdzv_endpoint", "launcher.timeout"} <= set(never)
    assert set(when_set) == {"dataset.validation_from_train", "test_split"}
    plain, aimed = RunConfig(), RunConfig(target={"mcc": 0.2})
    assert run_id(plain) == run_id(aimed)
    assert run_id(RunConfig(test_split="test")) != run_id(plain)  # part of it, once set
    row = next(line for line in key_table().splitlines() if line.startswith("| `target` |"))
    assert row.endswith("; not part of the run id |")
    assert "`target`" in RunRecord.model_fields["run_id"].description
    assert hidden("target") and hidden("target.mcc") and not hidden("max_len")
    records = [{"config": {**plain.model_dump(mode="json"), "seed": s}} for s in (1, 2)]
    records[1]["config"]["target"] = {"mcc": 0.2}
    assert config_group(records[0]) == config_group(records[1])
    assert "target.mcc" not in varied_keys(records)


def _run_args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["run", "suite.yaml", *argv])


def test_the_resume_command_is_built_from_the_parsed_arguments():
    """Every option given is kept, from the parser's own definitions (a new option needs no
    edit), but --rerun, which would train the finished runs again; --out is the folder used."""
    args = _run_args("--set", "max_len=64", "--set", "lr=1e-4", "--nproc", "2", "--isolation", "none",
                     "--plugin", "p.py", "--rerun", "--no-plot", "--epochs")
    command = resume_command(args, Path("results/x"))
    assert command[:5] == ["harness", "run", "suite.yaml", "--out", "results/x"]
    rest = " ".join(command[5:])
    assert "--set max_len=64 --set lr=1e-4" in rest and "--nproc 2" in rest and "--isolation none" in rest
    assert "--plugin p.py" in rest and "--no-plot" in rest and "--epochs" in rest
    assert "--rerun" not in rest
    assert resume_command(_run_args(), Path("o")) == ["harness", "run", "suite.yaml", "--out", "o"]  # defaults stay out


RAISING = """
from harness import hookimpl

@hookimpl
def harness_register_heads(register):
    raise ValueError("the plugin's own mistake")
"""


@pytest.mark.parametrize("shown", [False, True])
def test_a_plugins_traceback_is_shown_on_demand(cli, write_suite, tmp_path, monkeypatch, shown):
    (tmp_path / "raising.py").write_text(RAISING, encoding="utf-8")
    if shown:
        monkeypatch.setenv("HARNESS_TRACEBACK", "1")
    else:
        monkeypatch.delenv("HARNESS_TRACEBACK", raising=False)
    code, _, err = cli("validate", write_suite("name: t\nplugins: [raising.py]\n"))
    assert code == 2
    lines = err.splitlines()
    assert lines[0].startswith("error: plugin 'local:") and "ValueError: the plugin's own mistake" in lines[0]
    if shown:
        assert "Traceback (most recent call last)" in err and "raising.py" in err and 'raise ValueError' in err
    else:
        assert len(lines) == 1 and "Traceback" not in err


def test_a_file_had_by_download_is_named_when_its_split_is_empty(tmp_path, monkeypatch):
    """DataFiles.path now records a file it downloaded, as it records one it found, so the
    'no examples' error names it."""
    import harness.data.files as files_module
    from harness.data import Source
    from harness.data.splits import read_split

    cache = tmp_path / "cache"

    def fake_fetch(source, cache_dir, dataset):  # what a download leaves: the file in the cache
        (Path(cache_dir) / dataset).mkdir(parents=True, exist_ok=True)
        (Path(cache_dir) / dataset / "train.tsv").write_text("", encoding="utf-8")

    monkeypatch.setattr(files_module, "fetch", fake_fetch)
    monkeypatch.delenv("HARNESS_OFFLINE", raising=False)
    monkeypatch.delenv("HARNESS_DATA_DIR", raising=False)
    files = DataFiles("empty", cache_dir=cache)

    class Empty:
        name, splits, labels = "empty", ("train",), ("0", "1")
        num_labels = 2

        def __init__(self):
            self.files = files

        def load(self, split):
            self.files.path("train.tsv", Source(url="http://127.0.0.1:9/train.tsv", sha256="0" * 64))
            return []

    with pytest.raises(Exception) as info:
        read_split(Empty(), "train")
    assert str(cache / "empty" / "train.tsv") in str(info.value)
