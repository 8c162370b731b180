"""Tables for the docs, generated from the typed models: the suite keys, and helpers that
render a field's type and default as a suite would write them (the record's field table
uses them too). docs/suites.md holds the key table between ``<!-- keys:start -->`` and
``<!-- keys:end -->``; a test compares the two."""

from __future__ import annotations

import types
import typing
from typing import Any, Literal

from pydantic import BaseModel

from harness.config.keys import RunConfig, run_id_keys


def key_table() -> str:
    """Every key a suite may set, as a markdown table: key (dotted), type, default, meaning
    (and whether it is part of the run id, when it is not always)."""
    never, when_set = run_id_keys()
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for key, kind, default, meaning in _keys(RunConfig, RunConfig(), ""):
        if key in never:
            meaning += "; not part of the run id"
        elif key in when_set:
            meaning += "; part of the run id only when set"
        lines.append(f"| `{key}` | {kind} | `{cell(default)}` | {cell(meaning)} |")
    return "\n".join(lines) + "\n"


def _keys(
    model: type[BaseModel], values: BaseModel, prefix: str, inherited: str = ""
) -> typing.Iterator[tuple[str, str, str, str]]:
    for name, field in model.model_fields.items():
        value = getattr(values, name)
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):  # nested: dotted keys
            yield from _keys(annotation, value, f"{prefix}{name}.", field.description or "")
            continue
        optional = _optional_model(annotation)
        if optional is not None and value is None:  # off by default: the key, then its keys when given
            yield f"{prefix}{name}", "mapping \\| null", "null", field.description or inherited
            for sub, sub_field in optional.model_fields.items():
                default = "(required)" if sub_field.is_required() else _yaml(sub_field.default)
                kind = type_text(sub_field.annotation, sub_field.metadata)
                yield f"{prefix}{name}.{sub}", kind, default, sub_field.description or ""
            continue
        # a plugin's `name` says what its parent key says (dataset.name: the dataset ...)
        yield f"{prefix}{name}", type_text(annotation, field.metadata), _yaml(value), field.description or inherited


def _optional_model(annotation: Any) -> type[BaseModel] | None:
    """``X`` of an ``X | None`` annotation whose ``X`` is a model (a nested key that is off by default)."""
    if typing.get_origin(annotation) not in (typing.Union, types.UnionType):
        return None
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if len(args) == 1 and isinstance(args[0], type) and issubclass(args[0], BaseModel):
        return args[0]
    return None


def type_text(annotation: Any, metadata: typing.Sequence[Any] = ()) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        base, *extra = typing.get_args(annotation)
        return type_text(base, [*metadata, *extra])
    if origin is Literal:
        return " \\| ".join(f"`{a}`" for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(
            "null" if a is type(None) else type_text(a, metadata) for a in typing.get_args(annotation)
        )
    if annotation is type(None):
        return "null"
    if origin is dict or annotation is dict:
        return "mapping"
    bounds = [
        f"{sign} {getattr(m, attr)}"
        for m in metadata
        for attr, sign in (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤"))
        if getattr(m, attr, None) is not None
    ]
    return " ".join([getattr(annotation, "__name__", str(annotation)), ", ".join(bounds)]).strip()


def _yaml(value: Any) -> str:
    """A default as it would be written in a suite."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_yaml(v)}" for k, v in value.items()) + "}"
    return str(value)


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
