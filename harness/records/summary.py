"""Summaries of run records: pure functions, no printing, no torch.

Every renderer (the rich, markdown and csv tables, the plot, ``harness compare``, the
pytest fixture's ``extra_info``) derives its figures here, from the plain records of
``results.jsonl``, so a figure means the same thing wherever it is shown:

- :func:`summarize`: one run's derived figures (mean epoch time, real tokens/s, padding
  waste, peak memory, TFLOP/s) from its epochs;
- :func:`rows`: one :class:`Row` per configuration, runs that differ only by seed grouped,
  each figure a :class:`Figure` (mean, n, sample standard deviation, 95% interval);
- :func:`varied_keys`, :func:`flatten`, :func:`column_label`: which config keys tell the
  runs apart, and what a column is called; :func:`main_metric`: the one rule for a run's
  main metric;
- :func:`table_title`: ``max_len (9 runs)``;
- :func:`pareto_front`, :func:`tradeoff_metric`: the accuracy cost of speed, which
  configurations no other beats on both epoch time and score (the table's ``pareto``
  column and ``harness report --plot --x time``).

The statistics behind the figures (Student's t, Welch's test) are :mod:`harness.stats.intervals`'.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal, Sequence

from harness.config.keys import run_id_keys
from harness.errors import HarnessError
from harness.stats.intervals import Estimate, estimate

#: config keys a one-configuration table still shows, so that it says what ran
ALWAYS_SHOWN = ("strategy.name", "max_len")


def hidden(key: str) -> bool:
    """A config key never shown as a column nor used to tell configurations apart: one that
    is not part of a run id (where the data is, a time to target, the rendezvous)."""
    return any(key == k or key.startswith(k + ".") for k in run_id_keys()[0])


def main_metric(record: dict[str, Any]) -> str | None:
    """A run's main metric: the one it names (``main_metric``), else its first metric."""
    return record.get("main_metric") or next(iter(record.get("metrics") or {}), None)


#: dense bf16 tensor-core peak in TFLOP/s, by a substring of the device name
BF16_PEAK_TFLOPS = {
    "H200": 989.0,
    "H100 SXM": 989.0,
    "H100 80GB HBM3": 989.0,
    "H100 PCIe": 756.0,
    "H100": 989.0,
    "A100": 312.0,
    "L40S": 362.0,
    "A10G": 70.0,
    "L4": 121.0,
    "RTX 4090": 165.0,
    "V100": 125.0,  # fp16; no bf16
    "T4": 65.0,  # fp16; no bf16
}


def bf16_peak_tflops(device_name: str) -> float | None:
    for key, value in BF16_PEAK_TFLOPS.items():
        if key in device_name:
            return value
    return None


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
        # harness run --estimate: the epoch time predicted before the run trained
        "predicted_epoch_seconds": (record.get("estimate") or {}).get("epoch_seconds"),
    }


def _peak_share(record: dict[str, Any], tflops: float | None) -> float | None:
    """Model TFLOP/s over the GPU's dense bf16 peak (None on a CPU or an unknown card)."""
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
    skip = set(exclude)
    return [k for k in keys if k not in skip and not hidden(k) and len({repr(f.get(k)) for f in flat}) > 1]


def column_label(key: str) -> str:
    """``strategy.name`` -> ``strategy``; ``strategy.options.truncation`` -> ``truncation``."""
    parts = key.split(".")
    if parts[-1] == "name" and len(parts) == 2:
        return parts[0]
    if len(parts) >= 3 and parts[1] == "options":
        return ".".join(parts[2:])
    return key


def find_key(name: str, records: Sequence[dict[str, Any]], option: str) -> str:
    """A dotted config key from what a user typed: the key itself or its column label
    (``strategy`` for ``strategy.name``, ``pad_to_multiple_of`` for an option)."""
    known: list[str] = []
    for r in records:
        known += [k for k in flatten(r.get("config", {})) if k not in known]
    if name in known:
        return name
    matches = [k for k in known if column_label(k) == name or k.endswith("." + name)]
    if len(matches) == 1:
        return matches[0]
    swept = varied_keys(records, exclude=("seed",))
    hint = f"keys that vary: {', '.join(column_label(k) for k in swept)}" if swept else "no key varies"
    if matches:
        raise HarnessError(f"{option} {name}: ambiguous, it matches {', '.join(matches)}; {hint}")
    raise HarnessError(f"{option} {name}: not a config key of these runs; {hint}")


#: the per-run figures a row averages
ROW_FIELDS = ("epoch_seconds", "eval_seconds", "real_tokens_per_second", "padding_waste", "tflops",
              "peak_share", "compile_seconds", "train_loss", "predicted_epoch_seconds")


@dataclass(frozen=True)
class Figure:
    """One figure of a row: the mean over its runs, how many, their sample standard
    deviation, and a 95% interval ``[low, high]`` of ``kind`` ``t`` (Student's t over the
    row's runs, n >= 2), ``bootstrap`` (one run's metric: its bootstrap interval over the
    evaluation set) or none."""

    mean: float | None
    n: int = 0
    spread: float | None = None
    low: float | None = None
    high: float | None = None
    kind: Literal["t", "bootstrap"] | None = None

    @classmethod
    def of(cls, est: Estimate) -> "Figure":
        return cls(est.mean, est.n, est.std, est.low, est.high, "t" if est.half_width is not None else None)


@dataclass
class Row:
    """One configuration of a table: the values of its keys, its runs' status and flags, and
    its figures by name (:data:`ROW_FIELDS`, each metric, each test metric as ``test_<name>``)."""

    config: dict[str, Any]
    runs: int
    status: str
    error: str
    busy: int
    one_class: int
    peak_memory_bytes: int | None
    figures: dict[str, Figure] = field(default_factory=dict)
    #: on the Pareto front of epoch time and the table's score; None where not judged
    pareto: bool | None = None

    def figure(self, name: str) -> Figure:
        return self.figures.get(name) or Figure(None)

    def mean(self, name: str) -> float | None:
        return self.figure(name).mean


@dataclass
class Table:
    """:func:`rows`: the config keys that tell the rows apart, the rows, the metric names the
    runs report (each run's main metric first), those of their test evaluation, and the score
    the Pareto marks judge by (None: not judged)."""

    keys: list[str]
    rows: list[Row]
    metrics: list[str]
    tested: list[str]
    pareto_metric: str | None

    @property
    def metric_fields(self) -> list[str]:
        """The figure names of every metric column: ``mcc``, ``test_mcc``."""
        return [*self.metrics, *(TEST + m for m in self.tested)]


def _bootstrap(figure: Figure, ok: Sequence[dict[str, Any]], metric: str, source: str = "metrics_ci95") -> Figure:
    """A metric of a single ok run, with its bootstrap interval over the evaluated set if
    recorded (``source``: ``metrics_ci95``, or ``test_metrics_ci95`` for a test metric)."""
    if figure.n != 1 or len(ok) != 1:
        return figure
    interval = (ok[0].get(source) or {}).get(metric)
    if isinstance(interval, (list, tuple)) and len(interval) == 2 and None not in interval:
        return Figure(figure.mean, 1, None, float(interval[0]), float(interval[1]), "bootstrap")
    return figure


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


def rows(records: Sequence[dict[str, Any]]) -> Table:
    """The table: one :class:`Row` per configuration (records differing only by seed are one
    row, each figure their mean with n, spread and 95% interval)."""
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
        row = Row(
            config={k: flat.get(k) for k in keys}, runs=len(members),
            status="/".join(sorted({m.get("status", "?") for m in members})),
            error="; ".join(sorted({m["error"] for m in members if m.get("error")})),
            busy=sum(1 for m in members if m.get("busy")), one_class=sum(1 for m in members if m.get("one_class")),
            peak_memory_bytes=max((s["peak_memory_bytes"] or 0 for s in sums), default=None) or None,
        )
        row.figures = {name: Figure.of(estimate(s[name] for s in sums)) for name in ROW_FIELDS}
        for name in names:
            row.figures[name] = _bootstrap(Figure.of(estimate((m.get("metrics") or {}).get(name) for m in ok)), ok, name)
        for name in tested:
            figure = Figure.of(estimate((m.get("test_metrics") or {}).get(name) for m in ok))
            row.figures[TEST + name] = _bootstrap(figure, ok, name, "test_metrics_ci95")
        out.append(row)
    metric = tradeoff_metric(records)
    judged = _mark_pareto(out, metric)
    return Table(keys, out, names, tested, metric if judged else None)


# ------------------------------------------------------------- the accuracy cost of speed


def tradeoff_metric(records: Sequence[dict[str, Any]]) -> str | None:
    """The score the accuracy-vs-time view judges by, as a row field: the main metric of the
    final test evaluation (``test_mcc``) when every ok run has one (the held-out score the
    tutorial reports), else the main metric of the ``eval_split`` (``mcc``); None without
    an ok run."""
    ok = [r for r in records if r.get("status") == "ok" and (r.get("metrics") or {})]
    if not ok:
        return None
    main = main_metric(ok[0])
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


def _mark_pareto(table_rows: list[Row], metric: str | None) -> bool:
    """Each row's ``pareto``: on the front of mean epoch time and mean ``metric`` (None where a
    row lacks either); whether it was judged (at least two rows have both)."""
    points = [
        (r.mean("epoch_seconds"), r.mean(metric))
        if metric and r.mean("epoch_seconds") is not None and r.mean(metric) is not None else None
        for r in table_rows
    ]
    judged = sum(p is not None for p in points) >= 2
    for row, on_front in zip(table_rows, pareto_front(points)):
        row.pareto = on_front if judged else None
    return judged


def config_group(record: dict[str, Any], without: Iterable[str] = ("seed",)) -> str:
    """What tells a record's configuration apart, the seed aside: its flattened config
    without the keys that are not part of a run id (``data_dir``, the rendezvous)."""
    skip = set(without)
    flat = flatten(record.get("config", {}))
    # a null key is an absent one: a record from before the key existed matches a record with it unset
    return repr(sorted((k, repr(v)) for k, v in flat.items() if k not in skip and not hidden(k) and v is not None))


def suite_names(records: Sequence[dict[str, Any]], fallback: str = "results") -> str:
    """The suite name(s) recorded with the runs (``max_len``, ``a + b``), else ``fallback``."""
    return " + ".join(dict.fromkeys(r["suite"] for r in records if r.get("suite"))) or fallback


def table_title(records: Sequence[dict[str, Any]], fallback: str = "results") -> str:
    """``max_len (3 runs)``: what ``harness run`` and ``harness report`` title the table."""
    n = len(records)
    return f"{suite_names(records, fallback)} ({n} run{'s' if n != 1 else ''})"
