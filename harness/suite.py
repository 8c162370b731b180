"""YAML suite -> typed, validated, resolved runs.

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
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import yaml
from pydantic import BaseModel, ValidationError

from harness.base import Options
from harness.config import PluginRef, RunConfig
from harness.errors import HarnessError
from harness.measure import choose_precision, resolve_device
from harness.plugins import FAMILIES, Registered, Registry, unknown_name_message

SUITE_KEYS = ("name", "description", "plugins", "defaults", "matrix", "runs", "on_cpu", "export", "slurm")
PLUGIN_KEYS = tuple(FAMILIES)  # dataset, strategy, head
log = logging.getLogger(__name__)
#: config keys that do not change what a run measures, left out of its run_id (dotted: nested)
NOT_IN_RUN_ID = (
    "data_dir", "target",
    "launcher.rdzv_endpoint", "launcher.rdzv_backend", "launcher.rdzv_id", "launcher.timeout",
)
#: config keys added after the first record format, part of a run's id only when set (not
#: null): a run that does not use them keeps the id it had before they existed, so resume
#: and `harness compare` still match it with runs recorded then
IN_RUN_ID_WHEN_SET = ("test_split", "dataset.validation_from_train")


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
    #: exporters to switch on (harness.export.switch_on), each a name with options
    export: list[PluginRef] = field(default_factory=list)
    #: the jobs' settings for `harness run --executor slurm` (checked by harness.slurm.settings)
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


@dataclass
class ResolvedRun:
    """One run, every name looked up and every option typed; ``config`` is what is recorded."""

    index: int
    config: RunConfig
    dataset: Registered
    dataset_options: Options
    strategy: Registered
    strategy_options: Options
    head: Registered
    head_options: Options
    run_id: str
    #: where each top-level key was set, formatted for an error message (``file:line: key``)
    origin: dict[str, str] = field(default_factory=dict)
    #: the folder relative paths in the config were resolved against (the suite's)
    base_dir: Path = field(default_factory=Path.cwd)
    #: what resolving chose that a user should hear of (the model of a `model: [a, b]` list)
    notes: list[str] = field(default_factory=list)
    #: why the run trains in its precision (``auto: CPU without native bf16``): the record's
    #: ``env.precision_reason``; a worker gets it from the run's spec (its config is resolved)
    precision_reason: str = ""

    def where(self, key: str) -> str:
        return self.origin.get(key, f"{key} (built-in default)")

    def record_config(self) -> dict[str, Any]:
        return self.config.model_dump(mode="json")


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
    return data, (_line_map(node) if node is not None else {})


def load_suite(path: str | Path) -> Suite:
    path = Path(path)
    data, lines = read_yaml(path)
    if not isinstance(data, dict):
        raise HarnessError(f"{path}: a suite is a mapping with at least `name` and `defaults` or `matrix`")
    suite = Suite(path, "", "", [], {}, {}, [], {}, lines)
    for key in data:
        if key not in SUITE_KEYS:
            raise HarnessError(f"{suite.where(str(key))}: " + _unknown_key(key, SUITE_KEYS))

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
            raise _validation_error(exc, PluginRef, where) from None

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
        except yaml.YAMLError:
            value = raw
        out[key.strip()] = value
    return out


def _normalise(key: str, value: Any) -> Any:
    if key in PLUGIN_KEYS and isinstance(value, str):
        return {"name": value}
    return copy.deepcopy(value)


class _Layers:
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
            if i == 0 and part in PLUGIN_KEYS:
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
        if isinstance(raw, str) and dotted in PLUGIN_KEYS:  # `head: linaer` is at `defaults.head`
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


def expand(suite: Suite, overrides: dict[str, Any] | None = None) -> list[_Layers]:
    """Every run of the suite as layered config dicts (not yet validated)."""
    overrides = overrides or {}
    keys = list(suite.matrix)
    combos = list(itertools.product(*(suite.matrix[k] for k in keys))) if keys else [()]
    bases = suite.runs or [{}]
    out = []
    for b, base in enumerate(bases):
        for combo in combos:
            layers = _Layers()
            for key, value in suite.defaults.items():
                layers.set(key, value, f"defaults.{key}")
            for key, value in base.items():
                layers.set(key, value, f"runs[{b}].{key}")
            for key, value, i in zip(keys, combo, _combo_indices(suite, keys, combo)):
                layers.set(key, value, f"matrix.{key}[{i}]")
            if suite.on_cpu and _resolves_to_cpu(layers.data.get("device", "auto")):
                for key, value in suite.on_cpu.items():
                    layers.set(key, value, f"on_cpu.{key}")
            for key, value in overrides.items():
                layers.set(key, value, f"--set {key}")
            out.append(layers)
    return out


def _combo_indices(suite: Suite, keys: list[str], combo: tuple) -> list[int]:
    return [next(i for i, v in enumerate(suite.matrix[k]) if v is c or v == c) for k, c in zip(keys, combo)]


def _resolves_to_cpu(device: Any) -> bool:
    return isinstance(device, str) and device in ("auto", "cpu") and resolve_device(device) == "cpu"


# ------------------------------------------------------------------------- validation


def _unknown_key(key: Any, allowed: Iterable[str]) -> str:
    return unknown_name_message("key", key, sorted(allowed))


def describe_error(err: dict[str, Any], model: type[BaseModel] | None = None) -> str:
    """A pydantic error as a short human sentence: ``expected a number, got 'high'``."""
    kind, got = err["type"], err.get("input")
    expected = {
        "float_parsing": "a number", "float_type": "a number", "int_parsing": "an integer",
        "int_type": "an integer", "int_from_float": "an integer", "bool_parsing": "true or false",
        "bool_type": "true or false", "string_type": "a string", "dict_type": "a mapping",
        "list_type": "a list", "model_type": "a mapping", "model_attributes_type": "a mapping",
    }.get(kind)
    if expected:
        return f"expected {expected}, got {got!r}"
    if kind == "literal_error":
        return f"expected one of {err['ctx']['expected']}, got {got!r}"
    if kind == "extra_forbidden":
        allowed = _fields_at(model, err["loc"][:-1]) if model is not None else []
        return _unknown_key(err["loc"][-1], allowed)
    if kind == "missing":
        return "required key is missing"
    if kind == "string_pattern_mismatch" and err["loc"] and err["loc"][-1] == "device":
        return f"expected auto, cpu, cuda, cuda:N or mps, got {got!r}"
    ctx = err.get("ctx") or {}
    for bound, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
        if bound in ctx:
            return f"must be {op} {ctx[bound]}, got {got!r}"
    return f"{err['msg'][0].lower()}{err['msg'][1:]}, got {got!r}"


def _fields_at(model: type[BaseModel], loc: Sequence[Any]) -> list[str]:
    import typing

    current: Any = model
    for part in loc:
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
            return []
        ann = fields[part].annotation
        candidates = [ann, *typing.get_args(ann)]
        current = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
    return list(getattr(current, "model_fields", {}) or [])


def _validation_error(
    exc: ValidationError, model: type[BaseModel], where: Callable[[Sequence[Any]], str], prefix: Sequence[str] = ()
) -> HarnessError:
    err = exc.errors()[0]
    msg = describe_error(err, model)
    more = len(exc.errors()) - 1
    tail = f" (and {more} more error{'s' if more > 1 else ''})" if more else ""
    return HarnessError(f"{where([*prefix, *err['loc']])}: {msg}{tail}")


def _format_source(suite: Suite, src: str) -> str:
    return src if src.startswith("--set ") else suite.where(src)


def dotted(loc: Sequence[Any]) -> str:
    """``("head", "options", "dropout")`` -> ``head.options.dropout``; ``(run)`` for the whole run."""
    return ".".join(str(p) for p in loc) or "(run)"


def resolve_run(
    config: RunConfig | Mapping[str, Any],
    registry: Registry,
    base_dir: str | Path,
    *,
    where: Callable[[Sequence[Any]], str] = dotted,
    index: int = 0,
    origin: dict[str, str] | None = None,
) -> ResolvedRun:
    """The one place a run is resolved, wherever it is resolved (a suite, a worker process,
    ``harness analyze``, the pytest fixture).

    The config is validated; each plugin is looked up and its options validated against
    the plugin's own schema (typed from here on); relative paths (``data_dir``, a
    plugin's :data:`~harness.base.LocalPath` options) are made absolute against
    ``base_dir``; ``auto`` device and precision become what this machine resolves them
    to. The result's ``config`` is what is recorded; resolving it again, in another
    process or from another working directory, gives the same run and the same run id.
    ``where(key_path)`` names a key's location in an error (a suite's ``file:line: key``).
    """
    base_dir = Path(base_dir).expanduser().resolve()
    notes: list[str] = []
    if isinstance(config, Mapping) and isinstance(config.get("model"), list):
        config = {**config, "model": first_available(config["model"], config.get("init", "pretrained"), where, notes)}
    if not isinstance(config, RunConfig):
        try:
            config = RunConfig.model_validate(config)
        except ValidationError as exc:
            raise _validation_error(exc, RunConfig, where) from None
    resolved: dict[str, tuple[Registered, Options]] = {}
    for family in PLUGIN_KEYS:
        ref: PluginRef = getattr(config, family)
        entry = registry.get(family, ref.name, where=where((family, "name")))
        try:
            options = entry.cls.Options.model_validate(ref.options, context={"base_dir": str(base_dir)})
        except ValidationError as exc:
            raise _validation_error(exc, entry.cls.Options, where, prefix=(family, "options")) from None
        resolved[family] = (entry, options)
    # record every option with its default filled in, and the device and precision this
    # machine resolves `auto` to, so the run id and the record say it all
    device = resolve_device(config.device)
    update: dict[str, Any] = {
        family: getattr(config, family).model_copy(update={"options": opts.model_dump(mode="json")})
        for family, (_, opts) in resolved.items()
    }
    precision = choose_precision(config.precision, device)
    update |= {"device": device, "precision": precision.precision}
    if config.data_dir and not Path(config.data_dir).expanduser().is_absolute():
        update["data_dir"] = str((base_dir / config.data_dir).resolve())
    config = config.model_copy(update=update)
    (dataset, dataset_options), (strategy, strategy_options), (head, head_options) = (
        resolved[f] for f in PLUGIN_KEYS
    )
    return ResolvedRun(
        index, config, dataset, dataset_options, strategy, strategy_options, head, head_options,
        run_id(config), origin or {}, base_dir, notes, precision.reason,
    )


def first_available(names: list[Any], init: Any, where: Callable[[Sequence[Any]], str], notes: list[str]) -> str:
    """``model: [bert-base-uncased, minilm]``: the first name this machine has (or can
    download: :func:`harness.model.unavailable`); what was chosen, and why, goes to ``notes``."""
    from harness.model import unavailable

    if not names or not all(isinstance(n, str) and n.strip() for n in names):
        raise HarnessError(
            f"{where(('model',))}: expected a model name, or a list of names of which the first available is "
            f"used, got {names!r}"
        )
    init = init if init in ("pretrained", "random") else "pretrained"  # a bad init fails its own validation
    skipped = []
    for name in names:
        why = unavailable(name, init)
        if why is None:
            passed = f" ({'; '.join(skipped)})" if skipped else ""
            notes.append(f"{where(('model',))}: using {name}, the first available of [{', '.join(names)}]{passed}")
            return name
        skipped.append(f"{name}: {why}")
    raise HarnessError(f"{where(('model',))}: none of these models is available here: {'; '.join(skipped)}")


def resolve(suite: Suite, registry: Registry, overrides: dict[str, Any] | None = None) -> list[ResolvedRun]:
    """Validate every run of the suite and look up its plugins. Raises on the first error.
    What resolving chose (the model of a ``model: [a, b]`` list) is logged, once per choice."""
    out: list[ResolvedRun] = []
    seen: set[str] = set()
    base_dir = suite.path.parent
    notes: list[str] = []
    for layers in expand(suite, overrides):
        if any(src.startswith("on_cpu.") for src in layers.source.values()):
            kept = [k for k in suite.on_cpu if layers.source.get(k, "").startswith("on_cpu.")]
            changed = ", ".join(f"{k}={v}" for k, v in suite.on_cpu.items() if k in kept)
            beaten = [k for k in suite.on_cpu if k not in kept]  # --set wins over on_cpu
            notes.append(f"{suite.where('on_cpu')}: the runs resolve to the CPU, so on_cpu applies: {changed or 'nothing'}"
                         + (f" (--set overrides {', '.join(beaten)})" if beaten else ""))
        data_dir = layers.data.get("data_dir")
        if isinstance(data_dir, str) and (layers.where(["data_dir"]) or "").startswith("--set "):
            # a data_dir written in the suite is relative to the suite file; one from --set to the cwd
            layers.data["data_dir"] = str((Path.cwd() / Path(data_dir).expanduser()).resolve())

        def where(loc: Sequence[Any], layers: _Layers = layers) -> str:
            return _format_source(suite, layers.where(loc) or dotted(loc))

        origin = {key: _format_source(suite, layers.where([key]) or key) for key in layers.data}
        run = resolve_run(layers.data, registry, base_dir, where=where, index=len(out), origin=origin)
        if run.run_id in seen:  # e.g. --set max_len=64 over a max_len matrix: one run, not three
            continue
        seen.add(run.run_id)
        out.append(run)
    for note in dict.fromkeys([*notes, *(n for run in out for n in run.notes)]):
        log.info(note)
    return out


def config_from_keys(keys: Mapping[str, Any]) -> dict[str, Any]:
    """A run's config from flat keys, dotted ones included (``{"dataset.subset.train": 512}``),
    layered as a suite's ``defaults`` are."""
    layers = _Layers()
    for key, value in keys.items():
        layers.set(key, value, key)
    return layers.data


def run_id(config: RunConfig) -> str:
    """A stable hash of the resolved config: the same run gets the same id on every machine."""
    exclude: dict[str, Any] = {}
    for key in NOT_IN_RUN_ID:
        top, _, sub = key.partition(".")
        exclude[top] = exclude.get(top, set()) | {sub} if sub else True
    data = config.model_dump(mode="json", exclude=exclude)
    for key in IN_RUN_ID_WHEN_SET:
        *parents, last = key.split(".")
        node = data
        for part in parents:
            node = node.get(part) or {}
        if last in node and node[last] is None:
            del node[last]
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]
