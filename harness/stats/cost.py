"""The price of a batch's shape: step seconds and peak memory as functions of (B, L).

A step of a BERT encoder on a batch of B examples padded to L tokens costs a constant (the
optimizer's step over every parameter, the launch of each op), a part proportional to the
tokens B·L (every linear layer, layer norm, embedding) and a part proportional to B·L²
(the attention scores and their weighted sum). :func:`fit` fits such forms by non-negative
least squares on relative errors (a 30 ms step weighs as much as a 3 s one) and keeps the
form that predicts shapes it was not fitted on best (leave-one-shape-out), among
:data:`FORMS`; where the measurements hold a single batch size the terms in B alone cannot
be told from the constant and those forms are not tried.

The form alone is not exact where it matters: on two CPU cores a MiniLM evaluation batch of
128 x 128 took 13% longer than the best (1, B·L) curve through the shorter ones said. So the
curve is corrected by its own residuals: at each measured shape the ratio of the measured
median to the curve, interpolated linearly in L between the measured lengths of the
nearest measured batch size (held at the end ratio past the last one). The prediction is
then exact at the measured shapes and the curve's between and beyond them.

A :class:`CostFit` predicts one shape's median (:meth:`CostFit.predict`) and the sum over many
(:meth:`CostFit.total`, an epoch) with an interval. A sum of many steps is their mean
times their number, and the mean lies above the median: a step now and then is much
slower than its shape's usual (on two CPU cores of a VM, 1.5 s among 0.86 s steps of
20 x 128). So a sum is the medians times ``mean_ratio``, the samples' mean ratio to their
own shape's median, pooled over the shapes (1.02-1.03 in the main suite's epochs), each
ratio counted at most :data:`MAX_STEP_RATIO`: a probe of three or four steps per shape,
where another process's burst of 0.16 cores made three steps 3-4 times their shape's
median, had a mean ratio of 1.5, and its predictions were 16-78% high. In the
interval, the systematic error (how far a
measured shape lies from what its neighbours predict for it, leave-one-out) does not
shrink with the number of steps, the step-to-step noise of one shape does (as 1/√n).
numpy and scipy only.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Sequence

import numpy as np

#: the candidate terms, by name: each a function of the batch size B and padded length L
TERMS = {
    "1": lambda b, l: np.ones_like(b, dtype=np.float64),
    "B": lambda b, l: b.astype(np.float64),
    "B*L": lambda b, l: b.astype(np.float64) * l,
    "B*L^2": lambda b, l: b.astype(np.float64) * l * l,
}
#: the forms :func:`fit` chooses between, simplest first
FORMS: tuple[tuple[str, ...], ...] = (
    ("1", "B*L"),
    ("1", "B*L", "B*L^2"),
    ("1", "B", "B*L"),
    ("1", "B", "B*L", "B*L^2"),
)
#: the forms of a peak memory curve: each with the B·L² of the attention probabilities a
#: backward pass keeps (chosen by leave-one-out among all forms, the probe's many short shapes
#: picked the linear one, and its peak for 20 x 256 was 16-18% short; this one, 7-9%)
MEMORY_FORMS: tuple[tuple[str, ...], ...] = tuple(f for f in FORMS if "B*L^2" in f)
#: the two-sided normal quantile of the intervals (95%)
Z95 = 1.959964


#: the largest ratio of a step to its shape's median that ``mean_ratio`` counts (see the module's docstring)
MAX_STEP_RATIO = 2.0


@dataclass
class CostFit:
    """``value(B, L) = Σ coef[i] · term[i](B, L)``, with what it was fitted on.

    ``knots``: (B, L, ratio of the measured median to the curve) per measured shape, the
    correction; ``systematic``: the relative RMS error of predicting each measured shape
    from the others (leave-one-out, corrections included); ``noise``: the median relative standard deviation
    of repeated measurements of one shape; ``batch_sizes`` and ``lengths``: the range measured,
    outside which a prediction is an extrapolation (:meth:`covers`)."""

    terms: tuple[str, ...]
    coef: tuple[float, ...]
    systematic: float
    noise: float
    shapes: int
    samples: int
    batch_sizes: tuple[int, int]
    lengths: tuple[int, int]
    cv_error: float | None = None  # leave-one-shape-out relative RMS error of the form alone
    knots: tuple[tuple[int, int, float], ...] = ()
    #: the samples' mean over their shape's median, pooled: a sum's factor (see the module's docstring)
    mean_ratio: float = 1.0

    def curve(self, batch_size: Any, length: Any) -> np.ndarray:
        """The fitted form alone."""
        b, l = np.asarray(batch_size, dtype=np.int64), np.asarray(length, dtype=np.int64)
        return _design(self.terms, b, l) @ np.asarray(self.coef)

    def predict(self, batch_size: Any, length: Any) -> np.ndarray:
        """The curve times its residual correction (see the module's docstring)."""
        b, l = np.broadcast_arrays(np.asarray(batch_size, dtype=np.int64), np.asarray(length, dtype=np.int64))
        return self.curve(b, l) * _correction(self.knots, b, l)

    def total(self, shapes: np.ndarray) -> tuple[float, float, float]:
        """(predicted sum, low, high) over ``shapes`` (rows of (B, L)): the 95% interval of
        the sum, from the systematic error and the noise shrunk by the number of shapes."""
        shapes = np.asarray(shapes, dtype=np.int64).reshape(-1, 2)
        if not len(shapes):
            return 0.0, 0.0, 0.0
        value = float(self.predict(shapes[:, 0], shapes[:, 1]).sum()) * self.mean_ratio
        half = Z95 * math.sqrt(self.systematic ** 2 + self.noise ** 2 / len(shapes)) * value
        return value, max(0.0, value - half), value + half

    def peak(self, shapes: np.ndarray) -> tuple[float, float, float]:
        """(predicted largest value over ``shapes``, low, high): a peak, not a sum."""
        shapes = np.asarray(shapes, dtype=np.int64).reshape(-1, 2)
        if not len(shapes):
            return 0.0, 0.0, 0.0
        value = float(self.predict(shapes[:, 0], shapes[:, 1]).max())
        half = Z95 * math.sqrt(self.systematic ** 2 + self.noise ** 2) * value
        return value, max(0.0, value - half), value + half

    def covers(self, shapes: np.ndarray) -> tuple[bool, bool]:
        """(every batch size within the measured range, every length within it)."""
        shapes = np.asarray(shapes, dtype=np.int64).reshape(-1, 2)
        if not len(shapes):
            return True, True
        (b0, b1), (l0, l1) = self.batch_sizes, self.lengths
        return (bool(shapes[:, 0].min() >= b0 and shapes[:, 0].max() <= b1),
                bool(shapes[:, 1].min() >= l0 and shapes[:, 1].max() <= l1))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["terms"], out["coef"] = list(self.terms), list(self.coef)
        out["batch_sizes"], out["lengths"] = list(self.batch_sizes), list(self.lengths)
        out["knots"] = [list(k) for k in self.knots]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CostFit":
        terms = tuple(data["terms"])
        unknown = [t for t in terms if t not in TERMS]
        if unknown:
            raise ValueError(f"unknown term {unknown[0]!r} (known: {', '.join(TERMS)})")
        coef = tuple(float(c) for c in data["coef"])
        if len(coef) != len(terms):
            raise ValueError(f"{len(terms)} terms but {len(coef)} coefficients")
        return cls(terms=terms, coef=coef, systematic=float(data["systematic"]), noise=float(data["noise"]),
                   shapes=int(data["shapes"]), samples=int(data["samples"]),
                   batch_sizes=tuple(int(v) for v in data["batch_sizes"]),  # type: ignore[arg-type]
                   lengths=tuple(int(v) for v in data["lengths"]),  # type: ignore[arg-type]
                   cv_error=None if data.get("cv_error") is None else float(data["cv_error"]),
                   knots=tuple((int(b), int(l), float(r)) for b, l, r in data.get("knots") or ()),
                   mean_ratio=float(data.get("mean_ratio", 1.0)))


def _design(terms: Sequence[str], b: np.ndarray, l: np.ndarray) -> np.ndarray:
    return np.stack([TERMS[t](b, l) for t in terms], axis=-1)


def _solve(terms: Sequence[str], b: np.ndarray, l: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative coefficients minimising the relative squared error."""
    from scipy.optimize import nnls  # lazy: scipy only where a fit is made

    x = _design(terms, b, l) / y[:, None]
    coef, _ = nnls(x, np.ones_like(y), maxiter=50 * len(terms))
    return coef


def fit(samples: Iterable[tuple[int, int, float]], forms: Sequence[Sequence[str]] = FORMS) -> CostFit:
    """The best form of :data:`FORMS` for these (batch size, padded length, value) samples.

    Each distinct shape counts once in the choice (its median), so fifty steps of one shape
    do not outweigh five of another; the form with the smallest leave-one-shape-out error
    wins, a simpler one on a tie within 1%. Needs at least three shapes."""
    rows = np.asarray([(b, l, v) for b, l, v in samples], dtype=np.float64).reshape(-1, 3)
    rows = rows[np.isfinite(rows[:, 2]) & (rows[:, 2] > 0)]
    shapes, inverse = np.unique(rows[:, :2].astype(np.int64), axis=0, return_inverse=True)
    inverse = np.asarray(inverse).reshape(-1)
    if len(shapes) < 3:
        raise ValueError(f"a fit needs at least 3 distinct shapes, got {len(shapes)}")
    medians = np.array([np.median(rows[inverse == i, 2]) for i in range(len(shapes))])
    spreads = [np.std(rows[inverse == i, 2], ddof=1) / medians[i] for i in range(len(shapes))
               if (inverse == i).sum() > 1]
    b, l = shapes[:, 0], shapes[:, 1]
    several_b = len(np.unique(b)) > 1
    best: tuple[float, tuple[str, ...]] | None = None
    for form in forms:
        form = tuple(form)
        if (not several_b and "B" in form) or len(shapes) <= len(form):
            continue
        error = _loo_error(form, b, l, medians)
        if best is None or error < best[0] * 0.99 - 1e-9:  # a tie (within 1%) keeps the simpler
            best = (error, form)
    if best is None:
        raise ValueError(f"{len(shapes)} shapes are too few for any form")
    cv, form = best
    coef = _solve(form, b, l, medians)
    ratios = medians / (_design(form, b, l) @ coef)
    knots = tuple((int(bi), int(li), float(r)) for bi, li, r in zip(b, l, ratios))
    return CostFit(
        terms=form, coef=tuple(float(c) for c in coef), systematic=_loo_knots(knots), knots=knots,
        noise=float(np.median(spreads)) if spreads else 0.0, shapes=len(shapes), samples=len(rows),
        mean_ratio=float(np.mean(np.minimum(rows[:, 2] / medians[inverse], MAX_STEP_RATIO))),
        batch_sizes=(int(b.min()), int(b.max())), lengths=(int(l.min()), int(l.max())), cv_error=float(cv),
    )


def _correction(knots: Sequence[tuple[int, int, float]], b: np.ndarray, l: np.ndarray) -> np.ndarray:
    """The residual ratio at each (B, L): interpolated in L among the knots of the measured
    batch size nearest B (on a log scale), held at the end ratio outside them; 1 without knots."""
    out = np.ones(b.shape, dtype=np.float64)
    if not knots:
        return out
    table = np.asarray(knots, dtype=np.float64)
    sizes = np.unique(table[:, 0])
    nearest = sizes[np.abs(np.log(sizes)[:, None] - np.log(np.maximum(b, 1)).reshape(1, -1)).argmin(axis=0)]
    nearest = nearest.reshape(b.shape)
    for size in sizes:
        at = table[table[:, 0] == size]
        at = at[np.argsort(at[:, 1])]
        where = nearest == size
        out[where] = np.interp(l[where], at[:, 1], at[:, 2])
    return out


def _loo_knots(knots: Sequence[tuple[int, int, float]]) -> float:
    """Relative RMS error of each knot's ratio predicted from its batch size's other knots."""
    table = np.asarray(knots, dtype=np.float64)
    errors = []
    for size in np.unique(table[:, 0]):
        at = table[table[:, 0] == size]
        at = at[np.argsort(at[:, 1])]
        for i in range(len(at)):
            rest = np.delete(at, i, axis=0)
            if len(rest):
                errors.append(float(np.interp(at[i, 1], rest[:, 1], rest[:, 2])) / at[i, 2] - 1.0)
    return float(math.sqrt(float(np.mean(np.square(errors))))) if errors else 0.0


def _loo_error(form: tuple[str, ...], b: np.ndarray, l: np.ndarray, y: np.ndarray) -> float:
    """Relative RMS error of predicting each shape from a fit on the others."""
    errors = []
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        coef = _solve(form, b[keep], l[keep], y[keep])
        errors.append((float((_design(form, b[i : i + 1], l[i : i + 1]) @ coef)[0]) - y[i]) / y[i])
    return float(math.sqrt(float(np.mean(np.square(errors)))))
