"""One self-contained HTML page of a results directory (``harness report DIR --html FILE``,
``harness run --html``) or of a comparison (``harness compare A B --html FILE``): the same
cells as the terminal tables (:mod:`harness.render.tables`), the plots of
:mod:`harness.render.plot` and :mod:`harness.render.tradeoff` as inline PNGs, each run's
epoch-by-epoch curves, the environment and each failed run's reason. Styles, the sorting
script and the pictures are inline: the page makes no network request and opens from disk.
The template is ``templates/report.html.j2`` (jinja2, autoescaped).
"""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path
from typing import Any, Sequence

from harness.errors import HarnessError
from harness.records.compare import Comparison, environment_notes, notes, run_label
from harness.records.store import write_atomically
from harness.render import tables

TEMPLATE = "report.html.j2"
TMP_PREFIX = ".html-"
#: the CSS class of a row, by the terminal table's style: a regression red, a change within the noise shaded
ROW_MARKS = {"red": "bad", "yellow": "warn"}


def _environment(env: dict[str, Any] | None) -> list[tuple[str, str]]:
    """A record's ``env`` as (key, text) rows."""
    return [(k, "—" if v is None else str(v)) for k, v in (env or {}).items()]


def _environments(records: Sequence[dict[str, Any]], folder: Path | None) -> list[dict[str, Any]]:
    """The page's environment sections: the folder's environment file where it has one (its
    command, suite, machine entries, and the installed packages apart), else each distinct
    ``env`` of the records."""
    from harness.records.environment import ENVIRONMENT_FILE, flat, read_environment

    kept = read_environment(folder) if folder is not None else None
    if kept is None:
        envs = {str(sorted((r.get("env") or {}).items())): r.get("env") for r in records}
        return [{"source": "the records' env", "rows": _environment(e), "packages": []} for e in envs.values()]
    entries = flat(kept)
    suite = kept.get("suite") or {}
    rows = [("command", " ".join(map(str, kept.get("command") or []))),
            ("suite", f"{suite.get('path')} (sha256 {suite.get('sha256')})"),
            ("hostname", kept.get("hostname")), ("platform", kept.get("platform"))]
    rows += [(k, v) for k, v in entries.items() if not k.startswith("package ")]
    packages = [(k.removeprefix("package "), v) for k, v in entries.items() if k.startswith("package ")]
    return [{"source": ENVIRONMENT_FILE, "rows": [(k, "—" if v is None else str(v)) for k, v in rows],
             "packages": [(k, str(v)) for k, v in packages]}]


def _png(fig: Any) -> str:
    """A matplotlib figure as a ``data:`` URI (PNG, base64)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _plots(records: Sequence[dict[str, Any]], title: str) -> tuple[list[tuple[str, str]], list[str]]:
    """(caption, data URI) of each plot the records can draw, and why the others are left out."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return [], ["no plots: matplotlib is not installed (pip install seqcls-harness[plot])"]
    from harness.render import plot, tradeoff

    out, missing = [], []
    if plot.sweep_key(records) is not None:
        out.append(("epoch time and main metric against the swept key", _png(plot.figure(records, title=title))))
    for caption, draw in (("main metric against epoch time (Pareto front marked)",
                           lambda: tradeoff.figure(records, title=title)),
                          ("each run epoch by epoch: training loss and main metric",
                           lambda: _curves(records))):
        try:
            out.append((caption, _png(draw())))
        except HarnessError as exc:
            missing.append(f"no {caption.split(':')[0]} plot: {exc}")
    return out, missing


def _curves(records: Sequence[dict[str, Any]]) -> Any:
    """Every run's training loss and main metric after each epoch (``epochs[]``), one line a run."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    runs = [r for r in records if r.get("epochs")]
    if not runs:
        raise HarnessError("no run recorded an epoch")
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    ax_loss, ax_metric = fig.subplots(1, 2)
    for r in runs:
        epochs = [e["epoch"] for e in r["epochs"]]
        metric = r.get("main_metric")
        line, = ax_loss.plot(epochs, [e.get("train_loss") for e in r["epochs"]], marker="o", label=r["run_id"])
        values = [(e.get("metrics") or {}).get(metric) for e in r["epochs"]]
        ax_metric.plot(epochs, [v if v is not None else float("nan") for v in values], marker="o",
                       color=line.get_color())
    ax_loss.set(title="training loss", xlabel="epoch")
    names = sorted({str(r.get("main_metric")) for r in runs})
    ax_metric.set(title=f"{' / '.join(names)} after each epoch", xlabel="epoch")
    fig.legend(loc="outside right upper", fontsize=7)
    return fig


def _page(**context: Any) -> str:
    import jinja2  # lazy: only the HTML page needs it

    env = jinja2.Environment(loader=jinja2.PackageLoader("harness.render", "templates"),
                             autoescape=True, trim_blocks=True, lstrip_blocks=True)
    return env.get_template(TEMPLATE).render(**context)


def report_page(records: Sequence[dict[str, Any]], title: str, folder: Path | None = None) -> str:
    """The page of a results directory (``folder``, whose environment file it shows where there
    is one): its table (sortable), plots, curves, environment, failures."""
    header, cells, statuses, legend = tables.table_parts(records)
    plots, missing = _plots(records, title)
    failed = [(r["run_id"], r.get("error") or r.get("status")) for r in records if r.get("status") != "ok"]
    marks = [None if status == "ok" else "bad" for status in statuses]
    return _page(title=title, header=header, rows=list(zip(cells, marks)), legend=legend,
                 numeric_from=header.index("epoch s"), plots=plots, missing=missing, failed=failed,
                 environments=_environments(records, folder), notes=[])


def compare_page(comp: Comparison, title: str) -> str:
    """The page of ``harness compare``: the environment's differences first (as the terminal
    says them), its table (each configuration's change, interval and verdict), its notes, and
    what failed."""
    header, cells, styles, right_from = tables.compare_cells(comp)
    failed = [(run_label(p, comp.keys), "; ".join(p.problems)) for p in comp.failed]
    return _page(title=title, header=header, rows=[(c, ROW_MARKS.get(s)) for c, s in zip(cells, styles)],
                 legend=None, numeric_from=right_from, plots=[], missing=[], failed=failed,
                 environments=[], notes=[*environment_notes(comp), *notes(comp)])


def _fill(f: Any, text: str) -> None:
    """The page's bytes, readable as any new file is (the umask's mode, not mkstemp's 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(f.fileno(), 0o666 & ~umask)
    f.write(text.encode("utf-8"))


def check_html_path(path: str | Path) -> None:
    """Refuse, before the page is made, a path whose folder is missing or cannot be written."""
    path = Path(path)
    folder = path.parent
    if not folder.is_dir():
        raise HarnessError(f"--html {path}: its folder {folder} does not exist")
    if path.is_dir():
        raise HarnessError(f"--html {path}: is a folder; give a file name, e.g. {path / 'report.html'}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise HarnessError(f"--html {path}: its folder {folder} cannot be written")


def write_html(path: str | Path, text: str) -> Path:
    """Write the page whole or not at all (a temporary file renamed over ``path``)."""
    path = Path(path)
    check_html_path(path)
    try:
        write_atomically(path, lambda f: _fill(f, text), TMP_PREFIX)
    except OSError as exc:
        raise HarnessError(f"--html {path}: cannot write it ({exc.strerror})") from None
    return path
