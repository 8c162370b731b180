"""Summaries of run records: pure functions, no printing.

Every renderer (the rich, markdown and csv tables, the plot, ``harness compare``, the
pytest fixture's ``extra_info``) derives its figures here, from the plain records of
``results.jsonl``, so a figure means the same thing wherever it is shown:

- :func:`summarize`: one run's derived figures (mean epoch time, real tokens/s, padding
  waste, peak memory, TFLOP/s) from its epochs;
- :func:`rows`: one row per configuration, runs that differ only by seed grouped, with
  mean, n, sample standard deviation and a 95% confidence interval of the mean;
- :func:`estimate`, :func:`welch_p`: the statistics behind them (Student's t interval,
  Welch's t-test), which ``harness compare`` and the plot use too;
- :func:`varied_keys`, :func:`flatten`, :func:`column_label`: which config keys tell the
  runs apart, and what a column is called;
- :func:`table_title`: ``max_len (9 runs)``;
- :func:`pareto_front`, :func:`tradeoff_metric`: the accuracy cost of speed, which
  configurations no other beats on both epoch time and score (the table's ``pareto``
  column and ``harness report --plot --x time``).
"""

from __future__ import annotations

import math
import statistics
import warnings
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

#: config keys never shown as a varied column, nor used to tell configurations apart
HIDDEN_KEYS = ("data_dir",)
#: config keys a one-configuration table still shows, so that it says what ran
ALWAYS_SHOWN = ("strategy.name", "max_len")
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



def summarize(record: dict[str, Any]) -> dict[str, Any]:
    """Derived figures of one run, from its epochs."""
    epochs = record.get("epochs") or []
    train_s = sum(e["train_seconds"] for e in epochs)
    real = sum(e["real_tokens"] for e in epochs)
    padded = sum(e["padded_tokens"] for e in epochs)
    flops = sum(e.get("train_flops") or 0.0 for e in epochs)
    return {
        "epoch_seconds": train_s / len(epochs) if epochs else None,
        "eval_seconds": statistics.fmean(e["eval_seconds"] for e in epochs) if epochs else None,
        "real_tokens_per_second": real / train_s if train_s else None,
        "padding_waste": (padded - real) / padded if padded else None,
        "peak_memory_bytes": max((e["peak_memory_bytes"] for e in epochs), default=None),
        "tflops": flops / train_s / 1e12 if train_s and flops else None,
        "peak_share": _peak_share(record, flops / train_s / 1e12 if train_s and flops else None),
        "compile_seconds": record.get("compile_seconds"),
        "train_loss": epochs[-1]["train_loss"] if epochs else None,
    }


def _peak_share(record: dict[str, Any], tflops: float | None) -> float | None:
    """Model TFLOP/s over the GPU's dense bf16 peak (None on a CPU or an unknown card)."""
    from harness.measure import bf16_peak_tflops

    env = record.get("env") or {}
    if tflops is None or not env.get("cuda"):
        return None
    peak = bf16_peak_tflops(env.get("device_name") or "")
    return tflops / peak if peak else None


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):  # an empty one ({} options) is no column of its own
            out.update(flatten(value, path + "."))
        else:
            out[path] = value
    return out


def varied_keys(records: Sequence[dict[str, Any]], exclude: Iterable[str] = ()) -> list[str]:
    """Config keys (dotted) whose value differs between records, in config order."""
    flat = [flatten(r.get("config", {})) for r in records]
    keys: list[str] = []
    for f in flat:
        keys += [k for k in f if k not in keys]
    skip = set(HIDDEN_KEYS) | set(exclude)
    return [k for k in keys if k not in skip and len({repr(f.get(k)) for f in flat}) > 1]


def column_label(key: str) -> str:
    """``strategy.name`` -> ``strategy``; ``strategy.options.truncation`` -> ``truncation``."""
    parts = key.split(".")
    if parts[-1] == "name" and len(parts) == 2:
        return parts[0]
    if len(parts) >= 3 and parts[1] == "options":
        return ".".join(parts[2:])
    return key


#: the per-run figures a row averages (each with ``_spread``, ``_n``, ``_ci_low``, ``_ci_high``)
ROW_FIELDS = ("epoch_seconds", "eval_seconds", "real_tokens_per_second", "padding_waste", "tflops",
              "peak_share", "compile_seconds", "train_loss")


def _put(row: dict[str, Any], name: str, est: Estimate) -> None:
    """``name`` (the mean), ``name_spread`` (sample std), ``name_n``, ``name_ci_low/_high``
    and ``name_ci`` (``t`` when the interval is Student's t over the row's runs)."""
    row[name], row[name + "_spread"], row[name + "_n"] = est.mean, est.std, est.n
    row[name + "_ci_low"], row[name + "_ci_high"] = est.low, est.high
    row[name + "_ci"] = "t" if est.half_width is not None else None


def _bootstrap(row: dict[str, Any], name: str, ok: Sequence[dict[str, Any]], source: str = "metrics_ci95",
               metric: str | None = None) -> None:
    """A metric of a single ok run: its bootstrap interval over the evaluated set, if recorded
    (``source``: ``metrics_ci95``, or ``test_metrics_ci95`` for a test metric)."""
    if row[name + "_n"] != 1 or len(ok) != 1:
        return
    interval = (ok[0].get(source) or {}).get(metric or name)
    if isinstance(interval, (list, tuple)) and len(interval) == 2 and None not in interval:
        row[name + "_ci_low"], row[name + "_ci_high"] = float(interval[0]), float(interval[1])
        row[name + "_ci"] = "bootstrap"


def metric_names(records: Sequence[dict[str, Any]]) -> list[str]:
    """Every metric the runs report, each run's main metric first."""
    names: list[str] = []
    for r in records:
        main = r.get("main_metric")
        for name in ([main] if main else []) + list((r.get("metrics") or {})):
            if name not in names:
                names.append(name)
    return names


def tested_metric_names(records: Sequence[dict[str, Any]]) -> list[str]:
    """Every metric of the runs' final test evaluation (``test_metrics``), the main metric first."""
    names: list[str] = []
    for r in records:
        tested = r.get("test_metrics") or {}
        main = r.get("main_metric")
        for name in ([main] if main in tested else []) + list(tested):
            if name not in names:
                names.append(name)
    return names


#: the prefix of a test metric's row field and column: ``test_mcc``, the column ``test mcc``
TEST = "test_"


def table_keys(records: Sequence[dict[str, Any]]) -> list[str]:
    """The config keys a table shows: those that vary (not the seed, when seeds are grouped);
    with a single configuration, ``strategy`` and ``max_len`` (so a table says what ran)."""
    seeds_vary = len({r.get("config", {}).get("seed") for r in records}) > 1
    keys = varied_keys(records, exclude=("seed",) if seeds_vary else ())
    if keys:
        return keys
    present = {k for r in records for k in flatten(r.get("config", {}))}
    return [k for k in ALWAYS_SHOWN if k in present]


def epoch_rows(records: Sequence[dict[str, Any]]) -> tuple[list[str], list[str], list[dict[str, Any]]]:
    """What each run learned, epoch by epoch (the tutorial prints its validation accuracy after
    each one): the config keys that tell the runs apart (the seed too), the metric names, and
    one row per run and epoch (``epoch``, ``train_seconds``, ``train_loss``, the evaluated
    split's metrics), then a row ``epoch: "test"`` with the run's ``test_metrics`` when it has
    them (evaluated once after the last epoch)."""
    keys = varied_keys(records) or table_keys(records)
    names = [*metric_names(records)]
    out = []
    for r in records:
        flat = flatten(r.get("config", {}))
        run = {k: flat.get(k) for k in keys}
        for e in r.get("epochs") or []:
            out.append({**run, "epoch": e.get("epoch"), "train_seconds": e.get("train_seconds"),
                        "train_loss": e.get("train_loss"), **(e.get("metrics") or {})})
        if r.get("test_metrics"):
            out.append({**run, "epoch": "test", "train_seconds": None, "train_loss": None, **r["test_metrics"]})
    return keys, names, out


def rows(records: Sequence[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    """Table rows: one per configuration (records differing only by seed are one row, with
    mean, n, spread and 95% interval: see :func:`_put`). Returns the config keys and the rows."""
    keys = table_keys(records)
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        flat = flatten(r.get("config", {}))
        groups.setdefault(repr([flat.get(k) for k in keys]), []).append(r)
    names, tested = metric_names(records), tested_metric_names(records)
    out = []
    for members in groups.values():
        flat = flatten(members[0].get("config", {}))
        sums = [summarize(m) for m in members]
        ok = [m for m in members if m.get("status") == "ok"]
        row: dict[str, Any] = {k: flat.get(k) for k in keys}
        row["runs"] = len(members)
        row["status"] = "/".join(sorted({m.get("status", "?") for m in members}))
        row["error"] = "; ".join(sorted({m["error"] for m in members if m.get("error")}))
        row["busy"] = sum(1 for m in members if m.get("busy"))
        row["one_class"] = sum(1 for m in members if m.get("one_class"))
        for field in ROW_FIELDS:
            _put(row, field, estimate(s[field] for s in sums))
        row["peak_memory_bytes"] = max((s["peak_memory_bytes"] or 0 for s in sums), default=None) or None
        for name in names:
            _put(row, name, estimate((m.get("metrics") or {}).get(name) for m in ok))
            _bootstrap(row, name, ok)
        for name in tested:
            _put(row, TEST + name, estimate((m.get("test_metrics") or {}).get(name) for m in ok))
            _bootstrap(row, TEST + name, ok, "test_metrics_ci95", name)
        row["_metrics"], row["_test_metrics"] = names, tested
        out.append(row)
    _mark_pareto(out, tradeoff_metric(records))
    return keys, out


# ------------------------------------------------------------- the accuracy cost of speed


def tradeoff_metric(records: Sequence[dict[str, Any]]) -> str | None:
    """The score the accuracy-vs-time view judges by, as a row field: the main metric of the
    final test evaluation (``test_mcc``) when every ok run has one (the held-out score the
    tutorial reports), else the main metric of the ``eval_split`` (``mcc``); None without
    an ok run."""
    ok = [r for r in records if r.get("status") == "ok" and (r.get("metrics") or {})]
    if not ok:
        return None
    main = ok[0].get("main_metric") or next(iter(ok[0]["metrics"]))
    if all(main in (r.get("test_metrics") or {}) for r in ok):
        return TEST + main
    return main


def pareto_front(points: Sequence[tuple[float, float] | None]) -> list[bool | None]:
    """For each (seconds, score) point, whether it is on the Pareto front: no other point is
    at least as fast and at least as good, and strictly better in one of the two (equal
    points are both on it). None for a missing point (not judged)."""
    out: list[bool | None] = []
    for p in points:
        if p is None:
            out.append(None)
            continue
        out.append(not any(
            q is not None and q[0] <= p[0] and q[1] >= p[1] and (q[0] < p[0] or q[1] > p[1]) for q in points
        ))
    return out


def _mark_pareto(table_rows: list[dict[str, Any]], metric: str | None) -> None:
    """``row["pareto"]``: on the front of mean epoch time and mean ``metric`` (None where a
    row lacks either, or fewer than two rows have both: no trade-off to judge)."""
    points = [
        (r["epoch_seconds"], r[metric]) if metric and r.get("epoch_seconds") is not None and r.get(metric) is not None
        else None
        for r in table_rows
    ]
    judged = sum(p is not None for p in points) >= 2
    for row, on_front in zip(table_rows, pareto_front(points)):
        row["pareto"] = on_front if judged else None
        row["_pareto_metric"] = metric if judged else None


def config_group(record: dict[str, Any], without: Iterable[str] = ("seed",)) -> str:
    """What tells a record's configuration apart, the seed aside: its flattened config
    without the keys that are not part of a run id (``data_dir``, the rendezvous)."""
    from harness.suite import NOT_IN_RUN_ID

    skip = set(NOT_IN_RUN_ID) | set(HIDDEN_KEYS) | set(without)
    flat = flatten(record.get("config", {}))
    # a null key is an absent one: a record from before the key existed matches a record with it unset
    return repr(sorted((k, repr(v)) for k, v in flat.items() if k not in skip and v is not None))


def suite_names(records: Sequence[dict[str, Any]], fallback: str = "results") -> str:
    """The suite name(s) recorded with the runs (``max_len``, ``a + b``), else ``fallback``."""
    return " + ".join(dict.fromkeys(r["suite"] for r in records if r.get("suite"))) or fallback


def table_title(records: Sequence[dict[str, Any]], fallback: str = "results") -> str:
    """``max_len (3 runs)``: what ``harness run`` and ``harness report`` title the table."""
    n = len(records)
    return f"{suite_names(records, fallback)} ({n} run{'s' if n != 1 else ''})"
