"""Listings: a suite's expanded runs (``harness validate``), the plugins (``harness plugins``)
and a dataset's length profile (``harness analyze``)."""

from __future__ import annotations

import importlib.util
from typing import Any, Sequence

from rich.markup import escape
from rich.table import Table

from harness.base import iter_option_fields
from harness.errors import install_hint
from harness.records.export import available
from harness.records.summary import column_label, flatten, varied_keys
from harness.render.console import consoles, plain


def print_runs(suite_name: str, configs: Sequence[dict[str, Any]], description: str = "") -> None:
    """The expanded runs of a suite (``harness validate``): its description, what the runs
    share, then what varies."""
    keys = varied_keys([{"config": c} for c in configs])
    flat = [flatten(c) for c in configs]
    shared = {k: v for k, v in flat[0].items() if k not in keys and k != "run_id"} if flat else {}
    consoles.out.print(f"[bold]{escape(suite_name)}[/bold]: {len(configs)} run{'s' if len(configs) != 1 else ''}")
    if description.strip():
        consoles.out.print(plain(" ".join(description.split())), soft_wrap=True)
    consoles.out.print("  ".join(f"{k}={v}" for k, v in shared.items()), highlight=False, soft_wrap=True)
    table = Table(header_style="bold")
    table.add_column("#", justify="right")
    for k in keys:
        table.add_column(column_label(k))
    for i, f in enumerate(flat):
        table.add_row(str(i), *(plain(f.get(k)) for k in keys))
    consoles.out.print(table)


#: the plugin families' table titles; the exporters' table comes last
FAMILY_TITLES = {"dataset": "datasets", "strategy": "tokenizer strategies", "head": "heads"}
EXPORTERS = "exporters"


def plugin_rows(registry: Any) -> dict[str, list[dict[str, Any]]]:
    """Each family's plugins (datasets, strategies, heads, then the exporters): name, where
    from (source, plugin module), options (name, type, default), description, a dataset's
    metrics, an exporter's extra and the modules of it that are missing."""
    out: dict[str, list[dict[str, Any]]] = {}

    def options(cls: type) -> list[dict[str, Any]]:
        return [{"name": n, "type": str(t), "default": d} for n, t, d, _ in iter_option_fields(cls.Options)]

    for family, entries in registry.entries.items():
        found = out.setdefault(family, [])
        for name in sorted(entries):
            entry = entries[name]
            row = {"name": name, "source": entry.source, "plugin": entry.plugin, "options": options(entry.cls),
                   "description": entry.cls.description or ""}
            if family == "dataset":
                row["metrics"] = list(getattr(entry.cls, "metrics", ()))
            found.append(row)
    found = out.setdefault(EXPORTERS, [])
    modules = {getattr(module, "__name__", None): name for name, module in registry.pm.list_name_plugin()}
    for name, cls in sorted(available(registry.pm).items()):
        plugin = modules.get(cls.__module__, cls.__module__)
        row = {"name": name, "source": registry.sources.get(plugin, "plugin"), "plugin": plugin,
               "options": options(cls), "description": cls.description}
        if cls.extra:
            row["extra"] = install_hint(cls.extra)
            row["missing"] = [m for m in cls.requires if importlib.util.find_spec(m) is None]
        found.append(row)
    return out


def print_plugins(registry: Any) -> None:
    """A table per family (datasets, strategies, heads), then the exporters that
    ``--export NAME`` or a suite's ``export:`` list switch on: name, where from, options,
    description (a dataset's metrics; an exporter's extra, and whether it is installed)."""
    for family, found in plugin_rows(registry).items():
        title = ("exporters (--export NAME, or the suite's export: list)" if family == EXPORTERS
                 else FAMILY_TITLES.get(family, family))
        table = Table(title=title, header_style="bold", show_lines=True)
        table.add_column("name", style="bold")
        table.add_column("from")
        table.add_column("options")
        table.add_column("description")
        for row in found:
            options = "\n".join(f"{o['name']}: {o['type']} = {o['default']!r}" for o in row["options"]) or "—"
            description = row["description"]
            if "metrics" in row:
                description += f" metrics: {', '.join(row['metrics'])}"
            if "extra" in row:
                state = f"not installed: {', '.join(row['missing'])}" if row["missing"] else "installed"
                description += f"\nextra: {row['extra']} ({state})"
            table.add_row(*map(plain, (row["name"], f"{row['source']}\n({row['plugin']})", options, description)))
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
