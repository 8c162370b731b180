"""Intervals and tests the tables and comparisons report: a mean with its Student's t
interval (:func:`estimate`), Welch's t-test (:func:`welch_p`). Pure, no torch."""

from __future__ import annotations

import math
import statistics
import warnings
from dataclasses import dataclass
from typing import Iterable, Sequence

#: the confidence of every interval the harness reports
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Estimate:
    """The mean of n values with its spread and its confidence interval.

    ``half_width`` is the half-width of the two-sided 95% confidence interval of the mean,
    Student's t with n - 1 degrees of freedom: t(0.975, n - 1) x std / sqrt(n). None when
    n < 2 (one value says nothing about the noise)."""

    mean: float | None
    n: int
    std: float | None = None
    half_width: float | None = None

    @property
    def low(self) -> float | None:
        return None if self.half_width is None else self.mean - self.half_width

    @property
    def high(self) -> float | None:
        return None if self.half_width is None else self.mean + self.half_width


def estimate(values: Iterable[float | None], confidence: float = CONFIDENCE) -> Estimate:
    """Mean, n, sample standard deviation and Student's t interval of the values (None skipped)."""
    xs = [float(v) for v in values if v is not None]
    if not xs:
        return Estimate(None, 0)
    mean = statistics.fmean(xs)
    if len(xs) < 2:
        return Estimate(mean, 1)
    from scipy.stats import t

    std = statistics.stdev(xs)
    half = float(t.ppf((1 + confidence) / 2, len(xs) - 1)) * std / math.sqrt(len(xs))
    return Estimate(mean, len(xs), std, half)


def welch_p(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Two-sided p-value of Welch's t-test (unequal variances) that the means of ``a`` and
    ``b`` differ; None unless both hold at least two values. Two sides without any spread
    give 0 when their means differ and 1 when they do not (scipy gives NaN)."""
    if len(a) < 2 or len(b) < 2:
        return None
    if statistics.pstdev(a) == 0 and statistics.pstdev(b) == 0:
        return 1.0 if statistics.fmean(a) == statistics.fmean(b) else 0.0
    from scipy.stats import ttest_ind

    with warnings.catch_warnings():  # "nearly identical data": the p-value is still the answer
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(ttest_ind(a, b, equal_var=False).pvalue)
