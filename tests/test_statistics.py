"""The statistics behind the tables and `harness compare`: Student's t intervals over seeds,
Welch's t-test, and the seeded bootstrap interval of a run's metric over the evaluation set."""

import math

import numpy as np
import pytest
from scipy import stats

from harness.stats import metrics
from harness.stats.intervals import estimate, welch_p

NAMES = ["accuracy", "mcc", "f1", "macro_f1"]


def noisy_predictions(rng, labels, classes, accuracy):
    """Predictions right with probability ``accuracy``, else a random class."""
    wrong = rng.integers(0, classes, len(labels))
    return np.where(rng.random(len(labels)) < accuracy, labels, wrong)


# ------------------------------------------------------------------ Student's t, Welch


def test_the_interval_over_seeds_is_students_t_with_n_minus_1_degrees_of_freedom():
    values = [10.0, 10.3, 9.8]
    e = estimate(values)
    sem = np.std(values, ddof=1) / math.sqrt(3)
    low, high = stats.t.interval(0.95, 2, loc=np.mean(values), scale=sem)
    assert e.n == 3 and e.mean == pytest.approx(np.mean(values)) and e.std == pytest.approx(np.std(values, ddof=1))
    assert (e.low, e.high) == pytest.approx((low, high))
    assert e.half_width == pytest.approx(4.302653 * sem, rel=1e-6)


def test_one_value_has_no_interval_and_missing_values_are_skipped():
    assert estimate([2.0, None]) == estimate([2.0])
    one = estimate([2.0])
    assert one.mean == 2.0 and one.n == 1 and one.half_width is None and one.low is None
    assert estimate([]).mean is None and estimate([None]).n == 0


def test_welch_p_is_scipys_unequal_variance_test():
    a, b = [10.0, 10.3, 9.8], [13.1, 13.5, 12.6]
    assert welch_p(a, b) == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)
    assert welch_p(a, b) < 0.01
    assert welch_p([1.0], b) is None and welch_p(a, [2.0]) is None
    # no spread on either side: scipy says NaN; the answer is plain
    assert welch_p([2.0, 2.0], [2.0, 2.0]) == 1.0 and welch_p([2.0, 2.0], [3.0, 3.0]) == 0.0


# --------------------------------------------------------------------------- bootstrap


def scikit_learn(names, labels, predictions) -> dict[str, float]:
    """The reference: scikit-learn's implementations, as GLUE reports each metric."""
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    reference = {
        "accuracy": lambda y, p: accuracy_score(y, p),
        "mcc": lambda y, p: matthews_corrcoef(y, p),
        "f1": lambda y, p: f1_score(y, p, pos_label=1, average="binary", zero_division=0),
        "macro_f1": lambda y, p: f1_score(y, p, average="macro", zero_division=0),
    }
    return {name: float(reference[name](labels, predictions)) for name in names}


@pytest.mark.parametrize("classes", [2, 3])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_confusion_matrix_metrics_equal_scikit_learns(classes, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, 300)
    predictions = noisy_predictions(rng, labels, classes, 0.6)
    names = NAMES if classes == 2 else ["accuracy", "mcc", "macro_f1"]  # f1 is binary
    ours = metrics.compute(names, labels, predictions)
    assert ours == pytest.approx(scikit_learn(names, labels, predictions), abs=1e-12)


def test_degenerate_predictions_match_scikit_learn_too():
    labels = np.array([0, 1, 0, 1, 1, 0])
    for predictions in (np.zeros(6, int), np.ones(6, int), 1 - labels, labels):
        ours = metrics.compute(NAMES, labels, predictions)
        assert ours == pytest.approx(scikit_learn(NAMES, labels, predictions), abs=1e-12)


def test_the_interval_holds_the_estimate_is_seeded_and_narrows_with_more_examples():
    rng = np.random.default_rng(0)
    widths = []
    for n in (200, 3000):
        labels = rng.integers(0, 2, n)
        predictions = noisy_predictions(rng, labels, 2, 0.7)
        point = metrics.compute(NAMES, labels, predictions)
        ci = metrics.bootstrap_ci(NAMES, labels, predictions, seed=7)
        assert set(ci) == set(NAMES)
        for name in NAMES:
            low, high = ci[name]
            assert low < point[name] < high, (name, n, ci[name], point[name])
        assert ci == metrics.bootstrap_ci(NAMES, labels, predictions, seed=7)  # seeded: reproducible
        assert ci != metrics.bootstrap_ci(NAMES, labels, predictions, seed=8)
        widths.append({name: high - low for name, (low, high) in ci.items()})
    assert all(widths[1][name] < widths[0][name] / 2 for name in NAMES), widths


def test_the_bootstrap_is_a_percentile_interval_of_resampled_examples():
    """Against a plain loop over resamples with scikit-learn (few resamples: it is slow)."""
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, 120)
    predictions = noisy_predictions(rng, labels, 3, 0.5)
    ci = metrics.bootstrap_ci(["mcc"], labels, predictions, seed=5, resamples=50, confidence=0.9)
    draw = np.random.default_rng(5).integers(0, len(labels), size=(50, len(labels)))
    values = [scikit_learn(["mcc"], labels[i], predictions[i])["mcc"] for i in draw]
    assert ci["mcc"] == pytest.approx(tuple(np.percentile(values, [5, 95])))


def test_a_wider_confidence_gives_a_wider_interval_and_chunks_change_nothing(monkeypatch):
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 500)
    predictions = noisy_predictions(rng, labels, 2, 0.7)
    ci90 = metrics.bootstrap_ci(["accuracy"], labels, predictions, seed=1, confidence=0.9)["accuracy"]
    ci99 = metrics.bootstrap_ci(["accuracy"], labels, predictions, seed=1, confidence=0.99)["accuracy"]
    assert ci99[0] < ci90[0] and ci90[1] < ci99[1]
    whole = metrics.bootstrap_ci(NAMES, labels, predictions, seed=4, resamples=30)
    monkeypatch.setattr(metrics, "_CHUNK_ELEMENTS", 7 * 500)  # 7 resamples per bincount
    assert metrics.bootstrap_ci(NAMES, labels, predictions, seed=4, resamples=30) == whole


def test_unknown_metric_names_are_left_out_and_mismatched_lengths_refused():
    labels = np.array([0, 1, 1, 0])
    assert set(metrics.bootstrap_ci(["mcc", "bleu"], labels, labels, seed=0)) == {"mcc"}
    with pytest.raises(ValueError, match="4 labels but 3 predictions"):
        metrics.bootstrap_ci(["mcc"], labels, labels[:3], seed=0)
