"""What every run keeps beside its record, and what reads it back: the predictions of each
evaluated split and the seconds of every step (harness.records.sidefiles), the paired
differences of ``harness report --vs``, and ``harness compare`` judging one run a side,
held to independent readings (scikit-learn's metrics of the files' predictions against the
records' metrics, the steps' seconds against the epochs' clocks)."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, matthews_corrcoef

from helpers import tiny_sets
from harness.records.sidefiles import STEP_COLUMNS, read_predictions, read_steps

SLOW_HEAD = '''
import os
import time

from harness import hookimpl
from harness.builtin.linear import Linear


class SlowLinear(Linear):
    """The linear head, plus sleep in each training forward: SLOW_HEAD_SECONDS, and
    SLOW_HEAD_SHARE of the previous step's period less its own extra sleep, which makes every
    step that much slower whatever its compute costs, the configuration unchanged."""

    name = "slow_linear"
    last = None
    extra = 0.0

    def forward(self, hidden_states, pooled, attention_mask):
        if self.training:
            now = time.perf_counter()
            period = now - SlowLinear.last - SlowLinear.extra if SlowLinear.last is not None else 0.0
            SlowLinear.extra = float(os.environ.get("SLOW_HEAD_SHARE", "0")) * min(max(period, 0.0), 1.0)
            time.sleep(float(os.environ.get("SLOW_HEAD_SECONDS", "0")) + SlowLinear.extra)
            SlowLinear.last = now
        return super().forward(hidden_states, pooled, attention_mask)


@hookimpl
def harness_register_heads(register):
    register(SlowLinear)
'''


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def two_strategies(tmp_path_factory) -> Path:
    """fixed and bucketed at two MAX_LENs, one seed, evaluated on validation and on the test split."""
    from harness.cli import main

    root = tmp_path_factory.mktemp("paired")
    suite = root / "suite.yaml"
    suite.write_text("name: paired\ndefaults: {dataset: cola, test_split: test}\n"
                     "matrix: {strategy: [fixed, bucketed], max_len: [16, 32]}\n", encoding="utf-8")
    out = root / "out"
    code = main(["run", str(suite), "--out", str(out), "--no-progress", "--no-plot",
                 *tiny_sets(max_len=None, **{"dataset.subset.validation": 96})])
    assert code == 0
    return out


def test_every_evaluated_split_of_every_run_has_its_predictions_and_they_score_as_the_record(two_strategies):
    runs = records(two_strategies)
    assert len(runs) == 4
    hashes: dict[str, set[str]] = {}
    for r in runs:
        assert r["side_files"] == {"predictions": f"predictions/{r['run_id']}.npz", "steps": f"steps/{r['run_id']}.npz"}
        splits = read_predictions(two_strategies / r["side_files"]["predictions"])
        assert set(splits) == {"validation", "test"}
        for name, sp in splits.items():
            hashes.setdefault(name, set()).add(sp.sha256)
            assert len(sp) == r["data"][name]["examples"]
            assert sp.probabilities.shape == (len(sp), 2)
            assert np.allclose(sp.probabilities.sum(axis=1), 1, atol=1e-5)
            assert (sp.probabilities.argmax(axis=1) == sp.predicted).all()
        # an independent reading: scikit-learn on the file's predictions gives the record's metrics
        val, test = splits["validation"], splits["test"]
        assert matthews_corrcoef(val.labels, val.predicted) == pytest.approx(r["metrics"]["mcc"], abs=1e-9)
        assert accuracy_score(val.labels, val.predicted) == pytest.approx(r["metrics"]["accuracy"], abs=1e-9)
        assert accuracy_score(test.labels, test.predicted) == pytest.approx(r["test_metrics"]["accuracy"], abs=1e-9)
    # runs that share a split share its hash; the two splits differ
    assert all(len(h) == 1 for h in hashes.values()) and hashes["validation"] != hashes["test"]


def test_the_steps_file_holds_every_step_and_its_seconds_are_the_epochs(two_strategies):
    for r in records(two_strategies):
        steps = read_steps(two_strategies / r["side_files"]["steps"])
        col = {name: steps[:, i] for i, name in enumerate(STEP_COLUMNS)}
        train, evaluation = col["kind"] == 0, col["kind"] == 1
        (epoch,) = r["epochs"]
        assert train.sum() == epoch["steps"] and evaluation.sum() >= 1
        assert col["batch_size"][train].sum() == epoch["samples"]
        assert col["real_tokens"][train].sum() == epoch["real_tokens"]
        assert (col["batch_size"][train] * col["padded_len"][train]).sum() == epoch["padded_tokens"]
        assert col["batch_size"][evaluation].sum() == r["data"]["validation"]["examples"]
        assert col["padded_len"].max() <= r["config"]["max_len"]
        # the steps lie inside the epoch's clock: their sum is the training loop less its few host lines
        seconds = col["seconds"][train].sum()
        assert 0.5 * epoch["train_seconds"] < seconds <= epoch["train_seconds"] * 1.001
        assert np.median(col["seconds"][train]) == pytest.approx(epoch["step_seconds"]["p50"])


def test_report_vs_prints_each_rows_paired_difference_from_its_baseline(two_strategies, cli):
    code, out, err = cli("report", two_strategies, "--vs", "strategy=fixed", "--format", "csv")
    assert code == 0, err
    header, *rows = list(csv.reader(io.StringIO(out)))
    assert header[:3] == ["strategy", "max_len", "chunk_batches"] and "Δ mcc [95%]" in header
    assert sorted((r[0], r[1]) for r in rows) == [("bucketed", "16"), ("bucketed", "32")]
    runs = {(r["config"]["strategy"]["name"], r["config"]["max_len"]): r for r in records(two_strategies)}
    for row in rows:
        cells = dict(zip(header, row))
        delta = float(cells["Δ mcc [95%]"].split()[0])
        expected = runs[("bucketed", int(row[1]))]["metrics"]["mcc"] - runs[("fixed", int(row[1]))]["metrics"]["mcc"]
        assert delta == pytest.approx(expected, abs=5e-4)
        assert cells["mcc verdict"].split(" (")[0] in ("better", "worse", "cannot tell")
        low, high = (float(v) for v in cells["Δ mcc [95%]"].split("[")[1].rstrip("]").split(", "))
        ind_low, ind_high = (float(v) for v in cells["Δ mcc independent"].strip("[]").split(", "))
        assert low <= delta <= high and high - low <= ind_high - ind_low
    assert "paired bootstrap over the examples" in err and "McNemar" in err


def test_compare_refuses_a_predictions_file_of_another_split(two_strategies, tmp_path, cli):
    other = tmp_path / "other"
    shutil.copytree(two_strategies, other)
    (victim, *_) = records(other)
    path = other / victim["side_files"]["predictions"]
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    for field in ("position", "label", "predicted", "probabilities", "sha256"):  # the test split, named validation
        arrays[f"validation.{field}"] = arrays[f"test.{field}"]
    np.savez_compressed(path, **arrays)
    code, _, err = cli("compare", two_strategies, other)
    assert code == 2
    (line,) = err.strip().splitlines()
    assert line.startswith(f"error: {path}: NEW run {victim['run_id']} evaluated other examples than BASE run")
    assert line.endswith("their predictions cannot be paired")


def _slow_run(cli, tmp_path: Path, monkeypatch, name: str, share: float) -> Path:
    plugin = tmp_path / "slow_head.py"
    plugin.write_text(SLOW_HEAD, encoding="utf-8")
    suite = tmp_path / "slow.yaml"
    suite.write_text("name: slow\ndefaults: {dataset: cola, head: slow_linear, strategy: fixed}\n", encoding="utf-8")
    # a steady floor that dominates the step: the tiny model's ~10 ms of compute vary from run to run (by
    # half on a busy CI machine), which would move a step's time by 2.5% here, far less than the 10% judged
    monkeypatch.setenv("SLOW_HEAD_SECONDS", "0.2")
    monkeypatch.setenv("SLOW_HEAD_SHARE", str(share))
    out = tmp_path / name
    code, _, err = cli("run", suite, "--out", out, "--no-progress", "--no-plot", "--plugin", plugin,
                       *tiny_sets(**{"dataset.subset.train": 240, "batch_size": 8}))
    assert code == 0, err
    return out


def test_compare_calls_a_ten_percent_slowdown_significant_with_one_run_a_side(cli, tmp_path, monkeypatch):
    # 30 steps a run; the slowed run sleeps a tenth of each step's period more: 10% slower steps
    base = _slow_run(cli, tmp_path, monkeypatch, "base", 0.0)
    same = _slow_run(cli, tmp_path, monkeypatch, "same", 0.0)
    slow = _slow_run(cli, tmp_path, monkeypatch, "slow", 0.1)
    if any(r.get("busy") for out in (base, same, slow) for r in records(out)):
        pytest.skip("the machine was busy while the runs trained: their step times cannot be judged "
                    "(compare says so instead; see test_steps_are_matched_by_shape_and_too_noisy_steps_are_said_so)")
    code, _, err = cli("compare", base, slow, "--max-slowdown", "5%")
    assert code == 1, err
    assert "steps slower by" in err and "steps p=" in err and "a regression" in err, err
    code, _, err = cli("compare", base, same, "--max-slowdown", "5%")
    assert code == 0, err
    assert "within the thresholds" in err


def test_the_time_plot_with_vs_draws_the_paired_intervals(two_strategies, cli, tmp_path):
    from harness.records.store import read_records
    from harness.records.versus import versus
    from harness.render.tradeoff import tradeoff_data

    runs = read_records(two_strategies)
    # the plot's score is the test split's MCC here (every run has one): the pairs are on that split
    vs = versus(runs, two_strategies, "strategy=fixed", split="test")
    data = tradeoff_data(runs, vs)
    assert data.metric == "test_mcc" and data.vs == "strategy=fixed"
    for point in data.points:
        if point.label.startswith("fixed"):
            assert point.paired is None  # a baseline: no bar
            continue
        low, high = point.paired
        assert low <= point.score <= high
    code, _, err = cli("report", two_strategies, "--vs", "strategy=fixed", "--plot", tmp_path / "t.png", "--x", "time")
    assert code == 0, err
    assert (tmp_path / "t.png").stat().st_size > 10_000
    code, _, err = cli("report", two_strategies, "--vs", "strategy=fixed", "--plot", tmp_path / "s.png")
    assert code == 2 and "add --x time" in err


def _stepped_results(folder: Path, seconds: float, busy: bool) -> Path:
    """A results directory of one ok run with 20 training steps of ``seconds`` each."""
    from harness.base import Example
    from harness.records.sidefiles import SplitPredictions, StepSamples, split_sha256, write_side_files

    examples = [Example(t, i % 2) for i, t in enumerate("abcdefgh")]
    labels = np.array([e.label for e in examples])
    steps = StepSamples()
    steps.add(0, 1, [(8, 32, 200)] * 20, [seconds] * 20)
    side = write_side_files(folder, "r1", [SplitPredictions("validation", split_sha256(examples), labels, labels,
                                                            np.eye(2)[labels])], steps)
    record = {"run_id": "r1", "status": "ok", "busy": busy, "main_metric": "mcc", "metrics": {"mcc": 1.0},
              "config": {"strategy": {"name": "fixed"}, "max_len": 32, "eval_split": "validation"},
              "epochs": [{"epoch": 1, "train_seconds": 20 * seconds, "eval_seconds": 0.1, "steps": 20, "real_tokens": 4000,
                         "padded_tokens": 5120, "peak_memory_bytes": 1, "train_loss": 0.5}],
              "side_files": side}
    (folder / "results.jsonl").write_text(json.dumps(record) + "\n", encoding="utf-8")
    return folder


def test_steps_of_a_busy_run_do_not_judge_its_time(tmp_path, cli):
    base = _stepped_results(tmp_path / "base", 0.10, busy=False)
    quiet = _stepped_results(tmp_path / "quiet", 0.12, busy=False)
    busy = _stepped_results(tmp_path / "busy", 0.12, busy=True)
    code, _, err = cli("compare", base, quiet, "--max-slowdown", "5%")
    assert code == 1 and "steps slower by 20.0% (limit 5%), steps p=" in err, err
    code, _, err = cli("compare", base, busy, "--max-slowdown", "5%")
    assert code == 1 and "a run was busy: the threshold alone judges it" in err, err
    assert "+20% epoch time (limit +5%): slower by 20.0%" in err and "steps p=" not in err
