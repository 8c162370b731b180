"""Classification metrics by name, computed from confusion matrices.

A dataset lists the names it reports (``metrics = ("mcc", "accuracy")``); the first is
its main metric, the one tables sort and plots draw by. :data:`METRICS` names them:

- ``accuracy``;
- ``mcc``: Matthews correlation, multi-class as scikit-learn defines it; 0 for a constant
  prediction, as GLUE reports it for CoLA;
- ``f1``: F1 of the positive class (label 1), as GLUE reports it for MRPC; 0 when label 1
  never occurs;
- ``macro_f1``: the mean F1 over the classes that occur in labels or predictions.

One implementation serves both :func:`compute` (the whole evaluation set) and
:func:`bootstrap_ci` (a seeded 95% percentile-bootstrap interval, the record's
``metrics_ci95``): from confusion matrices, a thousand resamples take milliseconds. The
tests hold every value to scikit-learn's, the reference implementation; scikit-learn is
not imported here, which keeps it off the start-up of every run's process.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np


# ------------------------------------------------------------- bootstrap intervals
#
# The bootstrap resamples the evaluation examples, so each metric is computed a thousand
# times; from confusion matrices (one bincount for a whole chunk of resamples) that costs
# milliseconds, where scikit-learn called a thousand times would cost seconds.

#: resampled examples held in memory at once (resamples x examples)
_CHUNK_ELEMENTS = 4_000_000


def _encode(labels: np.ndarray, predictions: np.ndarray) -> tuple[np.ndarray, int, int | None]:
    """Each example as the index of its confusion-matrix cell (true x k + predicted), the
    number of classes k, and the index of label 1 (F1's positive class; None if absent)."""
    y, p = np.asarray(labels).ravel(), np.asarray(predictions).ravel()
    if y.shape != p.shape:
        raise ValueError(f"{len(y)} labels but {len(p)} predictions")
    classes, codes = np.unique(np.concatenate([y, p]), return_inverse=True)
    k = len(classes)
    positive = np.flatnonzero(classes == 1)
    return codes[: len(y)] * k + codes[len(y):], k, int(positive[0]) if len(positive) else None


def _confusion(cells: np.ndarray, k: int) -> np.ndarray:
    """Confusion matrices (rows: true class, columns: predicted) of each row of ``cells``."""
    cells = np.atleast_2d(cells)
    offsets = np.arange(len(cells))[:, None] * (k * k)
    counts = np.bincount((cells + offsets).ravel(), minlength=len(cells) * k * k)
    return counts.reshape(len(cells), k, k)


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num, den = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den != 0)


def _accuracy(cm: np.ndarray, positive: int | None) -> np.ndarray:
    return _safe_div(np.trace(cm, axis1=-2, axis2=-1), cm.sum(axis=(-2, -1)))


def _mcc(cm: np.ndarray, positive: int | None) -> np.ndarray:
    """Multi-class Matthews correlation as scikit-learn defines it (0 when a marginal is constant)."""
    cm = cm.astype(float)
    true, pred = cm.sum(axis=-1), cm.sum(axis=-2)
    correct, n = np.trace(cm, axis1=-2, axis2=-1), cm.sum(axis=(-2, -1))
    cov_tp = correct * n - (true * pred).sum(axis=-1)
    cov_pp = n * n - (pred * pred).sum(axis=-1)
    cov_tt = n * n - (true * true).sum(axis=-1)
    return _safe_div(cov_tp, np.sqrt(cov_tt * cov_pp))


def _class_f1(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-class F1 (0 where undefined) and whether the class occurs (as label or prediction)."""
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    support = cm.sum(axis=-1) + cm.sum(axis=-2)  # 2tp + fp + fn
    return _safe_div(2 * tp, support), support > 0


def _f1(cm: np.ndarray, positive: int | None) -> np.ndarray:
    if positive is None:  # label 1 never occurs: scikit-learn's zero_division=0
        return np.zeros(cm.shape[:-2])
    return _class_f1(cm)[0][..., positive]


def _macro_f1(cm: np.ndarray, positive: int | None) -> np.ndarray:
    """The mean F1 over the classes that occur in labels or predictions, as scikit-learn's."""
    f1, present = _class_f1(cm)
    return _safe_div((f1 * present).sum(axis=-1), present.sum(axis=-1))


#: every metric a dataset may name: ``(confusion matrices, positive class index) -> values``
METRICS: dict[str, Callable[[np.ndarray, int | None], np.ndarray]] = {
    "accuracy": _accuracy, "mcc": _mcc, "f1": _f1, "macro_f1": _macro_f1,
}


def compute(names: Sequence[str], labels: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    """The metrics ``names`` of the predictions, on the whole evaluation set."""
    cells, k, positive = _encode(labels, predictions)
    cm = _confusion(cells, k)
    return {name: float(METRICS[name](cm, positive)[0]) for name in names}


def resampled(
    names: Sequence[str], labels: np.ndarray, prediction_sets: Sequence[np.ndarray], rng: np.random.Generator,
    resamples: int,
) -> dict[str, np.ndarray]:
    """Each metric of each set of predictions on the same ``resamples`` bootstrap resamples of
    the examples: ``{name: array (sets, resamples)}``. Each resample draws as many examples as
    there are, with replacement, from ``rng`` (``rng.integers(0, n, size=(chunk, n))``, in
    chunks that hold :data:`_CHUNK_ELEMENTS`); every set is scored on the same examples, which
    is what makes a difference between two sets paired."""
    encoded = [_encode(labels, p) for p in prediction_sets]
    n = len(np.asarray(labels).ravel())
    values: dict[str, list[list[np.ndarray]]] = {name: [[] for _ in encoded] for name in names}
    chunk = max(1, _CHUNK_ELEMENTS // max(1, n))
    for start in range(0, resamples, chunk):
        picks = rng.integers(0, n, size=(min(chunk, resamples - start), n))
        for i, (cells, k, positive) in enumerate(encoded):
            cm = _confusion(cells[picks], k)
            for name in names:
                values[name][i].append(METRICS[name](cm, positive))
    return {name: np.stack([np.concatenate(v) for v in per_set]) for name, per_set in values.items()}


def bootstrap_ci(
    names: Sequence[str], labels: np.ndarray, predictions: np.ndarray, *, seed: int,
    resamples: int = 1000, confidence: float = 0.95,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap interval of each metric over the evaluation set.

    ``resamples`` times, draw as many examples as there are, with replacement (numpy's
    ``default_rng(seed)``: the same seed gives the same interval), compute the metric on
    them (:func:`resampled`); the interval runs from the (1 - confidence) / 2 to the
    (1 + confidence) / 2 quantile of those values (numpy's linear percentile). It says how
    much the score would move on another evaluation set of the same size, not across
    training seeds. Names without a confusion-matrix form (none of the built-in ones) are
    left out."""
    known = [name for name in names if name in METRICS]
    if not len(np.asarray(labels).ravel()) or not known:
        return {}
    _encode(labels, predictions)  # (a shape mismatch is an error before any draw)
    values = resampled(known, labels, [predictions], np.random.default_rng(seed), resamples)
    tail = (1 - confidence) / 2 * 100
    out = {}
    for name in known:
        low, high = np.percentile(values[name][0], [tail, 100 - tail])
        out[name] = (float(low), float(high))
    return out
