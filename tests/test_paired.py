"""Paired comparisons (harness.stats.paired): McNemar's exact test and the paired bootstrap on
hand-built predictions, held to statsmodels and to a plain reference computation with
scikit-learn's metrics; the two-level bootstrap over seeds; the step-level time test."""

import math

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, matthews_corrcoef
from statsmodels.stats.contingency_tables import mcnemar

from harness.stats.paired import NOISY_WIDTH, mcnemar_exact, paired_difference, step_ratio


def two_models(n=300, seed=0):
    """Labels and two models' predictions that differ on a known set of examples: BASE right on
    70% of them; NEW fixes 30 of BASE's mistakes and makes 12 of its own."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    base = labels.copy()
    wrong = rng.choice(n, int(0.3 * n), replace=False)
    base[wrong] = 1 - base[wrong]
    new = base.copy()
    fixed, broken = wrong[:30], rng.choice(np.setdiff1d(np.arange(n), wrong), 12, replace=False)
    new[fixed] = labels[fixed]
    new[broken] = 1 - labels[broken]
    return labels, base, new, len(fixed), len(broken)


def test_mcnemar_exact_p_is_statsmodels_on_the_examples_one_model_got_right():
    labels, base, new, fixed, broken = two_models()
    p, only_base, only_new = mcnemar_exact(labels, base, new)
    assert (only_base, only_new) == (broken, fixed)
    table = [[np.sum((base == labels) & (new == labels)), only_base],
             [only_new, np.sum((base != labels) & (new != labels))]]
    assert p == pytest.approx(mcnemar(table, exact=True).pvalue, rel=1e-12)
    assert p < 0.05  # 30 against 12: NEW is better
    assert paired_difference("accuracy", labels, [base], [new]).mcnemar_p == pytest.approx(p)


def reference_paired_bootstrap(score, labels, base, new, seed, resamples):
    """The paired bootstrap as a textbook loop: the same resampled examples for both models
    (numpy's default_rng(seed), one row of integers per resample)."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(labels), size=(resamples, len(labels)))
    diffs = np.array([score(labels[i], new[i]) - score(labels[i], base[i]) for i in picks])
    low, high = np.percentile(diffs, [2.5, 97.5])
    p = min(1.0, 2 * min(np.mean(diffs <= 0), np.mean(diffs >= 0)))
    return low, high, p


@pytest.mark.parametrize("metric, score", [("accuracy", accuracy_score), ("mcc", matthews_corrcoef)])
def test_the_paired_bootstrap_interval_is_the_reference_computation(metric, score):
    labels, base, new, _, _ = two_models()
    d = paired_difference(metric, labels, [base], [new], seed=7, resamples=500)
    low, high, p = reference_paired_bootstrap(score, labels, base, new, seed=7, resamples=500)
    assert d.kind == "examples" and d.examples == len(labels) and d.seeds == (1, 1)
    assert d.delta == pytest.approx(score(labels, new) - score(labels, base))
    assert (d.low, d.high) == pytest.approx((low, high), abs=1e-12)
    assert d.p == pytest.approx(p)
    assert d.verdict(0.05) == "better" and d.low > 0
    # paired is sharper than two independent evaluations of the same models
    assert d.high - d.low < d.independent[1] - d.independent[0]


def test_predictions_that_agree_everywhere_differ_by_zero_with_a_zero_width_interval():
    labels, base, _, _, _ = two_models()
    for metric in ("accuracy", "mcc", "f1", "macro_f1"):
        d = paired_difference(metric, labels, [base], [base.copy()])
        assert (d.delta, d.low, d.high, d.p) == (0.0, 0.0, 0.0, 1.0)
        assert d.verdict(0.05) == "cannot tell"
    assert mcnemar_exact(labels, base, base)[0] == 1.0


def seeds_of(labels, accuracies, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for acc in accuracies:
        p = labels.copy()
        flip = rng.random(len(labels)) > acc
        p[flip] = 1 - p[flip]
        out.append(p)
    return out


def test_the_two_level_interval_holds_the_seed_noise_one_seed_cannot_see():
    labels = np.random.default_rng(1).integers(0, 2, 500)
    base = seeds_of(labels, [0.70, 0.78, 0.62], seed=2)  # seeds that disagree a lot
    new = seeds_of(labels, [0.74, 0.66, 0.80], seed=3)
    two = paired_difference("accuracy", labels, base, new, seed=0)
    one = paired_difference("accuracy", labels, base[:1], new[:1], seed=0)
    assert two.kind == "two-level" and two.seeds == (3, 3) and two.mcnemar_p is None
    assert two.delta == pytest.approx(np.mean([np.mean(p == labels) for p in new])
                                      - np.mean([np.mean(p == labels) for p in base]))
    assert two.high - two.low > one.high - one.low
    # the seeds dominate here; the examples-only interval (seeds held) is the narrower one
    assert two.dominant == "seeds" and two.seed_share > 0.5
    assert two.examples_only[1] - two.examples_only[0] < two.high - two.low
    # seeds that agree leave the examples to dominate
    calm = paired_difference("accuracy", labels, seeds_of(labels, [0.7, 0.7, 0.7], 4), seeds_of(labels, [0.7] * 3, 5))
    assert calm.dominant == "examples"


def steps_table(seconds, shapes):
    """A steps side file's table: training steps (kind 0) of epoch 1 with the given shapes."""
    return np.array([[0, 1, i, b, l, b * l, s] for i, (s, (b, l)) in enumerate(zip(seconds, shapes))], dtype=float)


def test_a_ten_percent_slower_run_is_significant_from_one_run_a_side():
    rng = np.random.default_rng(0)
    shapes = [(16, int(l)) for l in rng.choice([32, 64, 128], 120)]
    cost = np.array([l / 1000 for _, l in shapes])  # a step's seconds grow with its padded length
    base = steps_table(cost * rng.lognormal(0, 0.03, len(cost)), shapes)
    slow = steps_table(1.1 * cost * rng.lognormal(0, 0.03, len(cost)), shapes)
    same = steps_table(cost * rng.lognormal(0, 0.03, len(cost)), shapes)
    r = step_ratio(base, slow)
    assert r.matched == 120 and r.noisy is None and r.p < 1e-6 and r.low > 1.05
    assert r.ratio == pytest.approx(1.1, abs=0.02)
    within = step_ratio(base, same)
    assert within.noisy is None and within.low < 1 < within.high and within.ratio == pytest.approx(1.0, abs=0.02)


def test_steps_are_matched_by_shape_and_too_noisy_steps_are_said_so():
    rng = np.random.default_rng(1)
    shapes = [(16, 32), (16, 64)] * 30
    base = steps_table([0.01 if l == 32 else 0.02 for _, l in shapes], shapes)
    # the other run saw the same shapes in another order, with a busy machine's noise
    order = rng.permutation(len(shapes))
    noisy_shapes = [shapes[i] for i in order]
    noisy = steps_table([(0.01 if l == 32 else 0.02) * rng.lognormal(0, 0.6) for _, l in noisy_shapes], noisy_shapes)
    r = step_ratio(base, noisy)
    assert r.matched == 60
    assert r.noisy and "too noisy to judge" in r.noisy and r.high / r.low - 1 > NOISY_WIDTH
    # too few steps, or none of the same shape: nothing to judge
    assert step_ratio(base[:5], base[:5]) is None
    assert step_ratio(base, steps_table([0.01] * 20, [(8, 16)] * 20)) is None


def test_a_bootstrap_is_seeded():
    labels, base, new, _, _ = two_models()
    a = paired_difference("mcc", labels, [base], [new], seed=3)
    assert a == paired_difference("mcc", labels, [base], [new], seed=3)
    assert math.isfinite(a.p)
