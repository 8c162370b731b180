"""``harness estimate``'s table, notes and plot: every run's predicted cost, before it runs.

The cells come from :class:`harness.estimate.SuiteEstimate` (rich, markdown and csv alike,
through :mod:`harness.render.tables`); the plot is the results plot's epoch-time panel
(:mod:`harness.render.plot`'s axes) with the predicted epoch time of each configuration and
its 95% interval as the error bar, titled as predicted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from harness.records.summary import column_label, flatten, varied_keys
from harness.render.plot import AXIS_LABELS, _x_axis, require_matplotlib, save
from harness.render.tables import _bytes, _value

#: the config keys a table of one configuration still shows
SHOWN = ("strategy.name", "max_len")


def _keys(estimates: Sequence[Any]) -> list[str]:
    records = [{"config": e.run.record_config()} for e in estimates]
    varied = varied_keys(records, exclude=("seed",))
    return varied or [k for k in SHOWN if k in flatten(records[0]["config"])] if records else []


def _interval(value: tuple[float, float, float], digits: int = 2) -> str:
    return f"{value[0]:.{digits}f} [{value[1]:.{digits}f}, {value[2]:.{digits}f}]"


def _money(seconds: float, price: float) -> str:
    return f"{seconds / 3600 * price:.4f}" if seconds / 3600 * price < 1 else f"{seconds / 3600 * price:.2f}"


def estimate_cells(suite: Any, price: float | None = None) -> tuple[list[str], list[list[str]], list[str | None], int]:
    """Header, text cells, a style per row (a run that does not fit: red) and the first
    right-aligned column. Seconds with their 95% interval; ``peak mem``: the predicted peak
    (the figure the records call ``peak_memory_bytes``) and whether it fits the limit."""
    keys = _keys(suite.runs)
    header = [column_label(k) for k in keys] + ["epoch s [95%]", "run s", "eval s", "real tok/s", "peak mem", "fits"]
    header += ["cost/epoch", "cost/run"] if price is not None else []
    header += ["note"]
    cells, styles = [], []
    for e in suite.runs:
        flat = flatten(e.run.record_config())
        line = [_value(flat.get(k)) for k in keys]
        peak = e.peak_memory
        line += [
            _interval(e.epoch_seconds), f"{e.run_seconds:.1f}", f"{e.eval_seconds[0]:.2f}",
            f"{e.tokens_per_second:.0f}",
            "—" if peak is None else f"{_bytes(int(peak[0]))} [{_bytes(int(peak[1]))}, {_bytes(int(peak[2]))}]",
            {True: "yes", False: "NO", None: "—"}[e.fits],
        ]
        if price is not None:
            line += [_money(e.epoch_seconds[0], price), _money(e.run_seconds, price)]
        line.append("extrapolated: " + "; ".join(e.extrapolated) if e.extrapolated else "")
        cells.append(line)
        styles.append("red" if e.fits is False else "yellow" if e.extrapolated else None)
    return header, cells, styles, len(keys)


def estimate_csv(suite: Any, price: float | None = None) -> tuple[list[str], list[list[Any]]]:
    """Plain numbers: seconds, bytes, fractions; each interval as ``_low``/``_high``; empty
    where :func:`estimate_values` has None."""
    header, lines = estimate_values(suite, price)
    return header, [["" if v is None else v for v in line] for line in lines]


def estimate_values(suite: Any, price: float | None = None) -> tuple[list[str], list[list[Any]]]:
    """The csv's and the JSON document's columns and values (None: not predicted)."""
    keys = _keys(suite.runs)
    header = [column_label(k) for k in keys] + [
        "run_id", "epoch_seconds", "epoch_seconds_low", "epoch_seconds_high", "train_seconds", "eval_seconds",
        "test_seconds", "run_seconds", "real_tokens_per_second", "peak_memory_bytes", "peak_memory_low",
        "peak_memory_high", "memory_kind", "memory_limit_bytes", "fits", "extrapolated",
    ] + (["cost_per_epoch", "cost_per_run"] if price is not None else [])
    lines = []
    for e in suite.runs:
        flat = flatten(e.run.record_config())
        peak = e.peak_memory or (None, None, None)
        line = [flat.get(k) for k in keys] + [
            e.run.run_id, *e.epoch_seconds, e.train_seconds[0], e.eval_seconds[0], e.test_seconds, e.run_seconds,
            e.tokens_per_second, *(None if v is None else int(v) for v in peak), e.memory_kind, e.memory_limit,
            e.fits, "; ".join(e.extrapolated),
        ]
        if price is not None:
            line += [e.epoch_seconds[0] / 3600 * price, e.run_seconds / 3600 * price]
        lines.append(line)
    return header, lines


def estimate_notes(suite: Any, price: float | None = None) -> list[str]:
    """The calibrations used, the whole suite's time (and cost), the runs that do not fit."""
    total = suite.total_seconds
    lines = list(suite.notes)
    money = f", {_money(total, price)} at {price:g} per hour" if price is not None else ""
    lines.append(f"the suite: {len(suite.runs)} run{'s' if len(suite.runs) != 1 else ''}, predicted {_duration(total)}{money} (set-up, warm-up, "
                 f"epochs and evaluations; each run's process start not included); estimated in {suite.seconds:.1f} s")
    for e in suite.runs:
        if e.fits is False:
            lines.append(f"run {e.run.run_id}: predicted peak memory {_bytes(int(e.peak_memory[0]))} is more than "
                         f"the limit of {_bytes(e.memory_limit)}")
    return lines


def _duration(seconds: float) -> str:
    minutes, rest = divmod(int(round(seconds)), 60)
    return f"{minutes} min {rest} s" if minutes else f"{seconds:.1f} s"


def write_estimate_plot(suite: Any, path: str | Path, title: str | None = None) -> Path:
    """Predicted epoch time against MAX_LEN, one line per value of the other keys that
    vary, each point's 95% interval as its error bar; titled as predicted."""
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    keys = [k for k in _keys(suite.runs) if k not in ("max_len", "seed")]
    lines: dict[str, dict[int, list[tuple[float, float, float]]]] = {}
    for e in suite.runs:
        flat = flatten(e.run.record_config())
        label = " / ".join(_value(flat.get(k)) for k in keys) or "predicted"
        lines.setdefault(label, {}).setdefault(int(flat["max_len"]), []).append(e.epoch_seconds)
    fig = Figure(figsize=(7.5, 4.6), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for label, points in lines.items():
        xs = sorted(points)
        mid = [sum(p[0] for p in points[x]) / len(points[x]) for x in xs]
        low = [m - min(p[1] for p in points[x]) for m, x in zip(mid, xs)]
        high = [max(p[2] for p in points[x]) - m for m, x in zip(mid, xs)]
        ax.errorbar(xs, mid, yerr=[low, high], marker="o", capsize=3, linewidth=1.6, markersize=5, linestyle="--",
                    label=label)
    _x_axis(ax, sorted({x for p in lines.values() for x in p}), AXIS_LABELS["max_len"])
    ax.set_ylabel("predicted training time per epoch (s)")
    ax.set_ylim(bottom=0)
    ax.set_title("PREDICTED epoch time, 95% interval (harness estimate)")
    if len(lines) > 1:
        ax.legend(title=" / ".join(column_label(k) for k in keys) or None)
    calibrations = sorted({e.calibration.describe() for e in suite.runs})
    fig.suptitle((f"{title}: " if title else "") + "predicted on " + "; ".join(calibrations), fontsize=10)
    return save(fig, path)
