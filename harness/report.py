"""Rendering at the edge: progress bars, tables. The only module that prints.

Everything here reads plain run records (the objects in ``results.jsonl``), so
``harness report`` re-renders exactly the table that ``harness run`` printed.
"""

from __future__ import annotations

import os
import statistics
import sys
from typing import Any, Iterable, Sequence

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table


class _Consoles:
    """Consoles made on first use, so they write to the sys.stdout/stderr of that moment.
    Piped output (a file, CI, a test) gets a wide console: tables are not squeezed to 80."""

    def _make(self, stderr: bool) -> Console:
        stream = sys.stderr if stderr else sys.stdout
        width = None if stream.isatty() else int(os.environ.get("COLUMNS", 200))
        return Console(stderr=stderr, width=width)

    @property
    def out(self) -> Console:
        return self._make(False)

    @property
    def err(self) -> Console:
        return self._make(True)


_consoles = _Consoles()

#: config keys never shown as a varied column, nor used to tell configurations apart
HIDDEN_KEYS = ("data_dir",)


# ------------------------------------------------------------------------- progress


class RichProgress:
    """Three bars: runs of the suite, epochs of the run, steps of the epoch (with ETA)."""

    def __init__(self, total_runs: int, enabled: bool = True):
        self.progress = Progress(
            TextColumn("{task.description}", style="bold"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=_consoles.err,
            disable=not enabled,
            transient=False,
        )
        self.runs = self.progress.add_task("runs", total=total_runs, info="")
        self.epochs = self.progress.add_task("epochs", total=1, info="", visible=False)
        self.steps = self.progress.add_task("steps", total=1, info="", visible=False)

    def __enter__(self) -> "RichProgress":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def start_run(self, label: str) -> None:
        self.progress.update(self.runs, info=label)
        self.progress.reset(self.epochs, total=1, visible=False, info="")

    def end_run(self, status: str) -> None:
        self.progress.advance(self.runs)
        self.progress.update(self.steps, visible=False)
        self.progress.update(self.epochs, visible=False)

    def skip_run(self) -> None:
        self.progress.advance(self.runs)

    # the train.Progress protocol
    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        if epoch == 1:
            self.progress.reset(self.epochs, total=epochs, visible=True, info="")
        self.progress.reset(self.steps, total=steps, visible=True, info=f"epoch {epoch}")

    def advance(self, steps: int = 1) -> None:
        self.progress.advance(self.steps, steps)

    def end_epoch(self, summary: dict[str, Any]) -> None:
        metrics = " ".join(f"{k} {v:.3f}" for k, v in summary.get("metrics", {}).items())
        self.progress.update(
            self.epochs, advance=1, info=f"{summary['train_seconds']:.1f}s  loss {summary['train_loss']:.3f}  {metrics}"
        )


# --------------------------------------------------------------------------- summaries


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
        if isinstance(value, dict) and value:
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


# ----------------------------------------------------------------------------- tables


def _fmt(value: Any, spread: Any = None, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        text = f"{value:.{digits}f}"
        return text + (f" ± {spread:.{digits}f}" if spread is not None else "")
    return str(value)


def _bytes(n: int | None) -> str:
    if not n:
        return "—"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.2f} {unit}" if unit == "GB" else f"{n / size:.0f} {unit}"
    return f"{n} B"


def table_cells(records: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[str]], list[str]]:
    """Header, text cells and statuses: what the rich, markdown and csv tables share."""
    keys, table_rows = rows(records)
    metric_names = table_rows[0]["_metrics"] if table_rows else []
    show_runs = any(r["runs"] > 1 for r in table_rows)
    # columns that only mean something for some runs: a GPU's peak share, compile time
    show_share = any(r["peak_share"] is not None for r in table_rows)
    show_compile = any(r["compile_seconds"] is not None for r in table_rows)
    header = [column_label(k) for k in keys] + (["runs"] if show_runs else []) + [
        "status", "epoch s", "eval s", "real tok/s", "TFLOP/s", *(["% bf16 peak"] if show_share else []),
        "pad waste", "peak mem", *(["compile s"] if show_compile else []), *metric_names
    ]
    cells, statuses = [], []
    for r in table_rows:
        line = [_fmt(r[k]) for k in keys] + ([str(r["runs"])] if show_runs else [])
        status = r["status"] + (f": {r['error']}" if r["error"] else "")
        line += [
            status,
            _fmt(r["epoch_seconds"], r["epoch_seconds_spread"], 2),
            _fmt(r["eval_seconds"], None, 2),
            _fmt(r["real_tokens_per_second"], None, 0) if r["real_tokens_per_second"] else "—",
            _fmt(r["tflops"], None, 3 if (r["tflops"] or 0) < 1 else 1),
            *([f"{r['peak_share']:.1%}" if r["peak_share"] is not None else "—"] if show_share else []),
            f"{r['padding_waste']:.0%}" if r["padding_waste"] is not None else "—",
            _bytes(r["peak_memory_bytes"]),
            *([_fmt(r["compile_seconds"], None, 1)] if show_compile else []),
        ]
        line += [_fmt(r[m], r[m + "_spread"]) for m in metric_names]
        cells.append(line)
        statuses.append(r["status"])
    return header, cells, statuses


def results_table(records: Sequence[dict[str, Any]], title: str | None = None) -> Table:
    header, cells, statuses = table_cells(records)
    table = Table(title=title, header_style="bold")
    numeric_from = header.index("epoch s")
    for i, name in enumerate(header):
        table.add_column(name, justify="right" if i >= numeric_from else "left", overflow="fold")
    for line, status in zip(cells, statuses):
        table.add_row(*line, style=None if status == "ok" else "red")
    return table


def print_table(records: Sequence[dict[str, Any]], title: str | None = None) -> None:
    if not records:
        _consoles.out.print("no runs recorded")
        return
    _consoles.out.print(results_table(records, title))


def print_error(message: str) -> None:
    _consoles.err.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)


def print_note(message: str) -> None:
    _consoles.err.print(message, highlight=False, soft_wrap=True)


# ------------------------------------------------------------------ validate, plugins

RUN_COLUMNS = ("model", "init", "dataset.name", "strategy.name", "head.name", "max_len", "batch_size",
               "epochs", "lr", "seed", "device", "precision")


def print_runs(suite_name: str, configs: Sequence[dict[str, Any]]) -> None:
    """The expanded runs of a suite (``harness validate``): what they share, then what varies."""
    keys = varied_keys([{"config": c} for c in configs])
    flat = [flatten(c) for c in configs]
    shared = {k: v for k, v in flat[0].items() if k not in keys and k != "run_id"} if flat else {}
    _consoles.out.print(f"[bold]{suite_name}[/bold]: {len(configs)} run{'s' if len(configs) != 1 else ''}")
    _consoles.out.print("  ".join(f"{k}={v}" for k, v in shared.items()), highlight=False, soft_wrap=True)
    table = Table(header_style="bold")
    table.add_column("#", justify="right")
    for k in keys:
        table.add_column(column_label(k))
    for i, f in enumerate(flat):
        table.add_row(str(i), *(str(f.get(k)) for k in keys))
    _consoles.out.print(table)


def print_plugins(registry: Any) -> None:
    from harness.base import iter_option_fields

    titles = {"dataset": "datasets", "strategy": "tokenizer strategies", "head": "heads"}
    for family, entries in registry.entries.items():
        table = Table(title=titles.get(family, family), header_style="bold", show_lines=True)
        table.add_column("name", style="bold")
        table.add_column("from")
        table.add_column("options")
        table.add_column("description")
        for name in sorted(entries):
            entry = entries[name]
            opts = "\n".join(
                f"{n}: {t} = {d!r}" for n, t, d, _ in iter_option_fields(entry.cls.Options)
            ) or "—"
            extra = ""
            if family == "dataset":
                extra = f" metrics: {', '.join(getattr(entry.cls, 'metrics', ()))}"
            table.add_row(name, f"{entry.source}\n({entry.plugin})", opts, (entry.cls.description or "") + extra)
        _consoles.out.print(table)
