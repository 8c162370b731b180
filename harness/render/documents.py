"""``--format json``: each command's output as one JSON document on stdout.

Each document is built from what the command's table is built from (the rows of
:func:`harness.records.summary.rows`, the :class:`harness.records.compare.Comparison`,
the values of :func:`harness.render.estimates.estimate_values`, the analysis and the
plugin rows of :mod:`harness.render.listings`), so a figure means the same in both. Each
has a ``kind`` and is described by ``docs/schemas/<kind>.schema.json`` (JSON Schema draft
2020-12; tests/test_json_output.py validates every command's output against it). A number
that is not finite (NaN) is written ``null``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from typing import Any, Sequence

from harness.records.compare import Comparison, notes, outcome, record_env_diff, verdict
from harness.records.summary import Figure, epoch_rows, flatten, rows
from harness.render.console import print_text
from harness.stats.intervals import Estimate

#: the version of every document's layout; a reader checks its major
FORMAT = "1.0"


def _clean(value: Any) -> Any:
    """JSON as the standard has it: NaN and infinities are null, tuples lists, keys strings."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if hasattr(value, "item"):  # a numpy scalar
        return _clean(value.item())
    return str(value)


def dumps(document: dict[str, Any]) -> str:
    return json.dumps(_clean(document), indent=2, allow_nan=False) + "\n"


def print_document(document: dict[str, Any]) -> None:
    """The one JSON document of a command, alone on stdout."""
    print_text(dumps(document))


def _doc(kind: str, **fields: Any) -> dict[str, Any]:
    return {"kind": kind, "format": FORMAT, **fields}


def _figure(f: Figure) -> dict[str, Any]:
    return {"mean": f.mean, "n": f.n, "spread": f.spread, "low": f.low, "high": f.high, "interval": f.kind}


def report_document(records: Sequence[dict[str, Any]], title: str) -> dict[str, Any]:
    """``harness report --format json``: the table's rows, each figure with n, spread and interval."""
    table = rows(records)
    return _doc("report", title=title, keys=table.keys, metrics=table.metrics, test_metrics=table.tested,
                pareto_metric=table.pareto_metric, rows=[{
                    "config": r.config, "runs": r.runs, "status": r.status, "error": r.error or None,
                    "busy": r.busy, "one_class": r.one_class, "pareto": r.pareto,
                    "peak_memory_bytes": r.peak_memory_bytes,
                    "figures": {name: _figure(f) for name, f in r.figures.items()},
                } for r in table.rows])


def epochs_document(records: Sequence[dict[str, Any]], title: str) -> dict[str, Any]:
    """``harness report --epochs --format json``: one row per run and epoch (and its test row)."""
    keys, metrics, lines = epoch_rows(records)
    return _doc("epochs", title=title, keys=keys, metrics=metrics, rows=lines)


def cells_document(kind: str, title: str, header: Sequence[str], cells: Sequence[Sequence[Any]],
                   notes: Sequence[str] = ()) -> dict[str, Any]:
    """A table that is its cells (``harness report --vs``): one object per row, by column."""
    return _doc(kind, title=title, columns=list(header), rows=[dict(zip(header, line)) for line in cells],
                notes=list(notes))


def _estimate(e: Estimate) -> dict[str, Any]:
    return {"mean": e.mean, "n": e.n, "spread": e.std, "low": e.low, "high": e.high}


def compare_document(comp: Comparison, base: str, new: str) -> dict[str, Any]:
    """``harness compare --format json``: the environment differences, each configuration's
    figures and verdict, the notes, and the exit code with its reason (the command's own)."""
    code, reason = outcome(comp)
    configurations = []
    for p in comp.pairs:
        item: dict[str, Any] = {"run_ids": p.run_ids, "config": {k: p.config.get(k) for k in comp.keys},
                                "side": p.side, "metric": p.metric, "verdict": verdict(p),
                                "problems": p.problems, "within_noise": p.within_noise, "busy": p.busy}
        for name, diff, test in (("time", p.time, p.time_test), ("score", p.score, p.score_test)):
            item[name] = None if diff is None else {
                "base": _estimate(diff.base), "new": _estimate(diff.new), "ratio": diff.ratio, "delta": diff.delta,
                "p": test[0], "test": test[1] or None}
        item["paired"] = None if p.paired is None else {
            k: v for k, v in asdict(p.paired).items() if k in ("delta", "low", "high", "p", "kind", "examples")}
        item["steps"] = None if p.steps is None else asdict(p.steps)
        configurations.append(item)
    return _doc(
        "compare", base=base, new=new, alpha=comp.alpha, max_slowdown=comp.max_slowdown,
        max_metric_drop=comp.max_metric_drop, keys=comp.keys,
        environment={"from_files": {"base": comp.environment_files[0], "new": comp.environment_files[1]},
                     "differences": [{"entry": k, "base": b, "new": n} for k, b, n in comp.environment]
                     + [{"entry": k, "base": b or None, "new": n or None} for k, (b, n) in record_env_diff(comp).items()]},
        configurations=configurations, notes=notes(comp), exit={"code": code, "reason": reason},
    )


def validate_document(suite_name: str, description: str, configs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """``harness validate --format json``: the expanded runs, each its run id and resolved config."""
    return _doc("validate", suite=suite_name, description=description or None,
                runs=[{"run_id": c["run_id"], "config": {k: v for k, v in c.items() if k != "run_id"},
                       "flat": {k: v for k, v in flatten(c).items() if k != "run_id"}} for c in configs])


def estimate_document(suite_name: str, header: Sequence[str], values: Sequence[Sequence[Any]],
                      total_seconds: float, notes: Sequence[str]) -> dict[str, Any]:
    """``harness estimate --format json``: each run's predicted figures (the csv's columns)."""
    return _doc("estimate", suite=suite_name, columns=list(header), runs=[dict(zip(header, v)) for v in values],
                total_seconds=total_seconds, notes=list(notes))


def plugins_document(registry: Any) -> dict[str, Any]:
    """``harness plugins --format json``: each family's plugins, as the tables list them."""
    from harness.render.listings import plugin_rows  # lazy: it imports the plugin bases (torch)

    return _doc("plugins", families=plugin_rows(registry))


def analysis_document(analysis: Any) -> dict[str, Any]:
    """``harness analyze --format json``: the profile, the histogram, the cost per MAX_LEN and
    strategy, and the notes the table prints under it."""
    from harness.render.listings import _analysis_notes  # lazy: it imports the plugin bases (torch)

    return _doc("analyze", **analysis.to_dict(), max_positions=analysis.max_positions,
                strategies=list(analysis.strategies),
                truncated={str(m): analysis.truncated(m) for m in analysis.max_lens()},
                histogram=[{"low": lo, "high": hi, "count": c} for lo, hi, c in analysis.histogram()],
                notes=_analysis_notes(analysis))
