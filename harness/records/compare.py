"""``harness compare BASE NEW``: the same configurations in two results directories.

Runs are matched by configuration, the seed aside: the resolved configuration without
``seed`` and the keys that are not part of a run id (the harness version is not part of
it either, so the same suite run by two versions of the harness matches). The runs of one
configuration on one side (its seeds) are one group. For each configuration: the mean
epoch time on both sides with n and a 95% Student's t interval, their ratio, the main
metric likewise, and, with at least two runs on both sides, Welch's t-test of each
difference.

When the runs left their side files (:mod:`harness.records.sidefiles`), sharper tests
replace those that need several runs a side. The metric: a paired test on the same
examples (:func:`harness.records.versus.paired`: one run a side, a paired bootstrap over
the examples; several, a two-level bootstrap over seeds and examples); predictions of
different examples are refused. The time, with one run a side: NEW's step times against
BASE's on matched steps (:func:`harness.stats.paired.step_ratio`), unless the steps are too
noisy to judge or a run was busy.

A configuration is a regression when its NEW side is slower than ``--max-slowdown``
allows or its metric dropped by more than ``--max-metric-drop``, AND, when both sides
have two runs or more, Welch's p is below ``--alpha`` (past the threshold but not
significant: "within the noise", reported, not failed). With one run on a side there is
no noise to judge: the thresholds alone decide. A configuration that failed in NEW where
BASE was ok is a regression; configurations on one side only are listed, and do not fail.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from harness.errors import ExitCode, HarnessError
from harness.records.environment import RECORD_ENTRIES, difference_notes
from harness.records.environment import differences as env_differences
from harness.records.environment import side as env_side
from harness.records.sidefiles import record_steps
from harness.records.summary import ALWAYS_SHOWN, column_label, config_group, flatten, main_metric, summarize, varied_keys
from harness.records.versus import ok_runs, paired
from harness.stats.intervals import Estimate, estimate, welch_p
from harness.stats.paired import PairedDifference, StepRatio, step_ratio

#: environment fields worth a warning when they differ between BASE and NEW
ENV_KEYS = ("device_name", "model_revision", "torch", "transformers", "cuda", "python", "harness_version", "harness_git_sha")
#: those no environment file holds (each run's device and starting weights)
RECORD_ONLY = ("device_name", "model_revision")


def parse_slowdown(text: str, option: str = "--max-slowdown") -> float:
    """``10%`` or ``0.1`` -> 0.1 (a fraction of BASE's time). A bare number above 1 is
    refused: ``10`` is more likely a forgotten ``%`` than a 1000% allowance."""
    raw = text.strip()
    percent = raw.endswith("%")
    try:
        value = float(raw[:-1] if percent else raw)
    except ValueError:
        raise HarnessError(f"{option} {text}: expected a percentage such as 10% (or a fraction such as 0.1)") from None
    if not math.isfinite(value) or value < 0:
        raise HarnessError(f"{option} {text}: expected a percentage >= 0, such as 10%")
    if percent:
        return value / 100
    if value > 1:
        raise HarnessError(f"{option} {text}: ambiguous; write {raw}% for a percentage, or a fraction such as 0.1")
    return value


def parse_drop(text: str, option: str = "--max-metric-drop") -> float:
    """An absolute drop of the metric, in its own units (``0.02``: two points of MCC)."""
    try:
        value = float(text)
    except ValueError:
        raise HarnessError(f"{option} {text}: expected a number in the metric's units, such as 0.02") from None
    if not math.isfinite(value) or value < 0:
        raise HarnessError(f"{option} {text}: expected a number >= 0, such as 0.02")
    return value


def parse_alpha(text: str, option: str = "--alpha") -> float:
    """The significance level of Welch's test: a number between 0 and 1 (``0.05``)."""
    try:
        value = float(text)
    except ValueError:
        raise HarnessError(f"{option} {text}: expected a significance level between 0 and 1, such as 0.05") from None
    if not 0 < value < 1:
        raise HarnessError(f"{option} {text}: expected a significance level between 0 and 1, such as 0.05")
    return value


@dataclass
class Difference:
    """One figure on both sides of a configuration: estimates, and Welch's p when n >= 2 on both."""

    base: Estimate
    new: Estimate
    p: float | None

    @classmethod
    def of(cls, base: Sequence[float], new: Sequence[float]) -> "Difference":
        return cls(estimate(base), estimate(new), welch_p(base, new))

    @property
    def ratio(self) -> float | None:
        if self.base.mean and self.new.mean is not None:
            return self.new.mean / self.base.mean
        return None

    @property
    def delta(self) -> float | None:
        if self.base.mean is None or self.new.mean is None:
            return None
        return self.new.mean - self.base.mean


@dataclass
class Pair:
    """One configuration: its runs in BASE and in NEW (one per seed), and the verdict."""

    config: dict[str, Any]  # flattened, of its first run
    base: list[dict[str, Any]]
    new: list[dict[str, Any]]
    metric: str | None = None
    time: Difference | None = None
    score: Difference | None = None
    paired: PairedDifference | None = None  # the metric on the same examples
    steps: StepRatio | None = None  # one run a side: matched steps
    problems: list[str] = field(default_factory=list)  # regressions: exit 1
    within_noise: list[str] = field(default_factory=list)  # past a threshold, not significant

    @property
    def run_ids(self) -> list[str]:
        return list(dict.fromkeys(r["run_id"] for r in [*self.base, *self.new]))

    @property
    def run_id(self) -> str:
        ids = self.run_ids
        return ids[0] + (f" +{len(ids) - 1}" if len(ids) > 1 else "")

    @property
    def side(self) -> str:
        return "both" if self.base and self.new else ("BASE" if self.base else "NEW")

    @property
    def time_test(self) -> tuple[float | None, str]:
        """The p of the epoch time's change and the test that gave it: Welch's with several runs
        a side, else the step-level test when its steps can be judged."""
        if self.time is not None and self.time.p is not None:
            return self.time.p, "Welch"
        if self.steps is not None and self.steps.noisy is None and not self.busy:
            return self.steps.p, "steps"
        return None, ""

    @property
    def score_test(self) -> tuple[float | None, str]:
        """The p of the metric's change: the paired test on the same examples, else Welch's."""
        if self.paired is not None:
            return self.paired.p, "paired"
        return (self.score.p, "Welch") if self.score is not None and self.score.p is not None else (None, "")

    @property
    def busy(self) -> list[str]:
        """``BASE 3f2a9c1e0b7d``: the runs measured while other processes took the CPU."""
        return [f"{side} {r['run_id']}" for side, runs in (("BASE", self.base), ("NEW", self.new))
                for r in runs if r.get("busy")]


@dataclass
class Comparison:
    keys: list[str]  # config keys that tell the configurations apart (columns)
    pairs: list[Pair]
    env_diff: dict[str, tuple[Any, Any]]
    max_slowdown: float | None
    max_metric_drop: float | None
    alpha: float = 0.05
    #: ``(entry, BASE, NEW)``: the environment entries that differ (:mod:`harness.records.environment`)
    environment: list[tuple[str, Any, Any]] = field(default_factory=list)
    #: whether each side's entries come from its environment file (else its records' ``env``)
    environment_files: tuple[bool, bool] = (False, False)

    @property
    def failed(self) -> list[Pair]:
        return [p for p in self.pairs if p.problems]

    @property
    def matched(self) -> list[Pair]:
        return [p for p in self.pairs if p.side == "both"]

    @property
    def unjudged(self) -> list[Pair]:
        """Matched configurations whose time and metric no test judges (a single run on a
        side, no side files): thresholds alone decide."""
        return [p for p in self.matched if p.time_test[0] is None and p.score_test[0] is None]


def _score(record: dict[str, Any], metric: str | None) -> float | None:
    if record.get("status") != "ok" or metric is None:
        return None
    value = (record.get("metrics") or {}).get(metric)
    return float(value) if isinstance(value, (int, float)) else None


def epoch_seconds(records: Sequence[dict[str, Any]]) -> list[float]:
    return [s for s in (summarize(r)["epoch_seconds"] for r in records) if s is not None]


def scores(records: Sequence[dict[str, Any]], metric: str | None) -> list[float]:
    return [s for s in (_score(r, metric) for r in records) if s is not None]


def _groups(records: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        out.setdefault(config_group(r), []).append(r)
    return out


def compare(
    base: Sequence[dict[str, Any]], new: Sequence[dict[str, Any]], *,
    max_slowdown: float | None = None, max_metric_drop: float | None = None, metric: str | None = None,
    alpha: float = 0.05, folders: tuple[Path, Path] | None = None,
) -> Comparison:
    """``folders``: the results directories of BASE and NEW, where their side files lie (None:
    records alone, no paired tests)."""
    everything = [*base, *new]
    if metric is not None and not any(metric in (r.get("metrics") or {}) for r in everything):
        known = sorted({m for r in everything for m in (r.get("metrics") or {})})
        raise HarnessError(f"--metric {metric}: no run reports it; metrics recorded: {', '.join(known) or 'none'}")
    base_groups, new_groups = _groups(base), _groups(new)
    pairs = []
    for key in dict.fromkeys([*base_groups, *new_groups]):
        b, n = base_groups.get(key, []), new_groups.get(key, [])
        either = (b or n)[0]
        pair = Pair(flatten(either.get("config", {})), b, n)
        pair.metric = metric or main_metric(either)
        if b and n:
            pair.time = Difference.of(epoch_seconds(b), epoch_seconds(n))
            pair.score = Difference.of(scores(b, pair.metric), scores(n, pair.metric))
            if folders is not None:
                _side_tests(pair, *folders)
            _judge(pair, max_slowdown, max_metric_drop, alpha)
        pairs.append(pair)
    if not any(p.side == "both" for p in pairs):
        raise HarnessError(
            f"nothing to compare: no run in NEW has the configuration of a run in BASE "
            f"({len(base)} in BASE, {len(new)} in NEW); run the same suite, with the same "
            "--set options, on both sides (the device and precision are part of a run's configuration)"
        )
    seeds_grouped = any(len(p.base) > 1 or len(p.new) > 1 for p in pairs)
    keys = varied_keys(everything, exclude=("seed",) if seeds_grouped else ())
    if not keys:  # one configuration: still say what it is
        keys = [k for k in ALWAYS_SHOWN if k in pairs[0].config]
    comp = Comparison(keys, pairs, _env_diff(base, new), max_slowdown, max_metric_drop, alpha)
    if folders is not None:
        (base_env, base_file), (new_env, new_file) = env_side(folders[0], base), env_side(folders[1], new)
        comp.environment = env_differences(base_env, new_env, both_files=base_file and new_file)
        comp.environment_files = (base_file, new_file)
        if base_file and new_file:  # the files hold the versions: the records' env adds the device and weights
            comp.env_diff = {k: v for k, v in comp.env_diff.items() if k in RECORD_ONLY}
    return comp


def _side_tests(pair: Pair, base_dir: Path, new_dir: Path) -> None:
    """The paired metric test and, with one ok run a side, the step-level time test."""
    if pair.metric is not None:
        differences = paired([pair.metric], base_dir, pair.base, new_dir, pair.new)
        pair.paired = differences[pair.metric] if differences else None
    ok_b, ok_n = ok_runs(pair.base), ok_runs(pair.new)
    if len(ok_b) == 1 and len(ok_n) == 1:
        steps_b, steps_n = record_steps(base_dir, ok_b[0]), record_steps(new_dir, ok_n[0])
        if steps_b is not None and steps_n is not None:
            pair.steps = step_ratio(steps_b, steps_n)


def _pct(fraction: float) -> str:
    """0.1 -> ``10%``, 0.125 -> ``12.5%``: a limit as the user wrote it."""
    return f"{fraction * 100:g}%"


def p_text(p: float) -> str:
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def _weigh(pair: Pair, change: str, test: tuple[float | None, str], alpha: float, one_run: str) -> None:
    """A change past its threshold: a regression, unless its test (Welch's, the paired or the
    step-level one) says it is noise."""
    p, name = test
    if p is None:
        pair.problems.append(one_run)
    elif p < alpha:
        pair.problems.append(f"{change}, {name} p={p_text(p)}: a regression")
    else:
        pair.within_noise.append(f"{change} but {name} p={p_text(p)}: within the noise")


def _judge(pair: Pair, max_slowdown: float | None, max_metric_drop: float | None, alpha: float) -> None:
    _status_problems(pair)
    ratio = pair.time.ratio if pair.time else None
    steps = pair.time_test[1] == "steps"
    if steps:  # one run a side: the median of the matched steps' ratios, which one slow step does not move
        ratio = pair.steps.ratio
    if max_slowdown is not None and ratio is not None and ratio - 1 > max_slowdown + 1e-12:
        slower = f"{'steps ' if steps else ''}slower by {(ratio - 1) * 100:.1f}%"
        one_run = f"{ratio - 1:+.0%} epoch time (limit +{_pct(max_slowdown)}): {slower}"
        _weigh(pair, f"{slower} (limit {_pct(max_slowdown)})", pair.time_test, alpha, one_run)
    delta = pair.paired.delta if pair.paired else pair.score.delta if pair.score else None
    if max_metric_drop is not None and delta is not None and -delta > max_metric_drop + 1e-12:
        change = f"{pair.metric} lower by {-delta:.3f} (limit {max_metric_drop:g})"
        _weigh(pair, change, pair.score_test, alpha, f"{pair.metric} {delta:+.3f} (limit -{max_metric_drop:g})")


def _status_problems(pair: Pair) -> None:
    """NEW runs that did not end ``ok`` where BASE has an ``ok`` run."""
    if not any(r.get("status") == "ok" for r in pair.base):
        return
    bad = [r for r in pair.new if r.get("status") != "ok"]
    for status in dict.fromkeys(r.get("status") for r in bad):
        these = [r for r in bad if r.get("status") == status]
        errors = "; ".join(dict.fromkeys(r["error"] for r in these if r.get("error")))
        count = f"{len(these)} of {len(pair.new)} " if len(pair.new) > 1 else ""
        pair.problems.append(f"{count}{status} in NEW" + (f" ({errors})" if errors else ""))


def _env_diff(base: Sequence[dict[str, Any]], new: Sequence[dict[str, Any]]) -> dict[str, tuple[Any, Any]]:
    def values(records: Sequence[dict[str, Any]], key: str) -> str:
        found = sorted({str((r.get("env") or {}).get(key)) for r in records if r.get("env")})
        return ", ".join(found)

    out = {}
    for key in ENV_KEYS:
        b, n = values(base, key), values(new, key)
        if b != n:
            out[key] = (b, n)
    return out


def verdict(pair: Pair) -> str:
    """A configuration's verdict in a word or two: ``regression``, ``within the noise``, ``ok``,
    ``only in BASE`` / ``only in NEW``."""
    if pair.side != "both":
        return f"only in {pair.side}"
    return "regression" if pair.problems else "within the noise" if pair.within_noise else "ok"


def outcome(comp: Comparison) -> tuple[int, str]:
    """The exit code of ``harness compare`` and why: 1 on a regression, else 0."""
    if comp.failed:
        n = len(comp.failed)
        return int(ExitCode.RUN_FAILED), f"{n} configuration{'s' if n != 1 else ''} regressed"
    noun = "run" if all(len(p.base) == 1 and len(p.new) == 1 for p in comp.matched) else "configuration"
    count = len(comp.matched)
    return int(ExitCode.OK), f"{count} matched {noun}{'s' if count != 1 else ''} within the thresholds"


def run_label(pair: Pair, keys: Sequence[str]) -> str:
    """``3f2a9c1e0b7d (strategy=fixed max_len=64)``: how a message names a configuration
    (its run ids, one per seed and side)."""
    desc = " ".join(f"{column_label(k)}={pair.config.get(k)}" for k in keys)
    ids = ", ".join(pair.run_ids)
    return f"{ids} ({desc})" if desc else ids


def record_env_diff(comp: Comparison) -> dict[str, tuple[Any, Any]]:
    """The records' ``env`` differences that the environment entries do not already name."""
    named = {e for e, _, _ in comp.environment}
    return {k: v for k, v in comp.env_diff.items() if RECORD_ENTRIES.get(k) not in named}


def environment_notes(comp: Comparison) -> list[str]:
    """What ``harness compare`` says before its verdicts: the environment entries that differ
    between the sides (their environment files', else their records' ``env``)."""
    out = difference_notes(comp.environment)
    return out + [f"note: {key} differs: BASE {b or '?'}, NEW {n or '?'}" for key, (b, n) in record_env_diff(comp).items()]


def notes(comp: Comparison) -> list[str]:
    """What a reader of ``harness compare`` must know besides the table (the environment comes
    first: :func:`environment_notes`): one-sided runs, busy runs, changes within the noise,
    and whether noise was judged."""
    out: list[str] = []
    one_sided = [p for p in comp.pairs if p.side != "both"]
    if one_sided:
        count = sum(len(p.base) + len(p.new) for p in one_sided)
        out.append(
            f"{count} run{'s' if count != 1 else ''} on one side only: "
            + "; ".join(f"{run_label(p, comp.keys)} only in {p.side}" for p in one_sided)
        )
    busy = [b for p in comp.matched for b in p.busy]
    if busy:
        out.append(f"note: busy runs (measured while other processes took the CPU; their times are not "
                     f"comparable): {', '.join(busy)}")
    for p in comp.matched:
        out += [f"note: {run_label(p, comp.keys)}: {line}" for line in p.within_noise]
    for p in comp.matched:
        if p.steps is not None:
            judged = f"{p.steps.noisy}; the threshold alone judges it" if p.steps.noisy else p.steps.text()
            judged += "; a run was busy: the threshold alone judges it" if p.busy and not p.steps.noisy else ""
            out.append(f"note: {run_label(p, comp.keys)}: time: {judged}")
    tests = {name for p in comp.matched for name in (p.time_test[1], p.score_test[1]) if name}
    if "paired" in tests:
        out.append("note: p (paired): the metric's change on the same examples; one run a side: a paired bootstrap "
                   "over the examples, which judges this pair of trained models (seed noise is not in it); several: "
                   "a two-level bootstrap over seeds and examples")
    if "steps" in tests:
        out.append("note: p (steps): one run a side, its training steps matched by shape (batch size, padded "
                   "length): Wilcoxon's signed-rank test of their log time ratios")
    thresholds = comp.max_slowdown is not None or comp.max_metric_drop is not None
    if thresholds and comp.unjudged:
        out.append(
            f"note: {len(comp.unjudged)} of {len(comp.matched)} matched configurations have a single run on a "
            "side and no side files to test: one run cannot tell a change from noise, so the thresholds alone "
            f"judge them; repeat over seeds (2 or more per side) for Welch's t-test at alpha {comp.alpha:g}"
        )
    if thresholds and len(comp.unjudged) < len(comp.matched):
        out.append(f"note: a change past a threshold is a regression only when its test gives p < {comp.alpha:g}")
    return out
