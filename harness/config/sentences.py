"""pydantic's validation errors as one short sentence naming the key path.

``suites/sst2.yaml:12: matrix.head[1].options.dropout: expected a number, got 'high'``: the
location comes from the caller (a suite's ``file:line: key``, ``--set key``, an option's
name), the sentence from here. Used wherever a typed model meets user input: suite keys,
plugin options, exporter options, SLURM settings.
"""

from __future__ import annotations

import typing
from typing import Any, Callable, Iterable, Sequence

from pydantic import BaseModel, ValidationError

from harness.errors import HarnessError, unknown_name_message


def unknown_key(key: Any, allowed: Iterable[str]) -> str:
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
        return unknown_key(err["loc"][-1], allowed)
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
    current: Any = model
    for part in loc:
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
            return []
        ann = fields[part].annotation
        candidates = [ann, *typing.get_args(ann)]
        current = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
    return list(getattr(current, "model_fields", {}) or [])


def validation_error(
    exc: ValidationError, model: type[BaseModel], where: Callable[[Sequence[Any]], str], prefix: Sequence[str] = ()
) -> HarnessError:
    err = exc.errors()[0]
    msg = describe_error(err, model)
    more = len(exc.errors()) - 1
    tail = f" (and {more} more error{'s' if more > 1 else ''})" if more else ""
    return HarnessError(f"{where([*prefix, *err['loc']])}: {msg}{tail}")
