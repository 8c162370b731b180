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
"""

from __future__ import annotations

from typing import Callable

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
