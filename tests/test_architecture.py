"""The house rules, checked on the source the way tests/test_docs.py checks the docs.

- the package's layers, lowest first (:data:`LAYERS`, written down here once; docs/architecture.md
  holds a generated copy): a module imports only from its own layer or a lower one,
  function-level and TYPE_CHECKING imports included, so there is no import circle either;
- a function-level import of a harness module says why, beside it (a comment);
- ``harness report`` and ``harness compare`` run without torch imported;
- nothing below the command line and the renderer prints;
- plugins import the contract, the base classes, the data and records helpers, never the
  loop, the launcher or the rendering;
- no function longer than about 60 lines without a reason written next to it (a ``# long:
  <why>`` comment on the line above its ``def``), in the package and in benchmarks/.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "harness"
#: the layers, lowest first: a module belongs to the layer of the longest prefix naming it,
#: and imports only from its own layer or those below (docs/architecture.md explains each)
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("contract", ("harness", "harness.errors", "harness.hookspecs")),
    ("typed settings and statistics", ("harness.config.strict", "harness.config.keys", "harness.config.docs",
                                       "harness.config.sentences", "harness.config.suite", "harness.config",
                                       "harness.stats")),
    ("data", ("harness.data",)),
    ("the machine and token ids", ("harness.loop.env", "harness.loop.measure", "harness.loop.tokens")),
    ("what plugins subclass", ("harness.base",)),
    ("records", ("harness.records",)),
    ("plugins and their registry", ("harness.builtin", "harness.registry")),
    ("runs resolved", ("harness.loop.checkpoints", "harness.config.resolve")),
    ("the loop", ("harness.loop",)),
    ("launching", ("harness.launch",)),
    ("analysis", ("harness.analyze", "harness.estimate")),
    ("rendering", ("harness.render",)),
    ("commands", ("harness.cli", "harness.pytest_plugin", "harness.__main__")),
)
#: the modules that may print: the command line and the rendering at the edge
EDGE = ("harness.cli", "harness.render")
#: what a plugin must not import: the loop and its set-up, the launchers, the rendering, the commands
NOT_FOR_PLUGINS = ("harness.loop", "harness.launch", "harness.render", "harness.cli", "harness.analyze")
MAX_FUNCTION_LINES = 60


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(path: Path, module: str) -> list[tuple[ast.stmt, set[str]]]:
    """Each ``import`` statement anywhere in the file, with the names it brings in, made absolute."""
    is_package = path.name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.append((node, {a.name for a in node.names}))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            out.append((node, {base, *(f"{base}.{a.name}" for a in node.names)}))
    return out


def _imported(path: Path, module: str) -> set[str]:
    return set().union(*(names for _, names in _imports(path, module)))


def _owner(name: str) -> str | None:
    """The module of ``harness/`` a dotted name belongs to (``harness.data.read_rows`` -> ``harness.data``)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def import_graph() -> dict[str, set[str]]:
    graph = {}
    for module, path in MODULES.items():
        targets = {_owner(n) for n in _imported(path, module)}
        # the package's face (harness/__init__.py re-exports hookimpl) is no node of a circle
        graph[module] = {t for t in targets if t and t != module and t != "harness"}
    return graph


def layer_of(module: str, layers=LAYERS) -> int:
    """The index of the layer of the longest prefix that names ``module``."""
    best, found = -1, None
    for index, (_, prefixes) in enumerate(layers):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, found = len(prefix), index
    if found is None:
        raise AssertionError(f"{module} is in no layer of LAYERS: add it")
    return found


def upward_imports(graph: dict[str, set[str]], layers=LAYERS) -> list[str]:
    """Every import from a module to one of a higher layer."""
    return sorted(
        f"{m} ({layers[layer_of(m, layers)][0]}) imports {t} ({layers[layer_of(t, layers)][0]})"
        for m, targets in graph.items() for t in targets if layer_of(t, layers) > layer_of(m, layers)
    )


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle, as the list of modules along it, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start)
            if found:
                return found
    return None


def layer_table() -> str:
    """The layers as docs/architecture.md lists them (between ``<!-- layers:start -->`` and ``<!-- layers:end -->``)."""
    lines = ["| layer | modules |", "|---|---|"]
    for index, (name, prefixes) in enumerate(LAYERS):
        lines.append(f"| {index} {name} | {', '.join(f'`{p}`' for p in prefixes)} |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------ the layers


def test_the_cycle_finder_finds_a_circle_and_passes_a_tree():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_every_module_is_in_a_layer_and_imports_none_above_it():
    assert len(MODULES) > 40  # the walk found the package and its sub-packages
    for module in MODULES:
        layer_of(module)
    wrong = upward_imports(import_graph())
    assert not wrong, "imports from a lower layer to a higher one:\n" + "\n".join(wrong)
    assert find_cycle(import_graph()) is None


def test_an_upward_import_is_caught():
    """The check above can fail: the records importing the loop (a layer above them) is caught."""
    graph = {**import_graph(), "harness.records.summary": {"harness.loop.train"}}
    assert upward_imports(graph) == [
        "harness.records.summary (records) imports harness.loop.train (the loop)"
    ]


def test_the_graph_sees_function_level_imports():
    # harness.cli imports harness.launch.runner inside cmd_run only: the walk must see it
    assert "harness.launch.runner" in import_graph()["harness.cli"]


def test_the_top_of_the_package_is_a_dozen_modules_at_most():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= 12, top
    stages = sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file())
    assert stages == ["builtin", "config", "data", "launch", "loop", "records", "render", "stats"]


def test_the_docs_list_the_layers_as_the_test_holds_them():
    text = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    start, end = "<!-- layers:start -->", "<!-- layers:end -->"
    assert start in text and end in text
    assert text.split(start, 1)[1].split(end, 1)[0].strip() == layer_table().strip(), (
        "docs/architecture.md's layer table is out of date; regenerate it with\n"
        "  .venv/bin/python -c 'import sys; sys.path.insert(0, \"tests\"); "
        "from test_architecture import layer_table; print(layer_table())'"
    )


def test_a_function_level_import_of_a_harness_module_says_why():
    silent = []
    for module, path in MODULES.items():
        lines = path.read_text(encoding="utf-8").splitlines()
        tree = ast.parse("\n".join(lines))
        nested = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                  for n in ast.walk(f) if isinstance(n, (ast.Import, ast.ImportFrom))}
        for node, names in _imports(path, module):
            if id(node) not in nested or not any(_owner(n) for n in names):
                continue
            said = "#" in lines[node.end_lineno - 1] or lines[node.lineno - 2].strip().startswith("#")
            if not said:
                silent.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not silent, "function-level imports of harness modules without a reason beside them: " + ", ".join(silent)


@pytest.mark.parametrize("argv", [["report", "{out}"], ["compare", "{out}", "{out}"], ["report", "{out}", "--format", "csv"]])
def test_report_and_compare_never_import_torch(tmp_path, argv):
    """They read records: a machine without torch (a CI bot, a laptop) can run them."""
    sys.path.insert(0, str(REPO / "tests"))
    from records import record, write_results

    write_results(tmp_path / "out", [record("a"), record("b", strategy="dynamic", seconds=1.0)])
    args = [a.format(out=tmp_path / "out") for a in argv]
    code = ("import json, sys; from harness.cli import main; code = main(sys.argv[1:]); "
            "print(json.dumps({'code': code, 'torch': 'torch' in sys.modules}), file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)
    result = json.loads(done.stderr.strip().splitlines()[-1])
    assert result == {"code": 0, "torch": False}, done.stderr


# -------------------------------------------------------------------------- the other rules


def test_nothing_below_the_cli_and_the_renderer_prints():
    printing = {}
    for module, path in MODULES.items():
        calls = [
            node.lineno for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print"
        ]
        if calls and not module.startswith(EDGE):
            printing[module] = calls
    assert not printing, f"print() below the edge (notes travel as return values, logging or a callback): {printing}"


@pytest.mark.parametrize("path", sorted((PACKAGE / "builtin").glob("*.py")), ids=lambda p: p.name)
def test_a_plugin_never_imports_the_loop(path):
    wrong = sorted(n for n in _imported(path, f"harness.builtin.{path.stem}") if n.startswith(NOT_FOR_PLUGINS))
    assert not wrong, f"{path.name} imports {wrong}: plugins use harness.base, harness.data and the hooks"


def test_no_function_is_longer_than_about_60_lines_without_a_reason():
    too_long, stale = [], []
    for path in [*MODULES.values(), *sorted((REPO / "benchmarks").glob("*.py"))]:
        lines = path.read_text(encoding="utf-8").splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                reason = lines[first - 2].strip().startswith("# long:") if first >= 2 else False
                where = f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({length} lines)"
                if length > MAX_FUNCTION_LINES and not reason:
                    too_long.append(where)
                elif reason and length <= MAX_FUNCTION_LINES:
                    stale.append(where)
    assert not too_long, "split these or write `# long: <why>` above them: " + "; ".join(too_long)
    assert not stale, "`# long:` above functions that are not long (remove it): " + "; ".join(stale)
