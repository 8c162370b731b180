"""Paired comparisons: two configurations scored on the same examples, two runs timed on the
same batch shapes. Pure numpy and scipy, no torch.

- :func:`paired_difference`: the difference NEW - BASE of a metric with its 95% interval and
  a two-sided p. With one run per side, a paired bootstrap over the examples (the same
  resampled examples score both sides); for accuracy also McNemar's exact test on the
  examples one side got right and the other wrong. Both describe *this pair of trained
  models*: how another evaluation set of the same size would move the difference, not
  another training seed. With several seeds on a side, a two-level bootstrap: resample the
  seeds of each side, then the examples (the same for both sides), which carries both
  sources of noise; the seed-only and examples-only variances say which dominates.
- :func:`step_ratio`: NEW's step time over BASE's on matched steps (the same batch size and
  padded length, their k-th occurrence on each side): the median ratio with a bootstrap
  interval over the matched steps and the Wilcoxon signed-rank p of their log ratios.

Every bootstrap is a percentile bootstrap of :data:`RESAMPLES` resamples, seeded (the same
inputs give the same interval); its p-value is twice the share of resampled differences on
the far side of zero (at most 1), so ``p < alpha`` when the (1 - alpha) interval excludes 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np

from harness.stats import metrics as metric_lib
from harness.stats.intervals import CONFIDENCE

RESAMPLES = 2000
#: a step comparison whose interval is wider than this (``high / low - 1``) cannot resolve a
#: 10% change: the steps are too noisy to judge (a busy machine)
NOISY_WIDTH = 0.10
#: fewer matched steps than this: nothing to judge
MIN_MATCHED = 10


def _tails(values: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def _bootstrap_p(values: np.ndarray) -> float:
    """Two-sided percentile-bootstrap p that the difference is 0."""
    below, above = float(np.mean(values <= 0)), float(np.mean(values >= 0))
    return min(1.0, 2 * min(below, above))


def mcnemar_exact(labels: np.ndarray, base: np.ndarray, new: np.ndarray) -> tuple[float, int, int]:
    """McNemar's exact test of equal accuracy on paired predictions: (two-sided p, examples
    only BASE got right, examples only NEW got right); the binomial test of those two counts
    at 1/2 (scipy's ``binomtest``); p = 1 when no example tells them apart."""
    labels, base, new = (np.asarray(a).ravel() for a in (labels, base, new))
    base_right, new_right = base == labels, new == labels
    b, c = int(np.sum(base_right & ~new_right)), int(np.sum(~base_right & new_right))
    if b + c == 0:
        return 1.0, b, c
    from scipy.stats import binomtest

    return float(binomtest(b, b + c, 0.5).pvalue), b, c


@dataclass(frozen=True)
class PairedDifference:
    """NEW - BASE of one metric on the same examples: the difference on all examples (the mean
    over each side's seeds), its 95% interval, the p of no difference, and how it was had."""

    metric: str
    delta: float
    low: float
    high: float
    p: float
    kind: Literal["examples", "two-level"]
    examples: int
    seeds: tuple[int, int]  # runs on each side (BASE, NEW)
    #: the difference's interval with each side resampled on its own examples, as two
    #: independent evaluations would give it: what pairing gains
    independent: tuple[float, float]
    mcnemar_p: float | None = None  # accuracy with one run per side
    #: two-level: the interval with the seeds held (examples only), and the share of the
    #: difference's bootstrap variance that the seeds alone give
    examples_only: tuple[float, float] | None = None
    seed_share: float | None = None

    def verdict(self, alpha: float) -> str:
        """``better`` / ``worse`` (NEW against BASE, a higher metric being better) when p < alpha,
        else ``cannot tell``."""
        if self.p < alpha and self.delta > 0:
            return "better"
        if self.p < alpha and self.delta < 0:
            return "worse"
        return "cannot tell"

    @property
    def dominant(self) -> str | None:
        """Two-level: which noise is larger, ``seeds`` or ``examples``."""
        if self.seed_share is None:
            return None
        return "seeds" if self.seed_share > 0.5 else "examples"


def paired_difference(
    metric: str, labels: np.ndarray, base: Sequence[np.ndarray], new: Sequence[np.ndarray], *, seed: int = 0,
    resamples: int = RESAMPLES,
) -> PairedDifference:
    """NEW - BASE of ``metric`` (a name of :data:`harness.stats.metrics.METRICS`) from each
    side's predictions of the same examples in the same order (one array per run: its seeds).
    One run per side: a paired bootstrap over the examples (and McNemar's exact p for
    accuracy). Several on a side: the two-level bootstrap."""
    if not base or not new:
        raise ValueError("each side needs the predictions of one run or more")
    labels = np.asarray(labels).ravel()
    full_b = np.array([metric_lib.compute([metric], labels, p)[metric] for p in base])
    full_n = np.array([metric_lib.compute([metric], labels, p)[metric] for p in new])
    delta = float(full_n.mean() - full_b.mean())
    rng = np.random.default_rng(seed)
    both = metric_lib.resampled([metric], labels, [*base, *new], rng, resamples)[metric]
    on_b, on_n = both[: len(base)], both[len(base):]  # (seeds, resamples), the same examples for all
    # the same figure with each run on draws of its own: independent evaluations
    alone = [metric_lib.resampled([metric], labels, [p], rng, resamples)[metric][0] for p in [*base, *new]]
    independent = _tails(np.mean(alone[len(base):], axis=0) - np.mean(alone[: len(base)], axis=0))
    common = dict(metric=metric, delta=delta, examples=len(labels), seeds=(len(base), len(new)),
                  independent=independent)
    examples_only = on_n.mean(axis=0) - on_b.mean(axis=0)
    if len(base) == 1 and len(new) == 1:
        mcnemar = mcnemar_exact(labels, base[0], new[0])[0] if metric == "accuracy" else None
        return PairedDifference(low=_tails(examples_only)[0], high=_tails(examples_only)[1],
                                p=_bootstrap_p(examples_only), kind="examples", mcnemar_p=mcnemar, **common)
    # two levels: each resample draws each side's seeds (with replacement), then scores them on
    # that resample's examples, shared by both sides
    cols = np.arange(resamples)
    pick_b = rng.integers(0, len(base), size=(resamples, len(base)))
    pick_n = rng.integers(0, len(new), size=(resamples, len(new)))
    two = on_n[pick_n, cols[:, None]].mean(axis=1) - on_b[pick_b, cols[:, None]].mean(axis=1)
    seeds_only = full_n[pick_n].mean(axis=1) - full_b[pick_b].mean(axis=1)
    var_seeds, var_examples = float(np.var(seeds_only)), float(np.var(examples_only))
    share = var_seeds / (var_seeds + var_examples) if var_seeds + var_examples > 0 else None
    low, high = _tails(two)
    return PairedDifference(low=low, high=high, p=_bootstrap_p(two), kind="two-level",
                            examples_only=_tails(examples_only), seed_share=share, **common)


# ----------------------------------------------------------------------------- step times


@dataclass(frozen=True)
class StepRatio:
    """NEW's step time over BASE's on matched steps: the median ratio, its 95% bootstrap
    interval, the Wilcoxon signed-rank p of the log ratios, the steps matched, and why the
    steps cannot be judged (None: they can)."""

    ratio: float
    low: float
    high: float
    p: float
    matched: int
    noisy: str | None = None

    def text(self) -> str:
        return (f"median step ratio {self.ratio:.3f} [{self.low:.3f}, {self.high:.3f}] over {self.matched} "
                f"matched steps, Wilcoxon p={self.p:.2g}")


def match_steps(base: np.ndarray, new: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The seconds of matched training steps: rows of two steps tables
    (:data:`harness.records.sidefiles.STEP_COLUMNS`) with the same batch size and padded
    length, the k-th such step of one side with the k-th of the other (the same seed gives
    the same batches in the same order)."""
    def by_shape(steps: np.ndarray) -> dict[tuple[int, int], list[float]]:
        out: dict[tuple[int, int], list[float]] = {}
        for row in steps[steps[:, 0] == 0]:  # training steps
            out.setdefault((int(row[3]), int(row[4])), []).append(float(row[6]))
        return out

    b, n = by_shape(base), by_shape(new)
    pairs = [(x, y) for shape in b.keys() & n.keys() for x, y in zip(b[shape], n[shape])]
    if not pairs:
        return np.empty(0), np.empty(0)
    arr = np.asarray(pairs)
    return arr[:, 0], arr[:, 1]


def step_ratio(base: np.ndarray, new: np.ndarray, *, seed: int = 0, resamples: int = RESAMPLES) -> StepRatio | None:
    """The step-level comparison of two runs' steps tables; None with fewer than
    :data:`MIN_MATCHED` matched steps."""
    b, n = match_steps(base, new)
    keep = (b > 0) & (n > 0)
    logs = np.log(n[keep] / b[keep])
    if len(logs) < MIN_MATCHED:
        return None
    rng = np.random.default_rng(seed)
    medians = np.median(logs[rng.integers(0, len(logs), size=(resamples, len(logs)))], axis=1)
    low, high = (math.exp(v) for v in _tails(medians))
    if np.all(logs == 0):
        p = 1.0
    else:
        from scipy.stats import wilcoxon

        p = float(wilcoxon(logs).pvalue)
    noisy = None
    if high / low - 1 > NOISY_WIDTH:
        noisy = (f"the matched steps are too noisy to judge: the step-time ratio's interval [{low:.3f}, {high:.3f}] "
                 f"is wider than {NOISY_WIDTH:.0%}")
    return StepRatio(math.exp(float(np.median(logs))), low, high, p, len(logs), noisy)
