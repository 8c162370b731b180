"""Exporters: each run record, as it is stored, sent on (TensorBoard, MLflow, a team's tracker).

Two halves:

- :func:`notifier`: what :class:`harness.records.store.ResultsStore` calls right after writing a
  record: the ``harness_record_stored`` hook of every plugin that implements it, each on its
  own, so that an exporter that raises loses nothing (the record is already written), stops
  nothing and keeps the record from no other exporter. Its error is a one-line warning naming
  the plugin, logged on this module's logger (the command line shows it as a note).
- :func:`switch_on`: an exporter switched on by name, from the suite's ``export:`` list or
  ``harness run --export NAME``, is a subclass of :class:`harness.base.Exporter` in a
  plugin module (the built-ins: ``harness/builtin/tensorboard_export.py``,
  ``harness/builtin/mlflow_export.py``). Defining the class registers nothing: only when it is
  switched on is it checked (its options, the packages it needs) and an instance of it
  registered into the plugin manager, as ``export:<name>``.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import logging
from pathlib import Path
from typing import Any, Callable, Sequence

import pluggy
from pydantic import ValidationError

from harness.base import Exporter
from harness.config.keys import PluginRef
from harness.config.sentences import validation_error
from harness.config.suite import Suite, dotted
from harness.errors import HarnessError, install_hint, no_room, one_line, unknown_name_message
from harness.records.store import RESULTS_FILE, OnStored
from harness.records.summary import summarize

HOOK = "harness_record_stored"

log = logging.getLogger(__name__)


def available(pm: pluggy.PluginManager) -> dict[str, type[Exporter]]:
    """The exporters that can be switched on: the :class:`Exporter` subclasses defined in the
    plugin modules registered in ``pm`` (built-ins, entry points, local modules), by name."""
    found: dict[str, type[Exporter]] = {}
    for plugin in pm.get_plugins():
        if not inspect.ismodule(plugin):
            continue
        for value in vars(plugin).values():
            if not (isinstance(value, type) and issubclass(value, Exporter) and value.__module__ == plugin.__name__):
                continue
            other = found.get(value.name)
            if other is not None and other is not value:
                raise HarnessError(f"two plugins define the exporter '{value.name}': {other.__module__} and {plugin.__name__}")
            found[value.name] = value
    return found


def switch_on(pm: pluggy.PluginManager, suite: Suite, names: Sequence[str] = ()) -> list[str]:
    """Register the exporters named in the suite's ``export:`` list and by ``--export``
    (a name the suite lists already keeps the suite's options); return their names.

    Each error is one line naming where the exporter was asked for: an unknown name (with
    the known ones), an unknown or mistyped option, a missing package (with the extra that
    installs it)."""
    known = available(pm)
    wanted: dict[str, tuple[PluginRef, str, Callable[[Sequence[Any]], str]]] = {}
    for i, ref in enumerate(suite.export):
        at = f"export[{i}]"
        if ref.name in wanted:
            raise HarnessError(f"{suite.where(at)}: exporter '{ref.name}' is listed twice")

        def where(loc: Sequence[Any], at: str = at) -> str:
            return suite.where(f"{at}.{dotted(loc)}")

        wanted[ref.name] = (ref, suite.where(at), where)
    for name in names:
        wanted.setdefault(name, (PluginRef(name=name), f"--export {name}", lambda loc, n=name: f"--export {n}"))

    for name, (ref, at, where) in wanted.items():
        cls = known.get(name)
        if cls is None:
            raise HarnessError(unknown_name_message("exporter", name, sorted(known), at))
        try:
            options = cls.Options.model_validate(ref.options)
        except ValidationError as exc:
            raise validation_error(exc, cls.Options, where, prefix=("options",)) from None
        for module in cls.requires:
            try:
                importlib.import_module(module)
            except ImportError as exc:
                raise HarnessError(
                    f"{at}: the exporter '{name}' needs the package {module!r}, which is not installed "
                    f"({one_line(exc)}): {install_hint(cls.extra)}"
                ) from None
        pm.register(cls(options), name=f"export:{name}")
    return list(wanted)


def notifier(pm: pluggy.PluginManager) -> OnStored | None:
    """What the results store calls after writing each record: every ``harness_record_stored``
    implementation, each with its own copy of the record, each failure a warning. None when
    no plugin implements the hook."""
    impls = getattr(pm.hook, HOOK).get_hookimpls()
    if not impls:
        return None
    plugins = pm.get_plugins()
    # one caller per plugin (through pluggy, so HARNESS_TRACE_PLUGINS shows the calls)
    callers = [
        (pm.get_name(impl.plugin) or repr(impl.plugin), pm.subset_hook_caller(HOOK, [p for p in plugins if p is not impl.plugin]))
        for impl in impls
    ]

    def stored(record: dict[str, Any], out_dir: Path) -> None:
        for name, caller in callers:
            try:
                caller(record=copy.deepcopy(record), out_dir=out_dir)
            except Exception as exc:  # noqa: BLE001 - an exporter never costs a record or the suite
                # ... but a full disk stops it: the next runs could not be written either
                if (full := no_room(exc)) is not None:
                    raise full from None
                log.warning(
                    f"warning: plugin '{name}' failed to export run {record.get('run_id')} ({HOOK}): "
                    f"{type(exc).__name__}: {one_line(exc)}; the record is in {out_dir / RESULTS_FILE}"
                )

    return stored


def epoch_figures(epoch: dict[str, Any]) -> dict[str, float]:
    """One epoch of a record as the built-in exporters log it, step = ``epoch["epoch"]``:
    the training loss and seconds, real tokens/s, padding waste, peak memory, the evaluation's
    seconds and each of its metrics. Derived figures come from :func:`harness.records.summary.summarize`,
    so they mean what the tables mean."""
    derived = summarize({"epochs": [epoch]})
    figures = {
        "train/loss": epoch.get("train_loss"),
        "train/seconds": epoch.get("train_seconds"),
        "train/real_tokens_per_second": derived["real_tokens_per_second"],
        "train/padding_waste": derived["padding_waste"],
        "train/peak_memory_bytes": epoch.get("peak_memory_bytes"),
        "eval/seconds": epoch.get("eval_seconds"),
    }
    figures |= {f"eval/{metric}": value for metric, value in (epoch.get("metrics") or {}).items()}
    return {tag: float(value) for tag, value in figures.items() if isinstance(value, (int, float))}
