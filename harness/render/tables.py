"""Tables at the edge: the results table (rich, markdown, csv), each run epoch by epoch, and
``harness compare``'s. Every figure comes from :mod:`harness.records.summary`, so ``harness
report`` re-renders exactly the table that ``harness run`` printed.
"""

from __future__ import annotations

from typing import Any, Sequence

from rich.markup import escape
from rich.table import Table

from harness.records.compare import Comparison, Pair, epoch_seconds, p_text, scores
from harness.records.summary import TEST, Figure, Row, column_label, epoch_rows, rows
from harness.records.versus import ACCURACY, Versus
from harness.render.console import consoles, plain
from harness.stats.intervals import Estimate, estimate
from harness.stats.paired import PairedDifference

#: the mark of a configuration on the Pareto front of epoch time and score (the ``pareto`` column)
PARETO = "★"


def _metric_column(field: str) -> str:
    """A metric's column: ``mcc``; a test metric's ``test mcc`` (row field ``test_mcc``)."""
    return f"test {field[len(TEST):]}" if field.startswith(TEST) else field


def _fmt(value: Any, spread: Any = None, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        text = f"{value:.{digits}f}"
        return text + (f" ± {spread:.{digits}f}" if spread is not None else "")
    return str(value)


def _figure_cell(figure: Figure, digits: int = 3) -> str:
    """A figure with its interval: ``9.17 ± 0.41 (n=3)`` over seeds (± the half-width of the
    95% Student's t interval of the mean), ``0.215 [0.13, 0.30]`` for one run's metric (its
    95% bootstrap interval over the evaluation set), the bare value otherwise."""
    if figure.mean is None:
        return "—"
    text = f"{figure.mean:.{digits}f}"
    if figure.kind == "t":
        return f"{text} ± {figure.high - figure.mean:.{digits}f} (n={figure.n})"
    if figure.kind == "bootstrap":
        d = max(digits - 1, 0)
        return f"{text} [{figure.low:.{d}f}, {figure.high:.{d}f}]"
    return text


def _status_cell(row: Row) -> str:
    """``ok``, ``ok (busy)`` (measured while other processes took the CPU), ``ok (1 of 3 busy)``,
    ``ok (one class)`` (every evaluated example predicted as one class); a reason after the
    status (``failed: out of memory: ...``), the flags last."""
    flags = [_count_flag(row.busy, row.runs, "busy"), _count_flag(row.one_class, row.runs, "one class")]
    return row.status + (f": {row.error}" if row.error else "") + "".join(f for f in flags if f)


def _count_flag(n: int, runs: int, what: str) -> str:
    return "" if not n else f" ({what})" if n == runs else f" ({n} of {runs} {what})"


def _legend(table_rows: Sequence[Row], metric_names: Sequence[str], pareto: str | None) -> str | None:
    """What the intervals and flags of a table mean, in a line under it (rich only);
    ``metric_names``: the figures of every metric column (``mcc``, ``test_mcc``)."""
    names = ["epoch_seconds", *metric_names]
    parts = []
    if any(r.figure(n).kind == "t" for r in table_rows for n in names):
        parts.append("a ± b (n=k): mean of k runs ± the half-width of its 95% confidence interval "
                     "(Student's t, k-1 degrees of freedom)")
    if any(r.figure(n).kind == "bootstrap" for r in table_rows for n in metric_names):
        parts.append("a [lo, hi]: one run's metric with its 95% bootstrap interval over the evaluation set")
    if any(n.startswith(TEST) for n in metric_names):
        parts.append("test: evaluated once on the test_split after the last epoch")
    if pareto:
        parts.append(f"{PARETO}: on the Pareto front of epoch time and {_metric_column(pareto)}: no other "
                     "configuration is at least as fast and as accurate, and better in one")
    if any(r.busy for r in table_rows):
        parts.append("busy: measured while other processes took the CPU; its times are not comparable")
    if any(r.one_class for r in table_rows):
        parts.append("one class: the model predicted one class for every evaluated example (not learned yet)")
    return "; ".join(parts) or None


def _value(value: Any) -> str:
    """A config value as written (lr 1e-4, not 0.000)."""
    return "—" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def _bytes(n: int | None) -> str:
    if not n:
        return "—"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.2f} {unit}" if unit == "GB" else f"{n / size:.0f} {unit}"
    return f"{n} B"


def table_cells(records: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[str]], list[str]]:
    """Header, text cells and statuses: what the rich, markdown and csv tables share."""
    header, cells, statuses, _ = table_parts(records)
    return header, cells, statuses


def table_parts(records: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[str]], list[str], str | None]:
    """:func:`table_cells`, and the legend of its intervals and flags (the rich and HTML tables)."""
    table = rows(records)
    metric_names = table.metric_fields
    show_pareto = table.pareto_metric is not None
    show_runs = any(r.runs > 1 for r in table.rows)
    # columns that only mean something for some runs: a GPU's peak share, compile time
    show_share = any(r.mean("peak_share") is not None for r in table.rows)
    show_compile = any(r.mean("compile_seconds") is not None for r in table.rows)
    show_predicted = any(r.mean("predicted_epoch_seconds") is not None for r in table.rows)
    header = [column_label(k) for k in table.keys] + (["runs"] if show_runs else []) + [
        "status", "epoch s", *(["predicted s", "error"] if show_predicted else []), "eval s", "real tok/s", "TFLOP/s", *(["% bf16 peak"] if show_share else []),
        "pad waste", "peak mem", *(["compile s"] if show_compile else []), *map(_metric_column, metric_names),
        *(["pareto"] if show_pareto else []),
    ]
    cells, statuses = [], []
    for r in table.rows:
        tflops, share, waste = r.mean("tflops"), r.mean("peak_share"), r.mean("padding_waste")
        line = [_value(r.config[k]) for k in table.keys]
        line += [str(r.runs)] if show_runs else []
        line += [
            _status_cell(r),
            _figure_cell(r.figure("epoch_seconds"), 2),
            *(_predicted_cells(r) if show_predicted else []),
            _fmt(r.mean("eval_seconds"), None, 2),
            _fmt(r.mean("real_tokens_per_second"), None, 0) if r.mean("real_tokens_per_second") else "—",
            _fmt(tflops, None, 3 if (tflops or 0) < 1 else 1),
            *([f"{share:.1%}" if share is not None else "—"] if show_share else []),
            f"{waste:.0%}" if waste is not None else "—",
            _bytes(r.peak_memory_bytes),
            *([_fmt(r.mean("compile_seconds"), None, 1)] if show_compile else []),
        ]
        line += [_figure_cell(r.figure(m)) for m in metric_names]
        line += [PARETO if r.pareto else ""] if show_pareto else []
        cells.append(line)
        statuses.append(r.status)
    return header, cells, statuses, _legend(table.rows, metric_names, table.pareto_metric)


def _predicted_cells(row: Row) -> list[str]:
    """``harness run --estimate``'s prediction of the epoch time and its error: predicted
    over measured, less 1 (+8%: predicted 8% slower than it ran)."""
    predicted, measured = row.mean("predicted_epoch_seconds"), row.mean("epoch_seconds")
    if predicted is None:
        return ["—", "—"]
    return [_fmt(predicted, None, 2), f"{predicted / measured - 1:+.0%}" if measured else "—"]


def epoch_cells(records: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Header and text cells of the per-epoch view (:func:`harness.summary.epoch_rows`): a
    row per run and epoch, the evaluated split's metrics after each, the test split's once."""
    keys, names, table_rows = epoch_rows(records)
    header = [*map(column_label, keys), "epoch", "train s", "train loss", *names]
    cells = [
        [_value(r[k]) for k in keys]
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
    header, cells, statuses, legend = table_parts(records)
    caption = escape(legend) if legend else None  # text, not markup: "[lo, hi]"
    table = Table(title=title, header_style="bold", caption=caption, caption_justify="left")
    numeric_from = header.index("epoch s")
    for i, name in enumerate(header):
        table.add_column(name, justify="right" if i >= numeric_from else "left", overflow="fold")
    for line, status in zip(cells, statuses):
        table.add_row(*map(plain, line), style=None if status == "ok" else "red")
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
    many predicted one class for every evaluated example; ``predicted_epoch_seconds`` (with
    ``harness run --estimate``): the epoch time predicted before training. A test metric (the final evaluation
    on the ``test_split``) is ``test_mcc``; ``pareto``: true on the Pareto front of epoch time
    and the score (:func:`harness.records.summary.tradeoff_metric`), false off it, empty when not judged."""
    table = rows(records)
    fields = ["epoch_seconds", "eval_seconds", "real_tokens_per_second", "padding_waste", "tflops", "train_loss"]
    if any(r.mean("predicted_epoch_seconds") is not None for r in table.rows):
        fields.insert(1, "predicted_epoch_seconds")  # harness run --estimate's
    paired = [*fields, *table.metric_fields]
    suffixes = (("", "mean"), ("_spread", "spread"), ("_n", "n"), ("_ci_low", "low"), ("_ci_high", "high"),
                ("_ci", "kind"))
    header = [column_label(k) for k in table.keys] + ["runs", "status", "error", "busy", "one_class", "pareto",
                                                      "peak_memory_bytes"]
    header += [name + suffix for name in paired for suffix, _ in suffixes]
    lines = []
    for r in table.rows:
        line = [r.config[k] for k in table.keys] + [r.runs, r.status, r.error, r.busy, r.one_class, r.pareto,
                                                    r.peak_memory_bytes]
        line += [getattr(r.figure(name), attr) for name in paired for _, attr in suffixes]
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


def print_cells(
    header: Sequence[str], cells: Sequence[Sequence[str]], styles: Sequence[str | None],
    title: str | None = None, right_from: int = 0,
) -> None:
    """A table of ready-made text cells (``harness compare``), one style per row."""
    table = Table(title=title, header_style="bold")
    for i, name in enumerate(header):
        table.add_column(name, justify="right" if i >= right_from else "left", overflow="fold")
    for line, style in zip(cells, styles):
        table.add_row(*map(plain, line), style=style)
    consoles.out.print(table)


# --------------------------------------------------------------------------- compare


def compare_cells(comp: Comparison) -> tuple[list[str], list[list[str]], list[str | None], int]:
    """Header, text cells, a style per row, and the first right-aligned column.

    An epoch time or metric over several runs reads ``10.03 ± 0.62 (n=3)``: the mean ± the
    half-width of its 95% Student's t interval; ``p time`` and ``p <metric>`` (shown when a
    test could judge a configuration) are two-sided p-values, the test named beside each:
    ``Welch`` (two runs or more a side), ``paired`` (the metric on the same examples; Δ then
    carries its 95% interval), ``steps`` (matched step times, one run a side)."""
    metric_names = sorted({p.metric for p in comp.pairs if p.metric})
    metric = metric_names[0] if len(metric_names) == 1 else "metric"
    show_p = any(p.time_test[0] is not None or p.score_test[0] is not None for p in comp.matched)
    header = ["run_id", *(column_label(k) for k in comp.keys)]
    right_from = len(header)
    header += ["base epoch s", "new epoch s", "new/base", f"base {metric}", f"new {metric}", "Δ", "verdict"]
    header += ["p time", f"p {metric}"] if show_p else []
    rows, styles = [], []
    for p in comp.pairs:
        line = [p.run_id, *(_value(p.config.get(k)) for k in comp.keys)]
        if p.side != "both":
            runs = p.base or p.new
            time, score = _est(estimate(epoch_seconds(runs)), 2), _est(estimate(scores(runs, p.metric)))
            line += [time, "—", "—", score, "—", "—"] if p.side == "BASE" else ["—", time, "—", "—", score, "—"]
            line.append(f"only in {p.side}")
            line += ["—", "—"] if show_p else []
            styles.append("yellow")
        else:
            line += _both_cells(p)
            line += [_p_cell(p.time_test), _p_cell(p.score_test)] if show_p else []
            styles.append("red" if p.problems else "yellow" if p.within_noise or p.busy else None)
        rows.append(line)
    return header, rows, styles, right_from


def _both_cells(p: Pair) -> list[str]:
    ratio, delta = p.time.ratio, p.score.delta
    verdict = "; ".join(p.problems) or "; ".join(p.within_noise) or "ok"
    if p.busy:
        verdict += " (busy runs: times not comparable)"
    return [
        _est(p.time.base, 2), _est(p.time.new, 2),
        f"{ratio:.2f}x ({ratio - 1:+.0%})" if ratio is not None else "—",
        _est(p.score.base), _est(p.score.new),
        _delta_cell(p.paired) if p.paired else f"{delta:+.3f}" if delta is not None else "—",
        verdict,
    ]


def _est(e: Estimate, digits: int = 3) -> str:
    """``2.00`` for one run; ``10.03 ± 0.62 (n=3)`` (95% Student's t half-width) for several."""
    if e.mean is None:
        return "—"
    text = f"{e.mean:.{digits}f}"
    return text if e.half_width is None else f"{text} ± {e.half_width:.{digits}f} (n={e.n})"


def _p_cell(test: tuple[float | None, str]) -> str:
    p, name = test
    return "—" if p is None else f"{p_text(p)} ({name})"


# --------------------------------------------------------------------------- report --vs


def _interval(low: float, high: float) -> str:
    return f"[{low:+.3f}, {high:+.3f}]"


def _delta_cell(d: PairedDifference) -> str:
    return f"{d.delta:+.3f} {_interval(d.low, d.high)}"


def vs_cells(vs: Versus) -> tuple[list[str], list[list[str]], list[str | None], int]:
    """``harness report --vs``: header, text cells, a style per row, the first right-aligned
    column. For each metric: the paired difference from the baseline with its 95% interval
    and the verdict at ``alpha`` with its p; for the main metric also the interval the two
    runs' independent evaluations would give; with one run a side, McNemar's exact p of
    accuracy; with several seeds, the examples-only interval and the seeds' share of the
    variance."""
    main = vs.metrics[0]
    two_level = any(d.kind == "two-level" for r in vs.rows for d in r.differences.values())
    header = [column_label(k) for k in vs.keys] + (["runs"] if two_level else [])
    right_from = len(header)
    for m in vs.metrics:
        header += [f"Δ {m} [95%]", f"{m} verdict"]
        if m == main:
            header.append(f"Δ {m} independent")
            header += [f"Δ {m} examples only", "seed share"] if two_level else []
    header += [] if two_level else ["McNemar p"]
    rows, styles = [], []
    for r in vs.rows:
        line = [_value(r.config.get(k)) for k in vs.keys] + ([f"{r.runs[1]} vs {r.runs[0]}"] if two_level else [])
        if r.missing:
            rows.append(line + [r.missing] + [""] * (len(header) - len(line) - 1))
            styles.append("yellow")
            continue
        for m in vs.metrics:
            d = r.differences[m]
            line += [_delta_cell(d), f"{d.verdict(vs.alpha)} (p={p_text(d.p)})"]
            if m == main:
                line.append(_interval(*d.independent))
                if two_level:
                    line += [_interval(*d.examples_only) if d.examples_only else "—",
                             f"{d.seed_share:.0%}" if d.seed_share is not None else "—"]
        if not two_level:
            p = r.differences.get(ACCURACY)
            line.append(p_text(p.mcnemar_p) if p is not None and p.mcnemar_p is not None else "—")
        verdict = r.differences[main].verdict(vs.alpha)
        styles.append("green" if verdict == "better" else "red" if verdict == "worse" else None)
        rows.append(line)
    return header, rows, styles, right_from


def vs_notes(vs: Versus) -> list[str]:
    """What the ``--vs`` table's intervals include and exclude, in the lines a reader needs."""
    kinds = {d.kind for r in vs.rows for d in r.differences.values()}
    out = [f"Δ: each row minus its baseline, the same configuration with {column_label(vs.key)}={vs.value}, "
           "on the same evaluated examples; verdict at alpha "
           f"{vs.alpha:g}: better / worse when p < alpha, else cannot tell"]
    if "examples" in kinds:
        out.append("one run a side: a paired bootstrap over the examples (the same resampled examples score both); "
                   "it judges this pair of trained models: another seed's noise is not in it; McNemar p: the "
                   "exact test on the examples only one of the two got right")
    if "two-level" in kinds:
        out.append("several seeds: a two-level bootstrap (each side's seeds, then the same examples for both), "
                   "which holds both noises; examples only: the seeds held as they are; seed share: the part of "
                   "the difference's variance the seeds alone give")
        for r in vs.rows:
            d = r.differences.get(vs.metrics[0])
            if d is not None and d.dominant:
                desc = " ".join(f"{column_label(k)}={r.config.get(k)}" for k in vs.keys)
                out.append(f"{desc}: {d.dominant} dominate the noise of Δ {d.metric} ({d.seed_share:.0%} from seeds)")
    out.append("independent: the interval the difference would have with each run's examples resampled apart, "
               "as if the two were evaluated on different sets")
    return out
