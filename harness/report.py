"""Rendering at the edge: tables (rich, markdown, csv), notes and errors, the runs of a
suite, the plugins, the analysis. With :mod:`harness.progress` the only modules that print.

Everything here reads plain run records (the objects in ``results.jsonl``), so
``harness report`` re-renders exactly the table that ``harness run`` printed.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Sequence

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from harness.summary import TEST, column_label, epoch_rows, flatten, rows, varied_keys

#: the mark of a configuration on the Pareto front of epoch time and score (the ``pareto`` column)
PARETO = "★"


def _metric_column(field: str) -> str:
    """A metric's column: ``mcc``; a test metric's ``test mcc`` (row field ``test_mcc``)."""
    return f"test {field[len(TEST):]}" if field.startswith(TEST) else field


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


consoles = _Consoles()

# ----------------------------------------------------------------------------- tables


def _fmt(value: Any, spread: Any = None, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        text = f"{value:.{digits}f}"
        return text + (f" ± {spread:.{digits}f}" if spread is not None else "")
    return str(value)


def _estimate_cell(row: dict[str, Any], name: str, digits: int = 3) -> str:
    """A figure with its interval: ``9.17 ± 0.41 (n=3)`` over seeds (± the half-width of the
    95% Student's t interval of the mean), ``0.215 [0.13, 0.30]`` for one run's metric (its
    95% bootstrap interval over the evaluation set), the bare value otherwise."""
    mean = row[name]
    if mean is None:
        return "—"
    text = f"{mean:.{digits}f}"
    kind = row.get(name + "_ci")
    if kind == "t":
        return f"{text} ± {row[name + '_ci_high'] - mean:.{digits}f} (n={row[name + '_n']})"
    if kind == "bootstrap":
        d = max(digits - 1, 0)
        return f"{text} [{row[name + '_ci_low']:.{d}f}, {row[name + '_ci_high']:.{d}f}]"
    return text


def _status_cell(row: dict[str, Any]) -> str:
    """``ok``, ``ok (busy)`` (measured while other processes took the CPU), ``ok (1 of 3 busy)``,
    ``ok (one class)`` (every evaluated example predicted as one class); a reason after the
    status (``failed: out of memory: ...``), the flags last."""
    flags = [_count_flag(row.get("busy") or 0, row["runs"], "busy"),
             _count_flag(row.get("one_class") or 0, row["runs"], "one class")]
    return row["status"] + (f": {row['error']}" if row["error"] else "") + "".join(f for f in flags if f)


def _count_flag(n: int, runs: int, what: str) -> str:
    return "" if not n else f" ({what})" if n == runs else f" ({n} of {runs} {what})"


def _legend(table_rows: Sequence[dict[str, Any]], metric_names: Sequence[str]) -> str | None:
    """What the intervals and flags of a table mean, in a line under it (rich only);
    ``metric_names``: the row fields of every metric column (``mcc``, ``test_mcc``)."""
    names = ["epoch_seconds", *metric_names]
    parts = []
    if any(r.get(n + "_ci") == "t" for r in table_rows for n in names):
        parts.append("a ± b (n=k): mean of k runs ± the half-width of its 95% confidence interval "
                     "(Student's t, k-1 degrees of freedom)")
    if any(r.get(n + "_ci") == "bootstrap" for r in table_rows for n in metric_names):
        parts.append("a [lo, hi]: one run's metric with its 95% bootstrap interval over the evaluation set")
    if any(n.startswith(TEST) for n in metric_names):
        parts.append("test: evaluated once on the test_split after the last epoch")
    pareto = next((r["_pareto_metric"] for r in table_rows if r.get("pareto") is not None), None)
    if pareto:
        parts.append(f"{PARETO}: on the Pareto front of epoch time and {_metric_column(pareto)}: no other "
                     "configuration is at least as fast and as accurate, and better in one")
    if any(r.get("busy") for r in table_rows):
        parts.append("busy: measured while other processes took the CPU; its times are not comparable")
    if any(r.get("one_class") for r in table_rows):
        parts.append("one class: the model predicted one class for every evaluated example (not learned yet)")
    return "; ".join(parts) or None


def _text(value: Any) -> Text:
    """A cell as plain text: an error, a path or an option value may hold brackets
    (``[/path/pair.cc:553]``) that rich would read as markup."""
    return Text(str(value))


def _bytes(n: int | None) -> str:
    if not n:
        return "—"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.2f} {unit}" if unit == "GB" else f"{n / size:.0f} {unit}"
    return f"{n} B"


def table_cells(records: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[str]], list[str]]:
    """Header, text cells and statuses: what the rich, markdown and csv tables share."""
    header, cells, statuses, _ = _table(records)
    return header, cells, statuses


def _table(records: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[str]], list[str], str | None]:
    """:func:`table_cells`, and the legend of its intervals and flags."""
    keys, table_rows = rows(records)
    metric_names = table_rows[0]["_metrics"] if table_rows else []
    metric_names = [*metric_names, *(TEST + m for m in (table_rows[0]["_test_metrics"] if table_rows else []))]
    show_pareto = any(r["pareto"] is not None for r in table_rows)
    show_runs = any(r["runs"] > 1 for r in table_rows)
    # columns that only mean something for some runs: a GPU's peak share, compile time
    show_share = any(r["peak_share"] is not None for r in table_rows)
    show_compile = any(r["compile_seconds"] is not None for r in table_rows)
    header = [column_label(k) for k in keys] + (["runs"] if show_runs else []) + [
        "status", "epoch s", "eval s", "real tok/s", "TFLOP/s", *(["% bf16 peak"] if show_share else []),
        "pad waste", "peak mem", *(["compile s"] if show_compile else []), *map(_metric_column, metric_names),
        *(["pareto"] if show_pareto else []),
    ]
    cells, statuses = [], []
    for r in table_rows:
        # config values as written (lr 1e-4, not 0.000); measured figures with fixed digits
        line = ["—" if r[k] is None else f"{r[k]:g}" if isinstance(r[k], float) else str(r[k]) for k in keys]
        line += [str(r["runs"])] if show_runs else []
        line += [
            _status_cell(r),
            _estimate_cell(r, "epoch_seconds", 2),
            _fmt(r["eval_seconds"], None, 2),
            _fmt(r["real_tokens_per_second"], None, 0) if r["real_tokens_per_second"] else "—",
            _fmt(r["tflops"], None, 3 if (r["tflops"] or 0) < 1 else 1),
            *([f"{r['peak_share']:.1%}" if r["peak_share"] is not None else "—"] if show_share else []),
            f"{r['padding_waste']:.0%}" if r["padding_waste"] is not None else "—",
            _bytes(r["peak_memory_bytes"]),
            *([_fmt(r["compile_seconds"], None, 1)] if show_compile else []),
        ]
        line += [_estimate_cell(r, m) for m in metric_names]
        line += [PARETO if r["pareto"] else ""] if show_pareto else []
        cells.append(line)
        statuses.append(r["status"])
    return header, cells, statuses, _legend(table_rows, metric_names)


def epoch_cells(records: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Header and text cells of the per-epoch view (:func:`harness.summary.epoch_rows`): a
    row per run and epoch, the evaluated split's metrics after each, the test split's once."""
    keys, names, table_rows = epoch_rows(records)
    header = [*map(column_label, keys), "epoch", "train s", "train loss", *names]
    cells = [
        ["—" if r[k] is None else f"{r[k]:g}" if isinstance(r[k], float) else str(r[k]) for k in keys]
        + [str(r["epoch"]), _fmt(r["train_seconds"], None, 2), _fmt(r["train_loss"], None, 4)]
        + [_fmt(r.get(n)) for n in names]
        for r in table_rows
    ]
    return header, cells


def print_epochs(records: Sequence[dict[str, Any]], title: str | None = None) -> None:
    header, cells = epoch_cells(records)
    print_cells(header, cells, [None] * len(cells), title=f"{title or 'runs'}: epoch by epoch",
                right_from=header.index("epoch"))


def results_table(records: Sequence[dict[str, Any]], title: str | None = None) -> Table:
    header, cells, statuses, legend = _table(records)
    caption = escape(legend) if legend else None  # text, not markup: "[lo, hi]"
    table = Table(title=title, header_style="bold", caption=caption, caption_justify="left")
    numeric_from = header.index("epoch s")
    for i, name in enumerate(header):
        table.add_column(name, justify="right" if i >= numeric_from else "left", overflow="fold")
    for line, status in zip(cells, statuses):
        table.add_row(*map(_text, line), style=None if status == "ok" else "red")
    return table


def print_table(records: Sequence[dict[str, Any]], title: str | None = None) -> None:
    if not records:
        consoles.out.print("no runs recorded")
        return
    consoles.out.print(results_table(records, title))


# ------------------------------------------------------------------- markdown, csv


def markdown(header: Sequence[str], cells: Sequence[Sequence[str]], right_from: int | None = None) -> str:
    """A GitHub-flavoured markdown table; columns from ``right_from`` on are right-aligned."""

    def esc(text: str) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    align = ["---:" if right_from is not None and i >= right_from else "---" for i in range(len(header))]
    lines = ["| " + " | ".join(esc(h) for h in header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in line) + " |" for line in cells]
    return "\n".join(lines) + "\n"


def markdown_table(records: Sequence[dict[str, Any]], title: str | None = None) -> str:
    """The run table as markdown (for a README or a pull request): same cells as the rich one."""
    header, cells, _ = table_cells(records)
    text = markdown(header, cells, right_from=header.index("epoch s"))
    return (f"**{title}**\n\n" if title else "") + text


def csv_table(records: Sequence[dict[str, Any]]) -> str:
    """The run table as CSV for a spreadsheet or pandas: one row per configuration, plain
    numbers (seconds, bytes, fractions). Each figure has its mean, ``_spread`` (sample std
    over the row's runs), ``_n``, and ``_ci_low``/``_ci_high``: the 95% Student's t interval
    of the mean when n >= 2; for a single run's metric its 95% bootstrap interval over the
    evaluation set; ``_ci`` says which (``t``, ``bootstrap``, empty). ``busy``: how many
    of the row's runs were measured while other processes took the CPU; ``one_class``: how
    many predicted one class for every evaluated example. A test metric (the final evaluation
    on the ``test_split``) is ``test_mcc``; ``pareto``: true on the Pareto front of epoch time
    and the score (:func:`harness.summary.tradeoff_metric`), false off it, empty when not judged."""
    keys, table_rows = rows(records)
    metric_names = table_rows[0]["_metrics"] if table_rows else []
    metric_names = [*metric_names, *(TEST + m for m in (table_rows[0]["_test_metrics"] if table_rows else []))]
    fields = ["epoch_seconds", "eval_seconds", "real_tokens_per_second", "padding_waste", "tflops", "train_loss"]
    paired = [*fields, *metric_names]
    suffixes = ("", "_spread", "_n", "_ci_low", "_ci_high", "_ci")
    header = [column_label(k) for k in keys] + ["runs", "status", "error", "busy", "one_class", "pareto",
                                                "peak_memory_bytes"]
    header += [name + suffix for name in paired for suffix in suffixes]
    lines = []
    for r in table_rows:
        line = [r[k] for k in keys] + [r["runs"], r["status"], r["error"], r["busy"], r["one_class"], r["pareto"],
                                       r["peak_memory_bytes"]]
        line += [r[name + suffix] for name in paired for suffix in suffixes]
        lines.append(["" if v is None else v for v in line])
    return csv_text(header, lines)


def csv_text(header: Sequence[str], cells: Sequence[Sequence[Any]]) -> str:
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(cells)
    return buf.getvalue()


def print_text(text: str) -> None:
    """Plain text to stdout, as is (markdown, csv): no wrapping, no markup."""
    sys.stdout.write(text)
    sys.stdout.flush()


def print_cells(
    header: Sequence[str], cells: Sequence[Sequence[str]], styles: Sequence[str | None],
    title: str | None = None, right_from: int = 0,
) -> None:
    """A table of ready-made text cells (``harness compare``), one style per row."""
    table = Table(title=title, header_style="bold")
    for i, name in enumerate(header):
        table.add_column(name, justify="right" if i >= right_from else "left", overflow="fold")
    for line, style in zip(cells, styles):
        table.add_row(*map(_text, line), style=style)
    consoles.out.print(table)


def print_error(message: str) -> None:
    # one line whatever the message holds; escaped: a user's `[bold]` is text, not markup
    message = "; ".join(line.strip() for line in message.splitlines() if line.strip())
    consoles.err.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)


def print_note(message: str) -> None:
    consoles.err.print(escape(message), highlight=False, soft_wrap=True)


# ------------------------------------------------------------------ validate, plugins

RUN_COLUMNS = ("model", "init", "dataset.name", "strategy.name", "head.name", "max_len", "batch_size",
               "epochs", "lr", "seed", "device", "precision")


def print_runs(suite_name: str, configs: Sequence[dict[str, Any]], description: str = "") -> None:
    """The expanded runs of a suite (``harness validate``): its description, what the runs
    share, then what varies."""
    keys = varied_keys([{"config": c} for c in configs])
    flat = [flatten(c) for c in configs]
    shared = {k: v for k, v in flat[0].items() if k not in keys and k != "run_id"} if flat else {}
    consoles.out.print(f"[bold]{escape(suite_name)}[/bold]: {len(configs)} run{'s' if len(configs) != 1 else ''}")
    if description.strip():
        consoles.out.print(_text(" ".join(description.split())), soft_wrap=True)
    consoles.out.print("  ".join(f"{k}={v}" for k, v in shared.items()), highlight=False, soft_wrap=True)
    table = Table(header_style="bold")
    table.add_column("#", justify="right")
    for k in keys:
        table.add_column(column_label(k))
    for i, f in enumerate(flat):
        table.add_row(str(i), *(_text(f.get(k)) for k in keys))
    consoles.out.print(table)


def print_plugins(registry: Any) -> None:
    """A table per family (datasets, strategies, heads), then the exporters that
    ``--export NAME`` or a suite's ``export:`` list switch on: name, where from, options,
    description (a dataset's metrics; an exporter's extra, and whether it is installed)."""
    import importlib.util

    from harness.base import iter_option_fields
    from harness.export import DISTRIBUTION, available

    def options(cls: type) -> str:
        return "\n".join(f"{n}: {t} = {d!r}" for n, t, d, _ in iter_option_fields(cls.Options)) or "—"

    titles = {"dataset": "datasets", "strategy": "tokenizer strategies", "head": "heads"}
    tables: dict[str, list[tuple[str, ...]]] = {}
    for family, entries in registry.entries.items():
        rows = tables.setdefault(titles.get(family, family), [])
        for name in sorted(entries):
            entry = entries[name]
            extra = ""
            if family == "dataset":
                extra = f" metrics: {', '.join(getattr(entry.cls, 'metrics', ()))}"
            rows.append((name, f"{entry.source}\n({entry.plugin})", options(entry.cls), (entry.cls.description or "") + extra))
    rows = tables.setdefault("exporters (--export NAME, or the suite's export: list)", [])
    modules = {getattr(module, "__name__", None): name for name, module in registry.pm.list_name_plugin()}
    for name, cls in sorted(available(registry.pm).items()):
        plugin = modules.get(cls.__module__, cls.__module__)
        extra = ""
        if cls.extra:
            missing = [m for m in cls.requires if importlib.util.find_spec(m) is None]
            state = f"not installed: {', '.join(missing)}" if missing else "installed"
            extra = f"\nextra: pip install '{DISTRIBUTION}[{cls.extra}]' ({state})"
        rows.append((name, f"{registry.sources.get(plugin, 'plugin')}\n({plugin})", options(cls), cls.description + extra))
    for title, rows in tables.items():
        table = Table(title=title, header_style="bold", show_lines=True)
        table.add_column("name", style="bold")
        table.add_column("from")
        table.add_column("options")
        table.add_column("description")
        for row in rows:
            table.add_row(*map(_text, row))
        consoles.out.print(table)


# --------------------------------------------------------------------------- analyze


def _count(n: float) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e4 else f"{int(n):,}"


def print_analysis(analysis: Any, bar_width: int = 40) -> None:
    """``harness analyze``: percentiles, a histogram, coverage, cost per MAX_LEN and strategy."""
    a = analysis
    out = consoles.out
    sub = f" (a stratified subset of {a.examples:,} of {a.of:,})" if a.examples < a.of else ""
    out.print(
        f"[bold]{a.dataset}[/bold] {a.split}: {a.examples:,} examples{sub}, tokens per example under "
        f"[bold]{a.model}[/bold]'s tokenizer (special tokens included, before truncation)",
        highlight=False, soft_wrap=True,
    )
    pct = a.percentiles()
    out.print("  ".join(f"{k} {v:.1f}" if k == "mean" else f"{k} {v}" for k, v in pct.items()), highlight=False)

    out.print()
    hist = a.histogram()
    peak = max(c for _, _, c in hist) or 1
    label_width = len(f"{hist[-1][0]}-{hist[-1][1]}")
    for lo, hi, count in hist:
        bar = "█" * round(count / peak * bar_width) or ("▏" if count else "")
        out.print(f"  {f'{lo}-{hi}':>{label_width}} │{bar:<{bar_width}} {count:,}", highlight=False)

    out.print()
    cover = a.coverage()
    parts = [f"{int(q * 100)}%: {v}" for q, v in cover.items()]
    limit = f" (the model's limit is {a.max_positions})" if a.max_positions else ""
    out.print(f"MAX_LEN that keeps examples whole: {', '.join(parts)}{limit}", highlight=False)

    out.print(_cost_table(a) if a.strategies else "no tokenizer strategy to cost", highlight=False)
    for line in _analysis_notes(a):
        out.print(line, markup=False, highlight=False, soft_wrap=True)


def _cost_table(a: Any) -> Table:
    """One section per MAX_LEN, one row per strategy costed (the baseline first)."""
    table = Table(
        title=f"cost of one epoch per MAX_LEN and strategy (batch size {a.batch_size})", header_style="bold"
    )
    columns = [("MAX_LEN", "right"), ("truncated", "right"), ("strategy", "left"),
               ("padded tokens", "right"), ("padding waste", "right")]
    if a.baseline:
        columns.append((f"vs {a.baseline}", "right"))
    for col, justify in columns:
        table.add_column(col, justify=justify)
    for m in a.max_lens():
        for i, strategy in enumerate(a.strategies):
            c = a.cost(strategy, m)
            row = [str(m) if i == 0 else "", f"{a.truncated(m):.1%}" if i == 0 else "", strategy,
                   _count(c.padded_tokens), f"{c.waste:.0%}"]
            if a.baseline:
                row.append(f"{c.padded_tokens / a.cost(a.baseline, m).padded_tokens:.2f}×")
            table.add_row(*row, end_section=i == len(a.strategies) - 1)
    return table


def _analysis_notes(a: Any) -> list[str]:
    """What the cost table means: skipped strategies, MAX_LENs that cost the same, truncation."""
    notes = [f"{name}: not costed, {why} (analyze builds each strategy with its default options)"
             for name, why in a.skipped.items()]
    longest = int(a.lengths.max())
    for strategy in a.strategies:
        for group in a.same_cost_groups(strategy):
            lo, hi = group[0], group[-1]
            why = (f": the longest example has {longest} tokens, so nothing is truncated at MAX_LEN {lo} or above "
                   f"and a larger MAX_LEN changes nothing") if lo >= longest else ""
            notes.append(
                f"{strategy}: MAX_LEN {', '.join(map(str, group))} cost the same "
                f"({_count(a.cost(strategy, lo).padded_tokens)} tokens per epoch){why} "
                f"(under fixed padding MAX_LEN {hi} costs {hi / lo:.1f}× MAX_LEN {lo})"
            )
    cut = [m for m in a.max_lens() if a.truncated(m) > 0.05]
    if cut:
        notes.append(
            f"truncation: at MAX_LEN {cut[-1]} {a.truncated(cut[-1]):.0%} of the examples lose tokens; "
            f"it changes what the model sees, and so the accuracy, not only the time"
        )
    return notes
