"""Exporters: the ``harness_record_stored`` hook and the built-in ``tensorboard`` and ``mlflow``
exporters, each read back with its own project's reader.

The hook is shown to be called once per stored record, in the process that writes
``results.jsonl`` (the ``harness run`` process, with the default process isolation), after
the record is on disk, resumed suites included; a failing exporter is a warning that loses
no record. The errors (an unknown exporter, an option, a package not installed) are cases of
the catalogue in tests/test_bad_inputs.py.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from helpers import tiny_sets
from harness.records.store import read_records

#: a plugin's own exporter: appends what it was given to $EXPORT_LOG, with whether the
#: record was already in results.jsonl when the hook was called
RECORDER = '''
import json, os
from pathlib import Path

from harness import hookimpl


@hookimpl
def harness_record_stored(record, out_dir):
    lines = (Path(out_dir) / "results.jsonl").read_text(encoding="utf-8").splitlines()
    on_disk = any(json.loads(line) == record for line in lines)
    record["status"] = "tampered"  # a copy: the store and the other exporters never see this
    with open(os.environ["EXPORT_LOG"], "a", encoding="utf-8") as log:
        log.write(json.dumps({"run_id": record["run_id"], "pid": os.getpid(), "out": str(out_dir),
                              "on_disk": on_disk}) + "\\n")
'''

BROKEN = '''
from harness import hookimpl


@hookimpl
def harness_record_stored(record, out_dir):
    raise ConnectionError("tracker unreachable\\nsecond line")
'''

SUITE = """
    name: exported
    plugins: [{plugins}]
    defaults: {{dataset: cola, epochs: {epochs}}}
    matrix:
      seed: [1, 2]
"""


def _calls(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []


@pytest.fixture
def recorder(tmp_path, monkeypatch) -> Path:
    (tmp_path / "recorder.py").write_text(RECORDER, encoding="utf-8")
    log = tmp_path / "export.log"
    monkeypatch.setenv("EXPORT_LOG", str(log))
    return log


def test_a_plugin_exporter_gets_each_record_once_in_the_writing_process_resumed_runs_included(
    cli, write_suite, tmp_path, recorder
):
    suite = write_suite(SUITE.format(plugins="recorder.py", epochs=1))
    out = tmp_path / "out"
    # the default isolation: each run trains in a process of its own, the record is stored here
    code, _, err = cli("run", suite, "--out", out, "--no-progress", "--no-plot", *tiny_sets(max_len=16, seed=1))
    assert code == 0, err
    first = read_records(out)
    assert len(first) == 1 and first[0]["isolation"] == "process"
    assert [c["run_id"] for c in _calls(recorder)] == [first[0]["run_id"]]

    # the whole suite: the finished run is skipped (not stored, not exported again), the other runs
    code, _, err = cli("run", suite, "--out", out, "--no-progress", "--no-plot", *tiny_sets(max_len=16, seed=None))
    assert code == 0, err
    assert "1 of 2 runs already done" in err
    records = read_records(out)
    calls = _calls(recorder)
    assert sorted(c["run_id"] for c in calls) == sorted(r["run_id"] for r in records)  # each exactly once
    assert all(c["pid"] == os.getpid() and c["on_disk"] and c["out"] == str(out) for c in calls), calls
    assert {r["status"] for r in records} == {"ok"}  # the exporter's change to its copy reached nothing

    # nothing left to run: nothing stored, nothing exported
    code, _, err = cli("run", suite, "--out", out, "--no-progress", "--no-plot", *tiny_sets(max_len=16, seed=None))
    assert code == 0, err
    assert len(_calls(recorder)) == 2


def test_a_failing_exporter_is_a_warning_and_loses_no_record(cli, write_suite, tmp_path, recorder):
    (tmp_path / "broken.py").write_text(BROKEN, encoding="utf-8")
    suite = write_suite(SUITE.format(plugins="broken.py, recorder.py", epochs=1))
    out = tmp_path / "out"
    code, _, err = cli("run", suite, "--out", out, "--no-progress", "--no-plot", "--isolation", "none",
                       *tiny_sets(max_len=16, seed=None))
    assert code == 0, err
    records = read_records(out)
    assert len(records) == 2 and {r["status"] for r in records} == {"ok"}
    warnings = [line for line in err.splitlines() if "failed to export" in line]
    assert len(warnings) == 2, err  # one line per record
    broken = tmp_path / "broken.py"
    for record, line in zip(records, warnings):
        assert line == (
            f"warning: plugin 'local:{broken}' failed to export run {record['run_id']} (harness_record_stored): "
            f"ConnectionError: tracker unreachable; second line; the record is in {out / 'results.jsonl'}"
        )
    # the exporter after the broken one still got every record
    assert sorted(c["run_id"] for c in _calls(recorder)) == sorted(r["run_id"] for r in records)


def test_the_mlflow_exporter_is_read_back_with_mlflows_client(cli, write_suite, tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="the mlflow extra is not installed (pip install 'seqcls-harness[mlflow]')")
    pytest.importorskip("sqlalchemy", reason="the mlflow extra is not installed (pip install 'seqcls-harness[mlflow]')")
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    suite = write_suite(SUITE.format(plugins="", epochs=2))
    out = tmp_path / "out"
    code, _, err = cli("run", suite, "--out", out, "--export", "mlflow", "--no-progress", "--no-plot",
                       "--isolation", "none", *tiny_sets(max_len=16, seed=1, epochs=None))
    assert code == 0, err
    [record] = read_records(out)

    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("exported")
    [run] = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == record["run_id"] and run.info.status == "FINISHED"
    params = run.data.params
    assert params["max_len"] == "16" and params["seed"] == "1" and params["head.name"] == "linear"
    assert params["dataset.subset.train"] == str(record["config"]["dataset"]["subset"]["train"])
    assert params["tokenizer"] == "null"
    assert run.data.tags["env.torch"] == record["env"]["torch"]
    assert run.data.tags["harness.status"] == "ok"

    def history(key: str) -> list[tuple[int, float]]:
        return [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)]

    epochs = record["epochs"]
    assert history("train/loss") == [(e["epoch"], pytest.approx(e["train_loss"])) for e in epochs]
    assert history("train/seconds") == [(e["epoch"], pytest.approx(e["train_seconds"])) for e in epochs]
    assert history("eval/mcc") == [(e["epoch"], pytest.approx(e["metrics"]["mcc"])) for e in epochs]
    assert history("train/real_tokens_per_second") == [
        (e["epoch"], pytest.approx(e["real_tokens"] / e["train_seconds"])) for e in epochs
    ]
    assert run.data.metrics["mcc"] == pytest.approx(record["metrics"]["mcc"])  # the final metrics
    assert not {"mlruns", "mlartifacts", "mlflow.db"} & {p.name for p in tmp_path.iterdir()}  # nothing in the cwd


def test_the_tensorboard_exporter_is_read_back_with_tensorboards_reader(cli, write_suite, tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed "
                        "(pip install 'seqcls-harness[tensorboard]')")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    suite = write_suite(SUITE.format(plugins="", epochs=2).replace("plugins: []", "export: [tensorboard]"))
    out = tmp_path / "out"
    code, _, err = cli("run", suite, "--out", out, "--no-progress", "--no-plot", "--isolation", "none",
                       *tiny_sets(max_len=16, seed=1, epochs=None))
    assert code == 0, err
    [record] = read_records(out)

    events = EventAccumulator(str(out / "tensorboard" / record["run_id"]))
    events.Reload()

    def scalars(tag: str) -> list[tuple[int, float]]:
        return [(s.step, s.value) for s in events.Scalars(tag)]

    epochs = record["epochs"]
    assert scalars("train/loss") == [(e["epoch"], pytest.approx(e["train_loss"], rel=1e-6)) for e in epochs]
    assert scalars("train/seconds") == [(e["epoch"], pytest.approx(e["train_seconds"], rel=1e-6)) for e in epochs]
    assert scalars("eval/accuracy") == [(e["epoch"], pytest.approx(e["metrics"]["accuracy"], rel=1e-6)) for e in epochs]
    assert scalars("train/real_tokens_per_second") == [
        (e["epoch"], pytest.approx(e["real_tokens"] / e["train_seconds"], rel=1e-6)) for e in epochs
    ]
    [config] = events.Tensors("config/text_summary")
    text = config.tensor_proto.string_val[0].decode()
    assert "max_len: 16" in text and "name: cola" in text
