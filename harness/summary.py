"""Summaries of run records: pure functions, no printing.

Every renderer (the rich, markdown and csv tables, the plot, ``harness compare``, the
pytest fixture's ``extra_info``) derives its figures here, from the plain records of
``results.jsonl``, so a figure means the same thing wherever it is shown:

- :func:`summarize`: one run's derived figures (mean epoch time, real tokens/s, padding
  waste, peak memory, TFLOP/s) from its epochs;
- :func:`rows`: one row per configuration, runs that differ only by seed grouped, with
  mean and spread (sample standard deviation);
- :func:`varied_keys`, :func:`flatten`, :func:`column_label`: which config keys tell the
  runs apart, and what a column is called;
- :func:`table_title`: ``max_len (9 runs)``.
"""

from __future__ import annotations

import statistics
from typing import Any, Iterable, Sequence

#: config keys never shown as a varied column, nor used to tell configurations apart
HIDDEN_KEYS = ("data_dir",)



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


def _mean_spread(values: list[float]) -> tuple[float | None, float | None]:
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def rows(records: Sequence[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    """Table rows: one per configuration (records differing only by seed are one row,
    with mean and spread). Returns the varied config keys and the rows."""
    seeds_vary = len({r.get("config", {}).get("seed") for r in records}) > 1
    keys = varied_keys(records, exclude=("seed",) if seeds_vary else ())
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        flat = flatten(r.get("config", {}))
        group_key = repr([flat.get(k) for k in keys])
        groups.setdefault(group_key, []).append(r)
    metric_names: list[str] = []
    for r in records:
        main = r.get("main_metric")
        for name in ([main] if main else []) + list((r.get("metrics") or {})):
            if name not in metric_names:
                metric_names.append(name)
    out = []
    for members in groups.values():
        flat = flatten(members[0].get("config", {}))
        sums = [summarize(m) for m in members]
        ok = [m for m in members if m.get("status") == "ok"]
        row: dict[str, Any] = {k: flat.get(k) for k in keys}
        row["runs"] = len(members)
        statuses = sorted({m.get("status", "?") for m in members})
        row["status"] = "/".join(statuses)
        row["error"] = "; ".join(sorted({m["error"] for m in members if m.get("error")}))
        for field in ("epoch_seconds", "eval_seconds", "real_tokens_per_second", "padding_waste", "tflops",
                      "peak_share", "compile_seconds", "train_loss"):
            row[field], row[field + "_spread"] = _mean_spread([s[field] for s in sums])
        row["peak_memory_bytes"] = max((s["peak_memory_bytes"] or 0 for s in sums), default=None) or None
        for name in metric_names:
            row[name], row[name + "_spread"] = _mean_spread([(m.get("metrics") or {}).get(name) for m in ok])
        row["_metrics"] = metric_names
        out.append(row)
    return keys, out


def suite_names(records: Sequence[dict[str, Any]], fallback: str = "results") -> str:
    """The suite name(s) recorded with the runs (``max_len``, ``a + b``), else ``fallback``."""
    return " + ".join(dict.fromkeys(r["suite"] for r in records if r.get("suite"))) or fallback


def table_title(records: Sequence[dict[str, Any]], fallback: str = "results") -> str:
    """``max_len (3 runs)``: what ``harness run`` and ``harness report`` title the table."""
    n = len(records)
    return f"{suite_names(records, fallback)} ({n} run{'s' if n != 1 else ''})"
