"""The one strict base of every typed settings model: suite keys, plugin options, SLURM settings.

Unknown keys are errors, values are immutable, and a boolean is no number: ``epochs: true``
is a mistake, not 1 epoch (pydantic's lax mode would take it as 1).
"""

from __future__ import annotations

import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError


def _numeric_kinds(annotation: Any) -> set[type]:
    """The number types (int, float, bool) an annotation accepts, through unions and constraints."""
    if annotation in (int, float, bool):
        return {annotation}
    return set().union(*(_numeric_kinds(a) for a in typing.get_args(annotation)))


def no_bool_for_numbers(model: type[BaseModel], value: Any, info: ValidationInfo) -> Any:
    """A boolean given for a number field is refused (``int_type``/``float_type``)."""
    if isinstance(value, bool) and info.field_name in model.model_fields:
        kinds = _numeric_kinds(model.model_fields[info.field_name].annotation)
        if kinds and bool not in kinds:
            kind = "int_type" if int in kinds and float not in kinds else "float_type"
            raise PydanticCustomError(kind, "Input should be a number, not a boolean")
    return value


class Strict(BaseModel):
    """Unknown keys are errors, values are immutable, no boolean where a number belongs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    _no_bool_for_numbers = field_validator("*", mode="before")(classmethod(no_bool_for_numbers))
