"""The plugin contract: the pluggy markers and every hook, nothing else.

A plugin is a module or object with functions marked ``@hookimpl`` whose names match
the hooks below. Each ``harness_register_*`` hook receives a ``register`` callable and
calls it once per class it provides::

    from harness import hookimpl
    from harness.base import Dataset

    class MyData(Dataset):
        name = "my_data"
        ...

    @hookimpl
    def harness_register_datasets(register):
        register(MyData)

All hooks are called for every plugin (none is first-result). Registering two classes
under one name in the same family is an error at start-up that names both plugins.

The fourth hook, :func:`harness_record_stored`, is not a registration: it hands each run
record to every plugin that implements it, once, right after the record is written to
``<out>/results.jsonl`` (an exporter: TensorBoard, MLflow, a team's own tracker)::

    @hookimpl
    def harness_record_stored(record, out_dir):
        send_somewhere(record["run_id"], record["status"], record["metrics"])
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pluggy

PROJECT = "harness"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def harness_register_datasets(register: Callable[[type], None]) -> None:
    """Register dataset classes.

    :param register: call ``register(cls)`` with a subclass of
        :class:`harness.base.Dataset` for each dataset the plugin provides.
    :return: nothing; every plugin's implementation is called.
    """


@hookspec
def harness_register_tokenizer_strategies(register: Callable[[type], None]) -> None:
    """Register tokenizer strategy classes (truncation, padding, batch order).

    :param register: call ``register(cls)`` with a subclass of
        :class:`harness.base.TokenizerStrategy` for each strategy the plugin provides.
    :return: nothing; every plugin's implementation is called.
    """


@hookspec
def harness_register_heads(register: Callable[[type], None]) -> None:
    """Register classification head classes.

    :param register: call ``register(cls)`` with a subclass of
        :class:`harness.base.Head` for each head the plugin provides.
    :return: nothing; every plugin's implementation is called.
    """


@hookspec
def harness_record_stored(record: dict[str, Any], out_dir: Path) -> None:
    """A run's record was just stored in ``out_dir/results.jsonl``: export it.

    Called once for each record as it is stored, whatever its ``status`` (``ok``,
    ``diverged`` and ``failed`` alike), in the process that writes it to ``results.jsonl``:
    the ``harness run`` process (the run in its own process or not, ``--jobs`` or not), or,
    with ``--executor slurm``, the job that trained the run. A run that a resumed
    suite skips because it already finished is not stored again, and not exported again; a
    run stored again (a ``failed`` one resumed, or any with ``--rerun``) is exported again
    with its new record, which replaces the old one in ``results.jsonl``.

    :param record: the record as stored (a copy: changing it changes nothing), the plain
        JSON object of one ``results.jsonl`` line; see docs/results.md for its fields.
    :param out_dir: the output directory holding ``results.jsonl``.
    :return: nothing; every plugin's implementation is called. An exception raised here
        loses nothing: the record is already written; it is reported as a one-line warning
        naming the plugin, and the suite goes on.
    """
