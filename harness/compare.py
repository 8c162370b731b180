"""``harness compare BASE NEW``: the same runs in two results directories, side by side.

Runs are matched by ``run_id``, the hash of the resolved configuration (the harness
version is not part of it, so the same suite run by two versions of the harness matches
run by run). For each pair: epoch time new/base, and the main metric's change. A pair
crosses a threshold when NEW is slower than ``--max-slowdown`` allows, when its metric
dropped by more than ``--max-metric-drop``, or when it failed where BASE did not; runs
present on one side only are listed, and do not fail the comparison.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

from harness.errors import HarnessError
from harness.summary import column_label, flatten, summarize, varied_keys

#: environment fields worth a warning when they differ between BASE and NEW
ENV_KEYS = ("device_name", "torch", "transformers", "cuda", "python", "harness_version", "harness_git_sha")


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


@dataclass
class Pair:
    run_id: str
    config: dict[str, Any]  # flattened
    base: dict[str, Any] | None
    new: dict[str, Any] | None
    metric: str | None = None
    base_seconds: float | None = None
    new_seconds: float | None = None
    base_score: float | None = None
    new_score: float | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float | None:
        if self.base_seconds and self.new_seconds is not None:
            return self.new_seconds / self.base_seconds
        return None

    @property
    def delta(self) -> float | None:
        if self.base_score is None or self.new_score is None:
            return None
        return self.new_score - self.base_score

    @property
    def side(self) -> str:
        return "both" if self.base and self.new else ("BASE" if self.base else "NEW")


@dataclass
class Comparison:
    keys: list[str]  # config keys that tell the runs apart (columns)
    pairs: list[Pair]
    env_diff: dict[str, tuple[Any, Any]]
    max_slowdown: float | None
    max_metric_drop: float | None

    @property
    def failed(self) -> list[Pair]:
        return [p for p in self.pairs if p.problems]

    @property
    def matched(self) -> list[Pair]:
        return [p for p in self.pairs if p.side == "both"]


def _score(record: dict[str, Any], metric: str | None) -> float | None:
    if record.get("status") != "ok" or metric is None:
        return None
    value = (record.get("metrics") or {}).get(metric)
    return float(value) if isinstance(value, (int, float)) else None


def compare(
    base: Sequence[dict[str, Any]], new: Sequence[dict[str, Any]], *,
    max_slowdown: float | None = None, max_metric_drop: float | None = None, metric: str | None = None,
) -> Comparison:
    base_by_id = {r["run_id"]: r for r in base}
    new_by_id = {r["run_id"]: r for r in new}
    order = list(dict.fromkeys([*base_by_id, *new_by_id]))
    everything = [*base, *new]
    if metric is not None and not any(metric in (r.get("metrics") or {}) for r in everything):
        known = sorted({m for r in everything for m in (r.get("metrics") or {})})
        raise HarnessError(f"--metric {metric}: no run reports it; metrics recorded: {', '.join(known) or 'none'}")
    pairs = []
    for rid in order:
        b, n = base_by_id.get(rid), new_by_id.get(rid)
        either = b or n
        pair = Pair(rid, flatten(either.get("config", {})), b, n)
        pair.metric = metric or either.get("main_metric") or next(iter(either.get("metrics") or {}), None)
        if b and n:
            pair.base_seconds = summarize(b)["epoch_seconds"]
            pair.new_seconds = summarize(n)["epoch_seconds"]
            pair.base_score, pair.new_score = _score(b, pair.metric), _score(n, pair.metric)
            _judge(pair, max_slowdown, max_metric_drop)
        pairs.append(pair)
    if not any(p.side == "both" for p in pairs):
        raise HarnessError(
            f"nothing to compare: no run in NEW has the configuration of a run in BASE "
            f"({len(base_by_id)} in BASE, {len(new_by_id)} in NEW); run the same suite, with the same "
            "--set options, on both sides (the device and precision are part of a run's configuration)"
        )
    keys = varied_keys(everything)
    return Comparison(keys, pairs, _env_diff(base, new), max_slowdown, max_metric_drop)


def _judge(pair: Pair, max_slowdown: float | None, max_metric_drop: float | None) -> None:
    b_status, n_status = pair.base.get("status"), pair.new.get("status")
    if n_status != "ok" and b_status == "ok":
        pair.problems.append(f"{n_status} in NEW" + (f" ({pair.new.get('error')})" if pair.new.get("error") else ""))
    ratio = pair.ratio
    if max_slowdown is not None and ratio is not None and ratio - 1 > max_slowdown + 1e-12:
        pair.problems.append(f"{ratio - 1:+.0%} epoch time (limit +{max_slowdown:.0%})")
    delta = pair.delta
    if max_metric_drop is not None and delta is not None and -delta > max_metric_drop + 1e-12:
        pair.problems.append(f"{pair.metric} {delta:+.3f} (limit -{max_metric_drop:g})")


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


def run_label(pair: Pair, keys: Sequence[str]) -> str:
    """``3f2a9c1e0b7d (strategy=fixed max_len=64 seed=1)``: how a message names a run."""
    desc = " ".join(f"{column_label(k)}={pair.config.get(k)}" for k in keys)
    return f"{pair.run_id} ({desc})" if desc else pair.run_id


def cells(comp: Comparison) -> tuple[list[str], list[list[str]], list[str | None], int]:
    """Header, text cells, a style per row, and the first right-aligned column."""
    metric_names = sorted({p.metric for p in comp.pairs if p.metric})
    metric = metric_names[0] if len(metric_names) == 1 else "metric"
    header = ["run_id", *(column_label(k) for k in comp.keys)]
    right_from = len(header)
    header += ["base epoch s", "new epoch s", "new/base", f"base {metric}", f"new {metric}", "Δ", "verdict"]
    rows, styles = [], []
    for p in comp.pairs:
        line = [p.run_id, *(_text(p.config.get(k)) for k in comp.keys)]
        if p.side != "both":
            record = p.base or p.new
            s = summarize(record)["epoch_seconds"]
            score = _score(record, p.metric)
            line += [_num(s, 2), "—", "—", _num(score), "—", "—"] if p.side == "BASE" else \
                    ["—", _num(s, 2), "—", "—", _num(score), "—"]
            line.append(f"only in {p.side}")
            styles.append("yellow")
        else:
            ratio = p.ratio
            delta = p.delta
            line += [
                _num(p.base_seconds, 2), _num(p.new_seconds, 2),
                f"{ratio:.2f}x ({ratio - 1:+.0%})" if ratio is not None else "—",
                _num(p.base_score), _num(p.new_score),
                f"{delta:+.3f}" if delta is not None else "—",
                "; ".join(p.problems) or "ok",
            ]
            styles.append("red" if p.problems else None)
        rows.append(line)
    return header, rows, styles, right_from


def _num(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _text(value: Any) -> str:
    return "—" if value is None else str(value)
