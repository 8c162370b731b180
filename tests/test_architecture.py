"""The house rules, checked on the source the way tests/test_docs.py checks the docs.

- no import circle among the modules of ``harness/`` (function-level and TYPE_CHECKING
  imports count: a circle hidden in a function is still one in the design);
- nothing below the command line and the renderer prints;
- plugins import the contract and the base classes, never the loop or the runner;
- no function longer than about 60 lines without a reason written next to it
  (a ``# long: <why>`` comment on the line above its ``def``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "harness"
#: the modules that may print: the command line and the rendering at the edge
EDGE = {"harness.cli", "harness.report", "harness.progress"}
#: what a plugin must not import: the loop, its set-up, the runner, the launchers
NOT_FOR_PLUGINS = ("harness.train", "harness.prepare", "harness.runner", "harness.distributed", "harness.worker")
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


def _imported(path: Path, module: str) -> set[str]:
    """Every name an ``import`` anywhere in the file brings in, made absolute."""
    is_package = path.name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)
    return names


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


def test_the_cycle_finder_finds_a_circle_and_passes_a_tree():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_import_circle_among_the_harness_modules():
    assert len(MODULES) > 20  # the walk found the package
    cycle = find_cycle(import_graph())
    assert cycle is None, f"import circle: {' -> '.join(cycle)}"


def test_the_graph_sees_function_level_imports():
    # harness.cli imports harness.runner inside cmd_run only: the walk must see it
    assert "harness.runner" in import_graph()["harness.cli"]


def test_nothing_below_the_cli_and_the_renderer_prints():
    printing = {}
    for module, path in MODULES.items():
        calls = [
            node.lineno for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print"
        ]
        if calls and module not in EDGE:
            printing[module] = calls
    assert not printing, f"print() below the edge (notes travel as return values, logging or a callback): {printing}"


@pytest.mark.parametrize("path", sorted((REPO / "plugins").glob("*.py")), ids=lambda p: p.name)
def test_a_plugin_never_imports_the_loop(path):
    wrong = sorted(n for n in _imported(path, f"harness.builtin.{path.stem}") if n.startswith(NOT_FOR_PLUGINS))
    assert not wrong, f"{path.name} imports {wrong}: plugins use harness.base, harness.data and the hooks"


def test_no_function_is_longer_than_about_60_lines_without_a_reason():
    too_long = []
    for module, path in MODULES.items():
        lines = path.read_text(encoding="utf-8").splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                reason = lines[first - 2].strip().startswith("# long:") if first >= 2 else False
                if length > MAX_FUNCTION_LINES and not reason:
                    too_long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({length} lines)")
    assert not too_long, "split these or write `# long: <why>` above them: " + "; ".join(too_long)
