"""The plot: epoch time and the main metric against a swept numeric key (MAX_LEN by default).

Two panels side by side, one line per value of the other keys that vary (strategy, head,
...): the mean over seeds, with error bars that span its 95% confidence interval
(Student's t with n - 1 degrees of freedom, :func:`harness.stats.intervals.estimate`: the same
interval the tables show as ``±``); a point of one run has no error bar. It reads plain run
records, like the tables, and draws with matplotlib's Agg canvas directly: matplotlib is
imported only here, only when a plot is drawn, and the global pyplot backend is left alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from harness.errors import HarnessError, install_hint, no_room
from harness.records.summary import column_label, find_key, flatten, main_metric, summarize, varied_keys
from harness.stats.intervals import estimate

#: the axis a suite most often sweeps; preferred when several numeric keys vary
PREFERRED_X = "max_len"

AXIS_LABELS = {
    "max_len": "MAX_LEN (tokens per example)",
    "batch_size": "batch size (examples)",
    "lr": "learning rate",
    "epochs": "epochs",
}
METRIC_LABELS = {
    "mcc": "MCC (Matthews correlation)",
    "accuracy": "accuracy",
    "f1": "F1 (positive class)",
    "macro_f1": "macro F1",
}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _plotted(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Runs with at least one timed epoch (failed runs have none)."""
    return [r for r in records if r.get("epochs")]


def numeric_swept_keys(records: Sequence[dict[str, Any]]) -> list[str]:
    """Config keys that vary across the runs and hold numbers only (seed excluded)."""
    flat = [flatten(r.get("config", {})) for r in records]
    out = []
    for key in varied_keys(records, exclude=("seed",)):
        values = [f.get(key) for f in flat]  # a key some runs lack (a dataset's option) is no axis
        if all(_is_number(v) for v in values):
            out.append(key)
    return out


def sweep_key(records: Sequence[dict[str, Any]]) -> str | None:
    """The x axis ``harness run`` plots by: MAX_LEN when swept, else the first swept
    numeric key, else None (nothing to plot a line against)."""
    keys = numeric_swept_keys(_plotted(records))
    if not keys:
        return None
    return PREFERRED_X if PREFERRED_X in keys else keys[0]


@dataclass
class Line:
    label: str
    times: dict[float, list[float]] = field(default_factory=dict)
    scores: dict[float, list[float]] = field(default_factory=dict)


@dataclass
class PlotData:
    x: str
    groups: list[str]
    averaged: list[str]  # keys that vary but are neither x nor a group: averaged over
    metric_names: list[str]
    lines: list[Line]
    seeds: int  # most seeds behind one point
    shared: dict[str, Any]


def plot_data(records: Sequence[dict[str, Any]], x: str | None = None, group: Sequence[str] | None = None) -> PlotData:
    """What the plot shows, as data (tested without drawing)."""
    runs = _plotted(records)
    if not runs:
        raise HarnessError("nothing to plot: no run finished an epoch")
    numeric = numeric_swept_keys(runs)
    if x is None:
        x_key = sweep_key(runs)
        if x_key is None:
            swept = varied_keys(runs, exclude=("seed",))
            raise HarnessError(
                "nothing to plot against: no numeric config key varies across these runs"
                + (f" (varied: {', '.join(column_label(k) for k in swept)})" if swept else "")
            )
    else:
        x_key = find_key(x, runs, "--x")
        if x_key not in numeric:
            why = "does not vary" if x_key not in varied_keys(runs) else "is not a number in every run"
            options = f"; numeric keys that vary: {', '.join(column_label(k) for k in numeric)}" if numeric else ""
            raise HarnessError(f"--x {x}: {column_label(x_key)} {why} across these runs{options}")
    others = [k for k in varied_keys(runs, exclude=("seed",)) if k != x_key]
    if group:
        groups = []
        for g in group:
            key = find_key(g, runs, "--group")
            if key == x_key:
                raise HarnessError(f"--group {g}: it is the x axis already")
            if key not in others:
                raise HarnessError(f"--group {g}: {column_label(key)} does not vary across these runs")
            groups.append(key)
    else:
        groups = independent_keys(others, runs)
    # keys that follow from a group key (a bucketed-only option follows from the strategy)
    # are neither lines of their own nor averaged over
    averaged = [k for k in independent_keys(others, runs) if k not in groups]

    lines: dict[str, Line] = {}
    metric_names: list[str] = []
    seeds: dict[tuple, set] = {}
    for r in runs:
        flat = flatten(r.get("config", {}))
        label = _line_label(flat, groups, runs)
        line = lines.setdefault(label, Line(label))
        xv = flat[x_key]
        seconds = summarize(r)["epoch_seconds"]
        line.times.setdefault(xv, []).append(seconds)
        seeds.setdefault((label, xv), set()).add(flat.get("seed"))
        metric = main_metric(r)
        if r.get("status") == "ok" and metric and metric in (r.get("metrics") or {}):
            line.scores.setdefault(xv, []).append(r["metrics"][metric])
            if metric not in metric_names:
                metric_names.append(metric)
    return PlotData(x_key, groups, averaged, metric_names, list(lines.values()),
                    max((len(s) for s in seeds.values()), default=1), shared_config(runs))


def shared_config(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """What every run shares (flattened config keys), and the device's name when it is one:
    what a plot's title says."""
    first = flatten(runs[0].get("config", {}))
    shared = {k: v for k, v in first.items() if k not in varied_keys(runs)}
    device_names = {(r.get("env") or {}).get("device_name") for r in runs}
    if len(device_names) == 1 and None not in device_names:
        shared["device_name"] = device_names.pop()
    return shared


def independent_keys(keys: Sequence[str], runs: Sequence[dict[str, Any]]) -> list[str]:
    """``keys`` without those whose value is a function of an earlier key's value."""
    flats = [flatten(r.get("config", {})) for r in runs]
    kept: list[str] = []
    for key in keys:
        determined = False
        for earlier in kept:
            seen: dict[str, str] = {}
            if all(seen.setdefault(repr(f.get(earlier)), repr(f.get(key))) == repr(f.get(key)) for f in flats):
                determined = True
                break
        if not determined:
            kept.append(key)
    return kept


def _line_label(flat: dict[str, Any], groups: list[str], runs: Sequence[dict[str, Any]]) -> str:
    if len(groups) == 1:
        return str(flat.get(groups[0]))
    if groups:
        return ", ".join(f"{column_label(k)}={flat.get(k)}" for k in groups)
    # a single line: name it by what the runs share, so the legend still says what it is
    return " / ".join(str(flat.get(k)) for k in ("strategy.name", "head.name") if k in flat) or "all runs"


def _mean_ci(values: list[float]) -> tuple[float, float]:
    """The mean and the half-width of its 95% Student's t interval (0 for a single value)."""
    e = estimate(values)
    return e.mean, e.half_width or 0.0


def write_plot(
    records: Sequence[dict[str, Any]], path: str | Path, *, x: str | None = None,
    group: Sequence[str] | None = None, title: str | None = None,
) -> Path:
    """Draw the plot and save it (PNG, or any format matplotlib knows by the suffix)."""
    require_matplotlib()
    return save(figure(records, x=x, group=group, title=title), path)


def require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise HarnessError(f"plots need matplotlib: {install_hint('plot')}") from None


def save(fig: Any, path: str | Path) -> Path:
    """Write a figure (PNG, or any format matplotlib knows by the suffix)."""
    path = Path(path)
    try:
        fig.savefig(path, dpi=110)
    except (OSError, ValueError) as exc:
        raise no_room(exc) or HarnessError(f"--plot {path}: cannot write it ({exc})") from None
    return path


def figure(
    records: Sequence[dict[str, Any]], *, x: str | None = None, group: Sequence[str] | None = None,
    title: str | None = None,
) -> Any:
    """The matplotlib ``Figure`` (Agg canvas): two panels, one legend, a title."""
    data = plot_data(records, x, group)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.6), layout="constrained")
    FigureCanvasAgg(fig)
    ax_time, ax_metric = fig.subplots(1, 2)
    xs_all = sorted({xv for line in data.lines for xv in line.times})
    markers = "osD^vP*Xh<>"
    handles = []
    for i, line in enumerate(data.lines):
        style = dict(marker=markers[i % len(markers)], capsize=3, linewidth=1.6, markersize=5)
        xs = sorted(line.times)
        stats = [_mean_ci(line.times[v]) for v in xs]
        h = ax_time.errorbar(xs, [m for m, _ in stats], yerr=[s for _, s in stats] if data.seeds > 1 else None,
                             label=line.label, **style)
        handles.append(h)
        xs_m = sorted(line.scores)
        if xs_m:
            stats = [_mean_ci(line.scores[v]) for v in xs_m]
            ax_metric.errorbar(xs_m, [m for m, _ in stats], yerr=[s for _, s in stats] if data.seeds > 1 else None,
                               color=h[0].get_color(), **style)

    for ax in (ax_time, ax_metric):
        _x_axis(ax, xs_all, AXIS_LABELS.get(data.x, column_label(data.x)))
    ax_time.set_ylabel("training time per epoch (s)")
    ax_time.set_ylim(bottom=0)
    ax_time.set_title("epoch time (lower is better)")
    if data.metric_names:
        names = " / ".join(METRIC_LABELS.get(m, m) for m in data.metric_names)
        split = data.shared.get("eval_split", "validation")
        ax_metric.set_ylabel(f"{names} on {split}")
        short = " / ".join(m.upper() if m == "mcc" else m for m in data.metric_names)
        ax_metric.set_title(f"{short} after the last epoch (higher is better)")
    else:
        ax_metric.text(0.5, 0.5, "no run finished with status ok", ha="center", va="center",
                       transform=ax_metric.transAxes)
        ax_metric.set_title("main metric")

    if len(data.groups) == 1:
        legend_title = column_label(data.groups[0])
    else:
        legend_title = None if data.groups else " / ".join(k for k in ("strategy", "head") if f"{k}.name" in data.shared)
    fig.legend(handles, [h.get_label() for h in handles], loc="outside right upper", title=legend_title)
    fig.suptitle(figure_title(data, title), fontsize=11)
    return fig


def _x_axis(ax: Any, xs: Sequence[float], label: str) -> None:
    """Ticks at the swept values, as plain numbers; doubling sweeps (32, 64, 128, ...) on a
    log-2 axis, where they are evenly spaced."""
    from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter

    if all(v > 0 for v in xs) and len(xs) > 2 and max(xs) / min(xs) >= 8:
        ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(xs))
    ax.xaxis.set_minor_locator(NullLocator())
    fmt = ScalarFormatter()
    fmt.set_scientific(False)
    ax.xaxis.set_major_formatter(fmt)
    ax.set_xlabel(label)
    ax.grid(True, alpha=0.3)


def figure_title(data: Any, title: str | None) -> str:
    """``max_len: cola · minilm · cpu (...) · bf16 · batch 32``, and a line of notes: from
    ``data.shared`` (the keys every run shares), ``data.seeds`` and ``data.averaged``."""
    s = data.shared
    parts = [str(s[k]) for k in ("dataset.name",) if k in s]
    if "model" in s:
        parts.append(str(s["model"]) + (" (random init)" if s.get("init") == "random" else ""))
    if "device" in s:
        name = s.get("device_name")
        parts.append(f"{s['device']} ({name})" if name and name != s["device"] else str(s["device"]))
    if "precision" in s:
        parts.append(str(s["precision"]))
    if "batch_size" in s:
        parts.append(f"batch {s['batch_size']}")
    head = f"{title}: " if title else ""
    text = head + " · ".join(parts)
    notes = []
    if data.seeds > 1:
        notes.append(f"mean and 95% t interval over {data.seeds} seeds")
    if data.averaged:
        notes.append("averaged over " + ", ".join(column_label(k) for k in data.averaged))
    return text + (f"\n({'; '.join(notes)})" if notes else "")
