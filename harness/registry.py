"""One factory for a fresh plugin manager, and the registry of datasets, strategies, heads.

``load_registry()`` builds a new :class:`pluggy.PluginManager` every time (nothing is
registered at import time): it adds the hook specs, registers the built-in plugins
(``harness.builtin.*``), loads the ``harness`` entry points of installed packages, then the
local plugin modules named in the suite or with ``--plugin``, calls ``check_pending()`` so a
misspelt hook fails loudly, and collects what every plugin registers.

Escape hatches (as pytest and datasette offer):

- ``HARNESS_DISABLE_PLUGIN_AUTOLOAD=1``: do not load entry points;
- ``HARNESS_BLOCK_PLUGINS=name,name``: skip these plugins (entry-point names or built-in
  module names such as ``harness.builtin.cola``);
- ``HARNESS_TRACE_PLUGINS=1``: log every hook call to stderr.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import inspect
import os
import pkgutil
import re
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Iterable, Sequence

import pluggy
from pydantic import BaseModel

from harness import hookspecs
from harness.base import Dataset, Head, HeadOptions, TokenizerStrategy
from harness.config.keys import FAMILIES
from harness.errors import HarnessError, one_line, unknown_name_message

ENTRY_POINT_GROUP = "harness"
AUTOLOAD_ENV = "HARNESS_DISABLE_PLUGIN_AUTOLOAD"
BLOCK_ENV = "HARNESS_BLOCK_PLUGINS"
TRACE_ENV = "HARNESS_TRACE_PLUGINS"

BUILTIN_PACKAGE = "harness.builtin"


def builtin_plugins() -> list[str]:
    """Every module of ``harness.builtin`` (``harness/builtin/``) is a plugin:
    adding a built-in is adding a module, with no list to edit."""
    package = importlib.import_module(BUILTIN_PACKAGE)
    return sorted(f"{BUILTIN_PACKAGE}.{m.name}" for m in pkgutil.iter_modules(package.__path__) if not m.name.startswith("_"))


#: each plugin family (:data:`harness.config.keys.FAMILIES`): its registration hook and base class
HOOKS: dict[str, tuple[str, type]] = dict(zip(FAMILIES, (
    ("harness_register_datasets", Dataset),
    ("harness_register_tokenizer_strategies", TokenizerStrategy),
    ("harness_register_heads", Head),
)))
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.+-]*$")


@dataclass(frozen=True)
class Registered:
    family: str
    name: str
    cls: type
    plugin: str  # the plugin's name in the plugin manager
    source: str  # "built-in", "entry point <dist> <version>", "local module <path>"


class Registry:
    """Every registered dataset, tokenizer strategy and head, by family and name."""

    def __init__(self, pm: pluggy.PluginManager, sources: dict[str, str]):
        self.pm = pm
        #: plugin name -> where it comes from (built-in, a distribution, a local module)
        self.sources = sources
        self.entries: dict[str, dict[str, Registered]] = {family: {} for family in FAMILIES}
        plugins = pm.get_plugins()
        for family, (hook_name, base) in HOOKS.items():
            for impl in getattr(pm.hook, hook_name).get_hookimpls():
                plugin_name = pm.get_name(impl.plugin) or repr(impl.plugin)
                # call each plugin's implementation on its own (through pluggy, so tracing
                # sees it) to know which plugin registered which class
                caller = pm.subset_hook_caller(hook_name, [p for p in plugins if p is not impl.plugin])
                source = sources.get(plugin_name, "plugin")

                def register(cls: type, _family=family, _base=base, _plugin=plugin_name, _source=source) -> None:
                    self._add(_family, _base, cls, _plugin, _source)

                try:
                    caller(register=register)
                except HarnessError:
                    raise
                except Exception as exc:
                    raise HarnessError(
                        f"plugin '{plugin_name}' ({source}) failed in {hook_name}: {type(exc).__name__}: {one_line(exc)}",
                        detail=traceback.format_exc(),
                    ) from None

    def _add(self, family: str, base: type, cls: type, plugin: str, source: str) -> None:
        where = f"plugin '{plugin}' ({source})"
        if not (isinstance(cls, type) and issubclass(cls, base)):
            raise HarnessError(f"{where} registered {cls!r} as a {family}: it must subclass harness.base.{base.__name__}")
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not _NAME.match(name):
            raise HarnessError(f"{where} registered {cls.__name__} without a valid `name` (got {name!r})")
        options = getattr(cls, "Options", None)
        if not (isinstance(options, type) and issubclass(options, BaseModel)):
            raise HarnessError(f"{where}: {cls.__name__}.Options must be a pydantic model (harness.base.Options)")
        if family == "head" and not issubclass(options, HeadOptions):  # every head takes dropout, freeze_backbone
            raise HarnessError(f"{where}: {cls.__name__}.Options must subclass harness.base.HeadOptions")
        existing = self.entries[family].get(name)
        if existing is not None:
            raise HarnessError(
                f"two plugins register the {family} '{name}': '{existing.plugin}' ({existing.source}) "
                f"and '{plugin}' ({source}); block one with {BLOCK_ENV}"
            )
        self.entries[family][name] = Registered(family, name, cls, plugin, source)

    def names(self, family: str) -> list[str]:
        return sorted(self.entries[family])

    def get(self, family: str, name: str, where: str = "") -> Registered:
        """The class registered as ``name``; an error with suggestions when there is none."""
        found = self.entries[family].get(name)
        if found is not None:
            return found
        raise HarnessError(unknown_name_message(family, name, self.names(family), where))


def _blocked() -> set[str]:
    return {b.strip() for b in os.environ.get(BLOCK_ENV, "").split(",") if b.strip()}


def _hook_names() -> list[str]:
    return sorted(n for n in vars(hookspecs) if n.startswith(f"{hookspecs.PROJECT}_"))


def _register(pm: pluggy.PluginManager, plugin: object, name: str) -> None:
    # a function named like a hook but not marked @hookimpl would be silently ignored
    marker = f"{hookspecs.PROJECT}_impl"
    for attr in sorted(set(_hook_names()) & set(dir(plugin))):
        if callable(getattr(plugin, attr)) and not hasattr(getattr(plugin, attr), marker):
            raise HarnessError(f"plugin '{name}': {attr} is not marked @hookimpl (from harness import hookimpl)")
    try:
        pm.register(plugin, name=name)
    except pluggy.PluginValidationError as exc:  # a bad hook signature
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        hook = re.search(r"for hook '(\w+)'", lines[0] if lines else "")
        spec = getattr(hookspecs, hook.group(1), None) if hook else None
        if spec is None:
            raise HarnessError(f"plugin '{name}': {one_line(exc)}") from None
        expected = f"{spec.__name__}({', '.join(inspect.signature(spec).parameters)})"
        raise HarnessError(f"plugin '{name}': {'; '.join(lines[1:])}; the hook is {expected}") from None
    except ValueError as exc:  # the same plugin or name twice
        raise HarnessError(f"plugin '{name}': {one_line(exc)}") from None


def _check_pending(pm: pluggy.PluginManager) -> None:
    """pluggy's ``check_pending()``, with the plugin's name and a suggestion for a misspelt hook."""
    for hook_name in sorted(vars(pm.hook)):
        caller = getattr(pm.hook, hook_name)
        if hook_name.startswith("_") or caller.has_spec():
            continue
        for impl in caller.get_hookimpls():
            if not impl.optionalhook:
                plugin = pm.get_name(impl.plugin) or repr(impl.plugin)
                raise HarnessError(f"plugin '{plugin}': " + unknown_name_message("hook", hook_name, _hook_names()))
    pm.check_pending()  # anything the loop above missed


def _import_local(spec: str, base_dir: Path) -> tuple[ModuleType, str]:
    """Import a local plugin: a path to a ``.py`` file (relative to ``base_dir``) or a module name."""
    if spec.endswith(".py") or "/" in spec or os.sep in spec:
        path = Path(spec).expanduser()
        if not path.is_absolute():
            path = base_dir / path
        if not path.is_file():
            raise HarnessError(f"plugin module {spec}: no such file ({path})")
        mod_name = f"harness_local_{re.sub(r'[^0-9A-Za-z_]', '_', str(path.resolve()))}"
        module_spec = importlib.util.spec_from_file_location(mod_name, path)
        assert module_spec is not None and module_spec.loader is not None
        module = importlib.util.module_from_spec(module_spec)
        try:
            module_spec.loader.exec_module(module)
        except Exception as exc:
            raise HarnessError(f"plugin module {path} failed to import: {type(exc).__name__}: {one_line(exc)}",
                               detail=traceback.format_exc()) from None
        return module, str(path)
    try:
        module = importlib.import_module(spec)
    except Exception as exc:
        raise HarnessError(f"plugin module '{spec}' failed to import: {type(exc).__name__}: {one_line(exc)}",
                           detail=traceback.format_exc()) from None
    return module, getattr(module, "__file__", None) or spec


def _entry_points() -> Iterable[importlib.metadata.EntryPoint]:
    return importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)


def make_plugin_manager(
    local_plugins: Sequence[str] = (), base_dir: str | Path = "."
) -> tuple[pluggy.PluginManager, dict[str, str]]:
    """A fresh plugin manager with built-ins, entry points and local modules registered.

    Returns the manager and, for each registered plugin name, where it came from.
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    if os.environ.get(TRACE_ENV):
        pm.trace.root.setwriter(sys.stderr.write)
        pm.enable_tracing()
    blocked = _blocked()
    sources: dict[str, str] = {}

    for mod_name in builtin_plugins():
        if mod_name in blocked:
            continue
        _register(pm, importlib.import_module(mod_name), mod_name)
        sources[mod_name] = "built-in"

    if not os.environ.get(AUTOLOAD_ENV):
        seen: set[str] = set()
        for ep in _entry_points():
            if ep.name in blocked or ep.name in seen:
                continue
            seen.add(ep.name)
            dist = getattr(ep, "dist", None)
            origin = f"entry point {dist.name} {dist.version}" if dist is not None else f"entry point {ep.value}"
            try:
                plugin = ep.load()
            except Exception as exc:
                raise HarnessError(
                    f"plugin '{ep.name}' ({origin}) failed to import: {type(exc).__name__}: {one_line(exc)}; "
                    f"uninstall it or set {BLOCK_ENV}={ep.name}", detail=traceback.format_exc(),
                ) from None
            _register(pm, plugin, ep.name)
            sources[ep.name] = origin

    for spec in local_plugins:
        module, where = _import_local(spec, Path(base_dir))
        name = f"local:{where}"
        if name in blocked or pm.is_registered(module):
            continue
        _register(pm, module, name)
        sources[name] = f"local module {where}"

    try:
        _check_pending(pm)
    except pluggy.PluginValidationError as exc:
        raise HarnessError(one_line(exc)) from None
    return pm, sources


def load_registry(local_plugins: Sequence[str] = (), base_dir: str | Path = ".") -> Registry:
    pm, sources = make_plugin_manager(local_plugins, base_dir)
    return Registry(pm, sources)
