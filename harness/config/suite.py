"""A suite file: read safely, its lines kept, its keys layered.

A suite file::

    name: max_len                 # required; names the default output directory
    description: ...
    plugins: [my_plugin.py]       # local plugin modules (paths relative to the suite)
    defaults: {model: minilm, dataset: cola, epochs: 2}
    matrix:                       # cartesian product of lists; keys may be dotted
      max_len: [32, 64, 128]
      strategy: [fixed, dynamic]
    runs:                         # optional list of partial configs, each crossed with the matrix
      - {head: linear}
      - {head: mean}
    on_cpu: {dataset.subset.train: 2048}   # applied only to runs that resolve to the CPU
    export: [tensorboard]         # exporters each stored record goes to (not part of a run)
    slurm: {partition: gpu, time: 120}   # `harness run --executor slurm` (harness.slurm.SlurmSettings)

Precedence, from weakest to strongest: built-in defaults < ``defaults`` < ``runs[i]`` <
``matrix`` < ``on_cpu`` < ``--set``. Errors name the file, line and key path:
``suites/x.yaml:12: matrix.head[1].options.dropout: expected a number, got 'high'``.

This module reads the file (the safe loader only, every key's line kept) and layers keys
(:class:`Layers`); :mod:`harness.config.resolve` expands a suite into runs and resolves them.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import yaml
from pydantic import ValidationError

from harness.config.keys import FAMILIES, PluginRef, RunConfig
from harness.config.sentences import unknown_key, validation_error
from harness.errors import HarnessError, one_line

SUITE_KEYS = ("name", "description", "plugins", "defaults", "matrix", "runs", "on_cpu", "export", "slurm")


# ------------------------------------------------------------------------ the loaded suite


@dataclass
class Suite:
    path: Path
    name: str
    description: str
    plugins: list[str]
    defaults: dict[str, Any]
    matrix: dict[str, list[Any]]
    runs: list[dict[str, Any]]
    on_cpu: dict[str, Any]
    lines: dict[str, int] = field(default_factory=dict)  # key path -> line in the file
    #: exporters to switch on (harness.records.export.switch_on), each a name with options
    export: list[PluginRef] = field(default_factory=list)
    #: the jobs' settings for `harness run --executor slurm` (checked by harness.launch.slurm.settings)
    slurm: dict[str, Any] = field(default_factory=dict)

    def where(self, key_path: str) -> str:
        """``file:line: key.path`` for an error message (the line when known)."""
        line = self.lines.get(key_path)
        if line is None:  # fall back to the nearest enclosing key that has a line
            parent = key_path
            while line is None and parent:
                parent = parent.rsplit(".", 1)[0] if "." in parent else ""
                parent = parent.rsplit("[", 1)[0] if parent.endswith("]") else parent
                line = self.lines.get(parent)
        return f"{self.path}:{line}: {key_path}" if line else f"{self.path}: {key_path}"


def _line_map(node: yaml.Node, prefix: str = "", out: dict[str, int] | None = None) -> dict[str, int]:
    out = {} if out is None else out
    if prefix:
        out.setdefault(prefix, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            k = str(key.value)
            path = f"{prefix}.{k}" if prefix else k
            out.setdefault(path, key.start_mark.line + 1)
            _line_map(value, path, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_map(item, f"{prefix}[{i}]", out)
    return out


def read_yaml(path: Path) -> tuple[Any, dict[str, int]]:
    """Parse with the safe loader only (no python tags); errors name file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise HarnessError(f"{path}: no such suite file") from None
    except IsADirectoryError:
        raise HarnessError(f"{path}: is a directory, not a suite file") from None
    except UnicodeDecodeError as exc:
        raise HarnessError(f"{path}: not valid UTF-8 ({exc.reason})") from None
    except OSError as exc:
        raise HarnessError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    try:
        return _parse(path, text)
    except RecursionError:  # an alias inside its own anchor (`a: &a [*a]`), or nesting past Python's stack
        raise HarnessError(f"{path}: nested too deeply, or an alias refers to itself (`&a [*a]`): a suite is plain, "
                           "finite data") from None


def _parse(path: Path, text: str) -> tuple[Any, dict[str, int]]:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.load(text, Loader=yaml.SafeLoader)  # noqa: S506 - SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f"{mark.line + 1}:" if mark is not None else ""
        tag = re.search(r"constructor for the tag '([^']+)'", exc.problem or "")
        if isinstance(exc, yaml.constructor.ConstructorError) and tag:
            raise HarnessError(
                f"{path}:{line} refused YAML tag '{tag.group(1)}': suites are plain data, read with the "
                "safe loader (no python objects)"
            ) from None
        problem = exc.problem or exc.context or "malformed YAML"
        raise HarnessError(f"{path}:{line} malformed YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise HarnessError(f"{path}: malformed YAML: {exc}") from None
    except ValueError as exc:  # a value the constructor cannot build: an integer of more than 4300 digits
        raise HarnessError(f"{path}: malformed YAML: {one_line(exc, 'first')}") from None
    return data, (_line_map(node) if node is not None else {})


def load_suite(path: str | Path) -> Suite:
    path = Path(path)
    data, lines = read_yaml(path)
    if not isinstance(data, dict):
        raise HarnessError(f"{path}: a suite is a mapping with at least `name` and `defaults` or `matrix`")
    suite = Suite(path, "", "", [], {}, {}, [], {}, lines)
    for key in data:
        if key not in SUITE_KEYS:
            raise HarnessError(f"{suite.where(str(key))}: " + unknown_key(key, SUITE_KEYS))

    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise HarnessError(f"{suite.where('name')}: expected a non-empty string naming the suite, got {name!r}")
    suite.name = name.strip()
    suite.description = _typed(suite, data, "description", str, "")
    suite.plugins = _typed(suite, data, "plugins", list, [])
    for i, p in enumerate(suite.plugins):
        if not isinstance(p, str):
            raise HarnessError(f"{suite.where(f'plugins[{i}]')}: expected a module name or path, got {p!r}")
    suite.defaults = _typed(suite, data, "defaults", dict, {})
    suite.on_cpu = _typed(suite, data, "on_cpu", dict, {})
    suite.slurm = _typed(suite, data, "slurm", dict, {})
    suite.runs = _typed(suite, data, "runs", list, [])
    for i, r in enumerate(suite.runs):
        if not isinstance(r, dict):
            raise HarnessError(f"{suite.where(f'runs[{i}]')}: expected a mapping of config keys, got {r!r}")
    if "runs" in data and not suite.runs:
        raise HarnessError(f"{suite.where('runs')}: empty list; give at least one run or leave `runs` out")
    for i, ref in enumerate(_typed(suite, data, "export", list, [])):
        try:
            suite.export.append(PluginRef.model_validate(ref))
        except ValidationError as exc:
            where = lambda loc, i=i: suite.where(f"export[{i}]" + "".join(f".{p}" for p in loc))  # noqa: E731
            raise validation_error(exc, PluginRef, where) from None

    if "matrix" in data:
        matrix = data["matrix"]
        if not isinstance(matrix, dict) or not matrix:
            raise HarnessError(
                f"{suite.where('matrix')}: empty matrix; give keys with lists of values, "
                "e.g. `max_len: [64, 128]`, or leave `matrix` out"
            )
        for key, values in matrix.items():
            if not isinstance(values, list):
                raise HarnessError(f"{suite.where(f'matrix.{key}')}: expected a list of values, got {values!r}")
            if not values:
                raise HarnessError(f"{suite.where(f'matrix.{key}')}: empty list; a matrix key needs at least one value")
        suite.matrix = matrix
    return suite


def _typed(suite: Suite, data: dict, key: str, kind: type, default: Any) -> Any:
    value = data.get(key, default)
    if value is None:
        return default
    if not isinstance(value, kind):
        names = {str: "a string", list: "a list", dict: "a mapping"}
        raise HarnessError(f"{suite.where(key)}: expected {names[kind]}, got {value!r}")
    return value


# -------------------------------------------------------------------------- expansion


def parse_set(items: Sequence[str], option: str = "--set", example: str = "max_len=64") -> dict[str, Any]:
    """``--set key=value`` pairs (or another ``option``'s); values are YAML scalars (``64``, ``null``, ``bf16``)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise HarnessError(f"{option} {item}: expected key=value, e.g. {option} {example}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except (yaml.YAMLError, ValueError, RecursionError):  # not YAML (or too deep, a huge integer): the text
            value = raw
        out[key.strip()] = value
    return out


def _normalise(key: str, value: Any) -> Any:
    if key in FAMILIES and isinstance(value, str):
        return {"name": value}
    return copy.deepcopy(value)


class Layers:
    """Builds one run's config dict layer by layer, remembering where each key came from."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.source: dict[str, str] = {}  # dotted key path -> "file key path" or "--set key"

    def set(self, dotted: str, value: Any, source: str) -> None:
        parts = dotted.split(".")
        raw = value
        value = _normalise(parts[0], value) if len(parts) == 1 else copy.deepcopy(value)
        node = self.data
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if i == 0 and part in FAMILIES:
                if child is None:  # `head.options.x` alone: options of the default head
                    child = {"name": RunConfig.model_fields[part].get_default(call_default_factory=True).name}
                elif isinstance(child, str):
                    child = {"name": child}
            if not isinstance(child, dict):
                child = {}
            node[part] = child
            node = child
        last = parts[-1]
        old = node.get(last)
        # a plugin ref whose name changes is replaced whole: options of `mlp` mean nothing to `mean`
        if isinstance(old, dict) and isinstance(value, dict) and old.get("name", value.get("name")) == value.get("name", old.get("name")):
            node[last] = _deep_merge(old, value)
        else:
            node[last] = value
        self._mark(dotted, value, source)
        if isinstance(raw, str) and dotted in FAMILIES:  # `head: linaer` is at `defaults.head`
            self.source[f"{dotted}.name"] = source

    def _mark(self, dotted: str, value: Any, source: str) -> None:
        for key in [k for k in self.source if k == dotted or k.startswith(dotted + ".")]:
            del self.source[key]
        self.source[dotted] = source
        if isinstance(value, dict):
            for k, v in value.items():
                self._mark(f"{dotted}.{k}", v, f"{source}.{k}")

    def where(self, loc: Iterable[Any]) -> str | None:
        """The source of the deepest key path in ``loc`` that a layer set."""
        parts = [str(p) for p in loc]
        for n in range(len(parts), 0, -1):
            src = self.source.get(".".join(parts[:n]))
            if src is not None:
                rest = parts[n:]
                return src + "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in rest)
        return None


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(out.get(k), dict) and isinstance(v, dict) else v
    return out


def format_source(suite: Suite, src: str) -> str:
    return src if src.startswith("--set ") else suite.where(src)


def dotted(loc: Sequence[Any]) -> str:
    """``("head", "options", "dropout")`` -> ``head.options.dropout``; ``(run)`` for the whole run."""
    return ".".join(str(p) for p in loc) or "(run)"


def config_from_keys(keys: Mapping[str, Any]) -> dict[str, Any]:
    """A run's config from flat keys, dotted ones included (``{"dataset.subset.train": 512}``),
    layered as a suite's ``defaults`` are."""
    layers = Layers()
    for key, value in keys.items():
        layers.set(key, value, key)
    return layers.data
