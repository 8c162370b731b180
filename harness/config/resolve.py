"""A suite's runs, expanded and resolved: every plugin looked up, every option typed.

:func:`expand` layers each run's keys (the matrix, ``on_cpu`` where the run lands on a CPU,
``--set``); :func:`resolve_run` is the one function that resolves a run, wherever it is
resolved (a suite, a worker process, ``harness analyze``, the pytest fixture).
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from pydantic import ValidationError

from harness.base import Options
from harness.config.keys import FAMILIES, PluginRef, RunConfig, run_id
from harness.config.sentences import validation_error
from harness.config.suite import Layers, Suite, dotted, format_source
from harness.errors import HarnessError
from harness.loop.checkpoints import unavailable
from harness.loop.env import choose_precision, resolve_device
from harness.registry import Registered, Registry

log = logging.getLogger(__name__)


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


def expand(suite: Suite, overrides: dict[str, Any] | None = None) -> list[Layers]:
    """Every run of the suite as layered config dicts (not yet validated)."""
    overrides = overrides or {}
    keys = list(suite.matrix)
    combos = list(itertools.product(*(suite.matrix[k] for k in keys))) if keys else [()]
    bases = suite.runs or [{}]
    out = []
    for b, base in enumerate(bases):
        for combo in combos:
            layers = Layers()
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
            raise validation_error(exc, RunConfig, where) from None
    resolved: dict[str, tuple[Registered, Options]] = {}
    for family in FAMILIES:
        ref: PluginRef = getattr(config, family)
        entry = registry.get(family, ref.name, where=where((family, "name")))
        try:
            options = entry.cls.Options.model_validate(ref.options, context={"base_dir": str(base_dir)})
        except ValidationError as exc:
            raise validation_error(exc, entry.cls.Options, where, prefix=(family, "options")) from None
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
        resolved[f] for f in FAMILIES
    )
    return ResolvedRun(
        index, config, dataset, dataset_options, strategy, strategy_options, head, head_options,
        run_id(config), origin or {}, base_dir, notes, precision.reason,
    )


def first_available(names: list[Any], init: Any, where: Callable[[Sequence[Any]], str], notes: list[str]) -> str:
    """``model: [bert-base-uncased, minilm]``: the first name this machine has (or can
    download: :func:`harness.model.unavailable`); what was chosen, and why, goes to ``notes``."""
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

        def where(loc: Sequence[Any], layers: Layers = layers) -> str:
            return format_source(suite, layers.where(loc) or dotted(loc))

        origin = {key: format_source(suite, layers.where([key]) or key) for key in layers.data}
        run = resolve_run(layers.data, registry, base_dir, where=where, index=len(out), origin=origin)
        if run.run_id in seen:  # e.g. --set max_len=64 over a max_len matrix: one run, not three
            continue
        seen.add(run.run_id)
        out.append(run)
    for note in dict.fromkeys([*notes, *(n for run in out for n in run.notes)]):
        log.info(note)
    return out
