"""The accuracy cost of speed: the score against epoch time, one point per configuration.

``harness report DIR --plot [FILE] --x time`` draws it. Each point is a configuration of
the table (runs that differ only by seed grouped): its mean epoch time across, its mean
score up, with error bars spanning the 95% Student's t interval over the seeds
(:func:`harness.stats.intervals.estimate`, the table's ``±``) where there are several; a single
run's point has none. The score is :func:`harness.records.summary.tradeoff_metric`'s: the main
metric of the final test evaluation when every run has one, else the main metric after the
last epoch. The configurations on the Pareto front (:func:`harness.records.summary.pareto_front`:
no other is as fast and as accurate, and better in one) are filled and joined by a line;
the others are hollow. The table's ``pareto`` column marks the same ones.

With ``--vs KEY=VALUE`` the score's error bars are the paired ones: a configuration's bar
is its baseline's score plus the 95% interval of its paired difference from it
(:mod:`harness.records.versus`), which is what tells two points apart; the baselines have none.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from harness.errors import HarnessError
from harness.records.versus import Versus
from harness.records.summary import TEST, Figure, Row, column_label, pareto_front, rows, tradeoff_metric
from harness.render.plot import METRIC_LABELS, figure_title, independent_keys, require_matplotlib, save, shared_config

#: what ``--x`` takes for this view instead of a config key
TIME = "time"


@dataclass
class Point:
    label: str
    seconds: float
    score: float
    seconds_error: float | None  # half-width of the 95% t interval over seeds; None for one run
    score_error: float | None
    runs: int
    pareto: bool
    #: with ``--vs``: the score's paired interval ``(low, high)`` (its baseline's score plus the
    #: difference's interval); None: ``score_error`` as it is
    paired: tuple[float, float] | None = None

    @property
    def yerr(self) -> tuple[float, float]:
        """The error bar below and above the point."""
        if self.paired is not None:
            return max(0.0, self.score - self.paired[0]), max(0.0, self.paired[1] - self.score)
        return self.score_error or 0.0, self.score_error or 0.0


@dataclass
class TradeoffData:
    metric: str  # the row field: `mcc`, or `test_mcc` for the test evaluation's
    split: str  # the split it was measured on
    points: list[Point]
    seeds: int  # most runs behind one point
    shared: dict[str, Any]
    averaged: list[str]  # (none: every configuration is its own point) for the title's notes
    vs: str | None = None  # the baseline of the paired error bars (``strategy=fixed``)


def _half_width(figure: Figure) -> float | None:
    return figure.high - figure.mean if figure.kind == "t" else None


def _label(row: Row, keys: Sequence[str]) -> str:
    """``fixed, lr=0.0001``: a plugin's name bare, other keys as ``name=value``."""
    parts = []
    for key in keys:
        value = row.config.get(key)
        text = f"{value:g}" if isinstance(value, float) else str(value)
        parts.append(text if key.endswith(".name") and key.count(".") == 1 else f"{column_label(key)}={text}")
    return ", ".join(parts) or "all runs"


def plotted_split(records: Sequence[dict[str, Any]], metric: str) -> str:
    """The split the plot's score ``metric`` was measured on: the ``test_split`` for a test
    metric (``test_mcc``), else the ``eval_split``."""
    ok = [r for r in records if r.get("status") == "ok"]
    config = (ok[0].get("config") or {}) if ok else {}
    return (config.get("test_split") if metric.startswith(TEST) else config.get("eval_split")) or "validation"


def tradeoff_data(records: Sequence[dict[str, Any]], vs: Versus | None = None) -> TradeoffData:
    """What the plot shows, as data (tested without drawing); ``vs``: the paired differences
    whose intervals replace the rows' own (computed on the split the plot shows)."""
    metric = tradeoff_metric(records)
    if metric is None:
        raise HarnessError("nothing to plot: no run finished with status ok")
    table = rows(records)
    keys = independent_keys(table.keys, records)  # a bucketed-only option follows from the strategy: no label part
    drawn = [r for r in table.rows if r.mean("epoch_seconds") is not None and r.mean(metric) is not None]
    front = pareto_front([(r.mean("epoch_seconds"), r.mean(metric)) for r in drawn])
    points = [
        Point(_label(r, keys), r.mean("epoch_seconds"), r.mean(metric), _half_width(r.figure("epoch_seconds")),
              _half_width(r.figure(metric)), r.runs, bool(on))
        for r, on in zip(drawn, front)
    ]
    ok = [r for r in records if r.get("status") == "ok"]
    split = plotted_split(records, metric)
    if vs is not None:
        name = metric[len(TEST):] if metric.startswith(TEST) else metric
        for point, row in zip(points, drawn):
            found = vs.row(row.config)
            difference = found.differences.get(name) if found is not None else None
            if difference is not None:
                start = point.score - difference.delta  # the baseline's score
                point.paired = (start + difference.low, start + difference.high)
    return TradeoffData(metric, split, points, max((p.runs for p in points), default=1), shared_config(ok), [],
                        f"{column_label(vs.key)}={vs.value}" if vs is not None else None)


def write_tradeoff(
    records: Sequence[dict[str, Any]], path: str | Path, *, title: str | None = None, vs: Versus | None = None,
) -> Path:
    """Draw the score against epoch time and save it (PNG, or any format matplotlib knows)."""
    require_matplotlib()
    return save(figure(records, title=title, vs=vs), path)


def figure(records: Sequence[dict[str, Any]], *, title: str | None = None, vs: Versus | None = None) -> Any:
    """The matplotlib ``Figure`` (Agg canvas): one panel, the Pareto front marked."""
    data = tradeoff_data(records, vs)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.5, 5.4), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for on_front in (False, True):
        pts = [p for p in data.points if p.pareto == on_front]
        if not pts:
            continue
        ax.errorbar(
            [p.seconds for p in pts], [p.score for p in pts],
            xerr=[p.seconds_error or 0.0 for p in pts], yerr=[[p.yerr[0] for p in pts], [p.yerr[1] for p in pts]],
            fmt="o", markersize=7 if on_front else 6, capsize=3, elinewidth=1,
            color="tab:blue" if on_front else "0.55", markerfacecolor="tab:blue" if on_front else "white",
            label="Pareto front: no other is as fast and as good, and better in one" if on_front
            else "beaten: another is at least as fast and as good",
        )
    front = sorted((p for p in data.points if p.pareto), key=lambda p: p.seconds)
    if len(front) > 1:
        ax.plot([p.seconds for p in front], [p.score for p in front], "--", color="tab:blue", linewidth=1, alpha=0.7)
    _annotate(ax, data.points)
    _axes(ax, data)
    fig.legend(loc="outside lower center", fontsize=8, ncols=2)
    fig.suptitle(figure_title(data, title), fontsize=11)
    return fig


def _annotate(ax: Any, points: Sequence[Point]) -> None:
    """Each point's configuration beside it; labels of points that (nearly) coincide are
    stacked, not drawn over each other (seeds of configurations that all stayed at 0)."""
    scores = [p.score for p in points] or [0.0]
    span = (max(scores) - min(scores)) or 1.0
    placed: list[tuple[float, float]] = []
    for p in sorted(points, key=lambda p: (not p.pareto, p.seconds)):
        near = sum(1 for s, y in placed if abs(s - p.seconds) <= 0.3 * max(s, p.seconds) and abs(y - p.score) <= 0.03 * span)
        placed.append((p.seconds, p.score))
        ax.annotate(p.label, (p.seconds, p.score), textcoords="offset points", xytext=(6, 5 + 11 * near), fontsize=8,
                    color="black" if p.pareto else "0.35")


def _axes(ax: Any, data: TradeoffData) -> None:
    seconds = [p.seconds for p in data.points]
    if seconds and min(seconds) > 0 and max(seconds) / min(seconds) >= 8:
        ax.set_xscale("log")
    else:
        ax.set_xlim(left=0)  # a linear time axis from 0: the gap between two points reads as their ratio
    tested = data.metric.startswith(TEST)
    base = data.metric[len(TEST):] if tested else data.metric
    short = base.upper() if base == "mcc" else base
    ax.set_xlabel("training time per epoch (s, lower is better)")
    ax.set_ylabel(f"{METRIC_LABELS.get(base, base)} on {data.split} (higher is better)")
    ax.set_title(f"{short} on {data.split} {'once after training' if tested else 'after the last epoch'} "
                 "against epoch time", fontsize=10)
    ax.grid(True, alpha=0.3)
    if data.vs:
        ax.text(0.01, 0.01, f"error bars: each point's paired 95% interval against its {data.vs} baseline "
                "(same examples); the baselines have none", transform=ax.transAxes, fontsize=7, color="0.35")
