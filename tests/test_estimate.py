"""``harness estimate`` and ``harness calibrate``: the machinery from shapes to a prediction,
held to what training did (the steps files of real runs) and to a synthetic cost whose
every figure is known; calibration files round-trip and refuse what they do not cover.
The accuracy on the main suite is a benchmark (benchmarks/estimate_accuracy.py), not a test."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest

from helpers import tiny_sets
from harness.records.calibration import Calibration, find, read_calibrations, write_calibration
from harness.records.sidefiles import EVAL, STEP_COLUMNS, TRAIN, read_steps
from harness.stats import cost


def linear_cost(b, l):
    return 0.01 + 2e-5 * np.asarray(b) * l + 3e-7 * np.asarray(b) * np.asarray(l) ** 2


SHAPES = [(b, l) for b in (8, 16) for l in (4, 9, 16, 30, 64, 100)]


# ------------------------------------------------------------------------------ the fit


def test_a_fit_recovers_a_known_cost_and_predicts_unmeasured_shapes_exactly():
    fit = cost.fit([(b, l, float(linear_cost(b, l))) for b, l in SHAPES for _ in range(3)])
    assert "B*L^2" in fit.terms and fit.systematic < 1e-6 and fit.noise == 0
    for b, l in [(5, 7), (12, 50), (16, 128)]:
        assert fit.predict(b, l) == pytest.approx(linear_cost(b, l), rel=1e-6)
    assert fit.batch_sizes == (8, 16) and fit.lengths == (4, 100)


def test_a_cost_without_a_quadratic_part_gets_the_simpler_form():
    fit = cost.fit([(16, l, 0.02 + 1e-4 * 16 * l) for l in (8, 16, 32, 64, 128)])
    assert fit.terms == ("1", "B*L")
    assert fit.coef == pytest.approx((0.02, 1e-4), rel=1e-6)


def test_the_correction_makes_every_measured_shape_exact_and_its_error_is_leave_one_out():
    rng = np.random.default_rng(0)
    medians = {(16, l): float(linear_cost(16, l)) * (1 + rng.uniform(-0.1, 0.1)) for l in (8, 16, 32, 64, 128)}
    fit = cost.fit([(b, l, v) for (b, l), v in medians.items()])
    for (b, l), v in medians.items():
        assert fit.predict(b, l) == pytest.approx(v, rel=1e-9)
    # the error it reports is what each shape's neighbours predict for it
    ratios = {l: v / float(fit.curve(16, l)) for (_, l), v in medians.items()}
    ls = sorted(ratios)
    errors = [np.interp(l, [x for x in ls if x != l], [ratios[x] for x in ls if x != l]) / ratios[l] - 1 for l in ls]
    assert fit.systematic == pytest.approx(math.sqrt(np.mean(np.square(errors))), rel=1e-9)


def test_a_sum_has_the_noise_shrunk_by_its_steps_and_the_systematic_error_whole():
    fit = cost.CostFit(terms=("1",), coef=(1.0,), systematic=0.05, noise=0.2, shapes=3, samples=9,
                       batch_sizes=(1, 1), lengths=(1, 1))
    value, low, high = fit.total(np.ones((100, 2)))
    assert value == 100
    assert high - value == pytest.approx(cost.Z95 * math.sqrt(0.05 ** 2 + 0.2 ** 2 / 100) * 100)
    assert low == pytest.approx(2 * value - high)


def test_a_sum_is_the_medians_times_the_samples_mean_ratio_to_their_median():
    """A rare slow step (here one in four, 1.4 times its shape's usual) is in an epoch's sum
    but not in its shape's median: the sum is the medians times the pooled mean ratio."""
    samples = [(8, l, v * float(linear_cost(8, l))) for l in (4, 16, 64, 100) for v in (1.0, 1.0, 1.0, 1.4)]
    fit = cost.fit(samples)
    assert fit.mean_ratio == pytest.approx(1.1)
    assert fit.predict(8, 16) == pytest.approx(linear_cost(8, 16), rel=1e-9)  # one step: the median
    shapes = np.array([(8, 16)] * 10 + [(8, 64)] * 5)
    value, _, _ = fit.total(shapes)
    assert value == pytest.approx(1.1 * (10 * linear_cost(8, 16) + 5 * linear_cost(8, 64)), rel=1e-9)
    assert cost.CostFit.from_dict(fit.to_dict()) == fit
    # another process's burst: a step counts at most twice its shape's median
    burst = cost.fit([(8, l, v * float(linear_cost(8, l))) for l in (4, 16, 64) for v in (1.0, 1.0, 4.0)])
    assert burst.mean_ratio == pytest.approx((1.0 + 1.0 + 2.0) / 3)
    # a calibration file written before the ratio existed reads as 1
    assert cost.CostFit.from_dict({k: v for k, v in fit.to_dict().items() if k != "mean_ratio"}).mean_ratio == 1.0


def test_the_probe_times_each_context_from_the_smallest_in_passes_after_a_warm_up_pass(tiny_runs, monkeypatch):
    """A slow minute of a drifting machine falls on every shape alike, not on one: pass after
    pass of one step per shape; the warm-up pass, smallest first, reads each shape's peak.
    Each context is timed after its largest shape and nothing larger: the smallest context
    first, and a shape no larger than one read before is not read again."""
    from harness.loop import probe as probe_module

    taken = []
    real_step = probe_module._step

    def recorded(p, kind, batch):
        taken.append((kind, *batch.input_ids.shape))
        return real_step(p, kind, batch)

    monkeypatch.setattr(probe_module, "SETTLE_SECONDS", 0.0)
    monkeypatch.setattr(probe_module, "_step", recorded)
    suite, _ = tiny_runs
    run = _resolved(suite)[0]
    big, small = [(8, 24), (8, 6), (4, 12)], [(8, 3), (8, 10)]
    evaluation = [(16, 10), (16, 30), (16, 20)]
    result = probe_module.probe(run, [big, small], evaluation, repeats=3, eval_repeats=2)
    ordered_small, ordered_big = [(8, 3), (8, 10)], [(8, 6), (4, 12), (8, 24)]  # by B·L²: 72, 800; 288, 576, 4608
    ordered_eval = [(16, 10), (16, 20), (16, 30)]
    assert result.contexts == [(8, 10), (8, 24)]
    assert taken == ([(TRAIN, *s) for s in ordered_small] * 4 + [(TRAIN, *s) for s in ordered_big] * 4
                     + [(EVAL, *s) for s in ordered_eval] * 3)
    assert [tuple(m[:3]) for m in result.memory] == ([(TRAIN, *s) for s in [*ordered_small, (8, 24)]]
                                                     + [(EVAL, *s) for s in ordered_eval])
    assert [tuple(s[:3]) + (s[4],) for s in result.steps] == (
        [(TRAIN, *s, 0) for s in ordered_small] * 3 + [(TRAIN, *s, 1) for s in ordered_big] * 3
        + [(EVAL, *s, -1) for s in ordered_eval] * 2)
    assert all(s[3] > 0 for s in result.steps)


def test_a_fit_needs_three_shapes():
    with pytest.raises(ValueError, match="at least 3 distinct shapes"):
        cost.fit([(8, 16, 0.1), (8, 32, 0.2), (8, 32, 0.21)])


# ---------------------------------------------------------------- shapes and predictions


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """dynamic and bucketed (random orders, padding per batch) at MAX_LEN 32, two epochs, with a test split."""
    from harness.cli import main

    root = tmp_path_factory.mktemp("estimate")
    suite = root / "suite.yaml"
    suite.write_text("name: est\ndefaults: {dataset: cola, test_split: test}\n"
                     "matrix: {strategy: [dynamic, bucketed]}\n", encoding="utf-8")
    out = root / "out"
    assert main(["run", str(suite), "--out", str(out), "--no-progress", "--no-plot",
                 *tiny_sets(epochs=2, batch_size=8, eval_batch_size=16)]) == 0
    return suite, out


def _resolved(suite: Path, **sets):
    from harness.config.resolve import resolve
    from harness.config.suite import load_suite, parse_set
    from harness.registry import load_registry

    overrides = parse_set(tiny_sets(epochs=2, batch_size=8, eval_batch_size=16, **sets)[1::2])
    return resolve(load_suite(suite), load_registry([], base_dir=suite.parent), overrides)


def _records(out: Path) -> dict[str, dict]:
    lines = (out / "results.jsonl").read_text(encoding="utf-8").splitlines()
    return {r["run_id"]: r for r in map(json.loads, lines)}


def test_a_runs_shapes_are_exactly_the_steps_training_took(tiny_runs):
    from harness.estimate import Lengths, run_shapes

    suite, out = tiny_runs
    records, lengths = _records(out), Lengths()
    for run in _resolved(suite):
        shapes = run_shapes(run, lengths)
        steps = read_steps(out / records[run.run_id]["side_files"]["steps"])
        col = {name: steps[:, i] for i, name in enumerate(STEP_COLUMNS)}
        for epoch, predicted in enumerate(shapes.epochs, start=1):
            took = (col["kind"] == TRAIN) & (col["epoch"] == epoch)
            assert predicted.tolist() == np.c_[col["batch_size"][took], col["padded_len"][took]].astype(int).tolist()
            assert shapes.real_tokens[epoch - 1] == records[run.run_id]["epochs"][epoch - 1]["real_tokens"]
        evaluated = (col["kind"] == EVAL) & (col["epoch"] == 1)
        assert shapes.evaluation.tolist() == np.c_[col["batch_size"][evaluated],
                                                   col["padded_len"][evaluated]].astype(int).tolist()
        assert shapes.test[:, 0].sum() == records[run.run_id]["data"]["test"]["examples"]


def _synthetic(run, memory: bool = True) -> Calibration:
    """A calibration whose curves are known functions and hold no correction: predictions are exact sums."""
    from harness.estimate import config_key, machine_key

    def curve(a, b, c):
        return cost.CostFit(terms=("1", "B*L", "B*L^2"), coef=(a, b, c), systematic=0.0, noise=0.0, shapes=3,
                            samples=3, batch_sizes=(1, 64), lengths=(2, 64))

    return Calibration(machine=machine_key(run), config=config_key(run), train=curve(0.01, 2e-5, 3e-7),
                       eval=curve(0.002, 5e-6, 1e-8), memory=curve(1e8, 1e4, 10.0) if memory else None,
                       memory_kind="rss", setup_seconds=1.5, parameters=1, measured_at="2026-12-03T00:00:00Z",
                       source="synthetic")


def test_under_a_synthetic_cost_the_prediction_is_the_sum_of_the_steps_training_took(tiny_runs):
    from harness.estimate import Lengths, estimate_run, run_shapes

    suite, out = tiny_runs
    records, lengths = _records(out), Lengths()
    for run in _resolved(suite):
        calibration = _synthetic(run)
        est = estimate_run(run_shapes(run, lengths), calibration, limit=10**9)
        steps = read_steps(out / records[run.run_id]["side_files"]["steps"])
        train, evaluation = steps[steps[:, 0] == TRAIN], steps[(steps[:, 0] == EVAL) & (steps[:, 1] == 1)]
        price = lambda f, rows: float(sum(f(b, l) for b, l in zip(rows[:, 3], rows[:, 4])))  # noqa: E731
        train_f = lambda b, l: 0.01 + 2e-5 * b * l + 3e-7 * b * l * l  # noqa: E731
        eval_f = lambda b, l: 0.002 + 5e-6 * b * l + 1e-8 * b * l * l  # noqa: E731
        assert est.train_seconds[0] == pytest.approx(price(train_f, train), rel=1e-12)
        assert est.epoch_seconds == pytest.approx((price(train_f, train) / 2,) * 3, rel=1e-12)  # no error: no interval
        assert est.eval_seconds[0] == pytest.approx(price(eval_f, evaluation), rel=1e-12)
        assert est.tokens_per_second == pytest.approx(train[:, 5].sum() / price(train_f, train), rel=1e-12)
        assert est.peak_memory[0] == pytest.approx(max(1e8 + 1e4 * b * l + 10.0 * b * l * l
                                                       for b, l in zip(train[:, 3], train[:, 4])), rel=1e-12)
        warm = train[:1]  # warmup_batches: 1, the first batch of epoch 1
        assert est.run_seconds == pytest.approx(1.5 + price(train_f, warm) + price(train_f, train)
                                                + 2 * price(eval_f, evaluation) + est.test_seconds, rel=1e-12)
        assert est.fits is True and est.extrapolated == []
        assert estimate_run(run_shapes(run, lengths), calibration, limit=10**6).fits is False


def test_a_run_is_priced_by_its_own_context_and_pays_the_first_epochs_extra_seconds_once(tiny_runs):
    """The curve of the context that holds the run's largest shape (its full batch at its
    longest length), not the fallback; the first epoch's extra seconds in the run's sum and,
    shared by its epochs, in the mean epoch."""
    from harness.estimate import Lengths, context_of, estimate_run, run_shapes

    suite, out = tiny_runs
    records, lengths = _records(out), Lengths()
    for run in _resolved(suite):
        shapes = run_shapes(run, lengths)
        calibration = _synthetic(run)
        own = cost.CostFit(terms=("1", "B*L"), coef=(0.5, 1e-3), systematic=0.0, noise=0.0, shapes=3, samples=3,
                           batch_sizes=(1, 64), lengths=(2, 64))
        b, longest = context_of(shapes)
        train = read_steps(out / records[run.run_id]["side_files"]["steps"])
        train = train[train[:, 0] == TRAIN]
        assert (b, longest) == (8, int(train[:, 4].max()))
        calibration.contexts = [((b, longest - 1), calibration.train), ((b, longest), own),
                                ((b, 64), calibration.train)]
        calibration.first_epoch_seconds = 2.0
        est = estimate_run(shapes, calibration)
        price = float(sum(0.5 + 1e-3 * b * l for b, l in zip(train[:, 3], train[:, 4])))
        assert est.train_seconds[0] == pytest.approx(price + 2.0, rel=1e-12)
        assert est.epoch_seconds[0] == pytest.approx((price + 2.0) / 2, rel=1e-12)


def test_each_context_gets_its_own_curve_and_a_run_gets_the_shortest_that_holds_it(tmp_path):
    from harness.estimate import fit_calibration

    dear = lambda b, l: 1.3 * linear_cost(b, l)  # noqa: E731  (short steps where nothing longer ran before)
    steps = ([(TRAIN, b, l, dear(b, l), 0) for b, l in SHAPES if l <= 30]
             + [(TRAIN, b, l, linear_cost(b, l), 1) for b, l in SHAPES]
             + [(EVAL, b, l, linear_cost(b, l) / 4, -1) for b, l in SHAPES])
    made = fit_calibration({"device": "cpu"}, {"model": "m"}, steps, [], memory_kind="", setup_seconds=0.0,
                           parameters=0, source="test", contexts=[(16, 30), (16, 100)], pooled=1,
                           first_epoch_seconds=1.25)
    path = tmp_path / "cal.json"
    write_calibration(path, made)
    (calibration,) = read_calibrations(path)
    assert calibration.to_dict() == made.to_dict() and calibration.first_epoch_seconds == 1.25
    assert [largest for largest, _ in calibration.contexts] == [(16, 30), (16, 100)]
    for b, l in SHAPES:
        if l <= 30:
            assert calibration.train_for((16, 20)).predict(b, l) == pytest.approx(dear(b, l), rel=1e-6)
            assert calibration.train_for((16, 30)).predict(b, l) == pytest.approx(dear(b, l), rel=1e-6)
        assert calibration.train_for((16, 64)).predict(b, l) == pytest.approx(linear_cost(b, l), rel=1e-6)
    # no context of its batch size, or none long enough: the fallback, the largest context's curve
    assert calibration.train_for((8, 20)) is calibration.train and calibration.train_for((16, 128)) is calibration.train
    assert calibration.train.predict(16, 9) == pytest.approx(linear_cost(16, 9), rel=1e-6)


def test_shapes_outside_the_calibrated_range_are_said(tiny_runs):
    from harness.estimate import Lengths, estimate_run, run_shapes

    suite, _ = tiny_runs
    run = _resolved(suite)[0]
    narrow = _synthetic(run)
    narrow.train.lengths = (2, 8)
    est = estimate_run(run_shapes(run, Lengths()), narrow)
    assert len(est.extrapolated) == 1 and est.extrapolated[0].startswith("training L ")
    assert est.extrapolated[0].endswith("(calibrated 2-8)")


# -------------------------------------------------------------------- calibration files


def test_a_calibration_file_round_trips_and_keeps_one_calibration_per_key(tiny_runs, tmp_path):
    suite, _ = tiny_runs
    run = _resolved(suite)[0]
    first = _synthetic(run)
    path = tmp_path / "cal.json"
    write_calibration(path, first)
    (back,) = read_calibrations(path)
    assert back.to_dict() == first.to_dict()
    other = _synthetic(run)
    other.config = {**other.config, "precision": "fp16"}
    write_calibration(path, other)
    write_calibration(path, _synthetic(run, memory=False))  # the same key as the first: replaces it
    kept = read_calibrations(path)
    assert [c.config["precision"] for c in kept] == ["fp16", first.config["precision"]]
    assert kept[1].memory is None
    assert find(kept, first.machine, first.config) is kept[1]


def test_estimate_without_probing_refuses_another_configuration_in_one_line(tiny_runs, tmp_path, cli):
    suite, _ = tiny_runs
    run = _resolved(suite)[0]
    other = _synthetic(run)
    other.config = {**other.config, "precision": "fp16"}
    path = tmp_path / "cal.json"
    write_calibration(path, other)
    code, out, err = cli("estimate", suite, *tiny_sets(epochs=2, batch_size=8, eval_batch_size=16),
                         "--calibration", path, "--no-probe")
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(lines) == 1, err
    assert f"{path}: no calibration for the runs of" in lines[0]
    assert f"the nearest was measured with precision fp16 (this run: {run.config.precision})" in lines[0]


def test_a_carried_calibration_of_another_device_is_refused_in_one_line(tiny_runs, tmp_path, cli):
    suite, _ = tiny_runs
    gpu = _synthetic(_resolved(suite)[0])
    gpu.machine = {**gpu.machine, "device": "cuda", "device_name": "NVIDIA H100 80GB HBM3", "threads": None}
    path = tmp_path / "h100.json"
    write_calibration(path, gpu)
    code, _, err = cli("estimate", suite, *tiny_sets(epochs=2, batch_size=8, eval_batch_size=16),
                       "--calibration", path, "--no-probe")
    assert code == 2 and "the nearest was measured with device cuda (this run: cpu)" in err


def test_a_carried_calibration_of_another_machine_predicts_that_machine(tiny_runs, tmp_path, cli):
    suite, _ = tiny_runs
    runs = _resolved(suite)
    path = tmp_path / "elsewhere.json"
    for run in runs[:1]:
        away = _synthetic(run)
        away.machine = {**away.machine, "device_name": "Another CPU", "threads": 64}
        write_calibration(path, away)
    code, out, err = cli("estimate", suite, *tiny_sets(epochs=2, batch_size=8, eval_batch_size=16),
                         "--calibration", path, "--no-probe", "--format", "csv")
    assert code == 0, err
    assert "cpu 'Another CPU' x64 threads" in err and "another machine: predicted for it" in err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 2 and all(float(r["epoch_seconds"]) > 0 for r in rows)


# ------------------------------------------------------------------------- the commands


def test_estimate_probes_once_keeps_the_calibration_and_reuses_it(tiny_runs, cli, tmp_path):
    suite, _ = tiny_runs
    sets = tiny_sets(epochs=2, batch_size=8, eval_batch_size=16)
    code, out, err = cli("estimate", suite, *sets, "--price", "3.6", "--plot", tmp_path / "est.png")
    assert code == 0, err
    assert "calibrated 2 runs by a" in err and "probe on cpu" in err
    assert "cost/epoch" in out and "cost/run" in out and "the suite: 2 runs, predicted" in err
    assert (tmp_path / "est.png").stat().st_size > 10_000
    (calibration,) = read_calibrations(tmp_path / "cache" / "calibrations.json")
    assert calibration.source == "probe" and calibration.train.shapes >= 3 and calibration.memory is not None
    code, out, err = cli("estimate", suite, *sets, "--format", "csv", "--no-probe")
    assert code == 0 and "calibrated" not in err, err
    assert "(probe, " in err and "; this machine)" in err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["strategy"] for r in rows] == ["dynamic", "bucketed"]
    for r in rows:
        assert float(r["epoch_seconds_low"]) <= float(r["epoch_seconds"]) <= float(r["epoch_seconds_high"])
        assert r["fits"] == "True" and int(r["peak_memory_bytes"]) > 0


def test_run_estimate_stores_each_prediction_and_the_tables_show_it_beside_the_measurement(tiny_runs, cli, tmp_path):
    suite, _ = tiny_runs
    out_dir = tmp_path / "out"
    code, out, err = cli("run", suite, *tiny_sets(epochs=2, batch_size=8, eval_batch_size=16), "--estimate",
                         "--out", out_dir, "--no-progress", "--no-plot")
    assert code == 0, err
    assert "estimate: the suite's 2 runs predicted to take" in err
    assert "predicted s" in out and "error" in out
    for record in _records(out_dir).values():
        predicted = record["estimate"]
        assert predicted["epoch_seconds_low"] <= predicted["epoch_seconds"] <= predicted["epoch_seconds_high"]
        assert predicted["calibration"].startswith("cpu ") and predicted["peak_memory_bytes"] > 0
    code, out, _ = cli("report", out_dir, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert all(float(r["predicted_epoch_seconds"]) > 0 for r in rows)


def test_calibrate_from_results_refuses_in_one_line_steps_of_too_few_shapes(tiny_runs, cli, tmp_path):
    """The tiny runs evaluate 32 examples in batches of 16: two evaluation shapes, too few for a curve."""
    suite, out = tiny_runs
    path = tmp_path / "from-results.json"
    code, _, err = cli("calibrate", suite, "--from", out, "--calibration", path)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert lines[0] == (f"error: results {out}: cannot fit the evaluation steps' cost: a fit needs at least 3 "
                        "distinct shapes, got 2")
    assert not path.exists()


def test_the_memory_curve_keeps_the_attentions_quadratic_term_where_a_line_fits_the_short_shapes_best():
    """A probe's peaks (MiniLM, bf16, two Zen 5 cores, MB): a line wins the leave-one-out
    among the short shapes and predicted 2361 MB for 20 x 256, where runs peaked at 2934-3011."""
    from harness.estimate import fit_calibration

    peaks = [(6, 826), (8, 841), (12, 853), (16, 875), (23, 893), (32, 942), (35, 983), (64, 1147), (69, 1188),
             (128, 1578)]
    memory = [(TRAIN, 20, length, mb * 2**20) for length, mb in peaks]
    assert cost.fit([(b, l, v) for _, b, l, v in memory]).terms == ("1", "B*L")  # what the choice alone takes
    steps = [(k, b, l, linear_cost(b, l), 0 if k == TRAIN else -1) for k in (TRAIN, EVAL) for b, l in SHAPES]
    calibration = fit_calibration({"device": "cpu"}, {"model": "m"}, steps, memory, memory_kind="rss",
                                  setup_seconds=0.0, parameters=0, source="test", contexts=[(16, 100)])
    assert "B*L^2" in calibration.memory.terms
    assert 2650 < calibration.memory.predict(20, 256) / 2**20 < 2800


def test_calibrate_from_results_fits_each_runs_context_and_the_first_epochs_extra_seconds(tmp_path):
    """Each run's steps were timed after its own largest shape: a context per run (one that
    has too few shapes for a curve, fixed's single one, leaves its runs to the pooled curve);
    the first epoch's extra seconds: the median over the runs of their first epoch's steps
    beyond the mean of the others'."""
    from harness.cli import main
    from harness.estimate import calibrate_from_results

    suite = tmp_path / "suite.yaml"
    suite.write_text("name: ctx\ndefaults: {dataset: cola}\nmatrix: {strategy: [fixed, dynamic]}\n", encoding="utf-8")
    out = tmp_path / "out"
    assert main(["run", str(suite), "--out", str(out), "--no-progress", "--no-plot",
                 *tiny_sets(epochs=3, batch_size=8, eval_batch_size=4)]) == 0
    (calibration,) = calibrate_from_results(out)
    extra, largest, trained = [], {}, 0
    for record in _records(out).values():
        steps = read_steps(out / record["side_files"]["steps"])
        train = steps[steps[:, 0] == TRAIN]
        trained += len(train)
        sums = [train[train[:, 1] == e, 6].sum() for e in (1, 2, 3)]
        extra.append(max(0.0, sums[0] - (sums[1] + sums[2]) / 2))
        largest[record["config"]["strategy"]["name"]] = (8, int(train[:, 4].max()))
    assert calibration.first_epoch_seconds == pytest.approx(float(np.median(extra)), rel=1e-9)
    assert largest["fixed"] == (8, 32) and largest["dynamic"][1] < 32
    assert [c for c, _ in calibration.contexts] == [largest["dynamic"]]  # fixed's one shape: no curve of its own
    assert calibration.train_for(largest["dynamic"]) is calibration.contexts[0][1]
    assert calibration.train_for(largest["fixed"]) is calibration.train
    assert calibration.train.samples == trained  # the pooled curve: every run's training steps


def test_a_size_is_read_in_decimal_and_binary_units():
    from harness.cli import parse_size
    from harness.errors import HarnessError

    assert parse_size("800MB") == 800 * 10**6 and parse_size("16GiB") == 16 * 2**30 and parse_size("2e9") == 2 * 10**9
    with pytest.raises(HarnessError, match="--memory-limit lots: expected a size"):
        parse_size("lots")


def test_the_memory_limit_of_a_cpu_is_at_most_its_ram():
    import torch

    from harness.loop.measure import memory_limit

    total = next(int(line.split()[1]) * 1024 for line in Path("/proc/meminfo").read_text().splitlines()
                 if line.startswith("MemTotal:"))
    assert 0 < memory_limit(torch.device("cpu")) <= total
