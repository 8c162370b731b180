"""The typed configuration of one run. Past the suite loader, no raw dict travels.

Every key a suite may set under ``defaults``, ``matrix``, ``runs``, ``on_cpu`` or with
``--set`` is a field of :class:`RunConfig` (nested ones with dots:
``dataset.subset.train``, ``strategy.options.truncation``). Plugin options are checked
against the plugin's own schema when the run is resolved (:mod:`harness.suite`).
"""

from __future__ import annotations

import typing
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError


def _numeric_kinds(annotation: Any) -> set[type]:
    """The number types (int, float, bool) an annotation accepts, through unions and constraints."""
    if annotation in (int, float, bool):
        return {annotation}
    return set().union(*(_numeric_kinds(a) for a in typing.get_args(annotation)))


def no_bool_for_numbers(model: type[BaseModel], value: Any, info: ValidationInfo) -> Any:
    """``epochs: true`` is a mistake, not 1 epoch (pydantic's lax mode would take it as 1)."""
    if isinstance(value, bool) and info.field_name in model.model_fields:
        kinds = _numeric_kinds(model.model_fields[info.field_name].annotation)
        if kinds and bool not in kinds:
            kind = "int_type" if int in kinds and float not in kinds else "float_type"
            raise PydanticCustomError(kind, "Input should be a number, not a boolean")
    return value


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    _no_bool_for_numbers = field_validator("*", mode="before")(classmethod(no_bool_for_numbers))


class PluginRef(Strict):
    """A plugin by name, with its options: ``linear`` or ``{name: mlp, options: {...}}``."""

    name: str
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value


class Subset(Strict):
    """A seeded subset of N examples per split, stratified by label (None: the whole split)."""

    train: PositiveInt | None = None
    validation: PositiveInt | None = None
    test: PositiveInt | None = None
    seed: int = Field(0, description="seed of the subset draw; independent of the run's seed")


class DatasetRef(PluginRef):
    subset: Subset = Field(default_factory=Subset)


class Launcher(Strict):
    """How a run's processes are started: one, in the ``harness run`` process (the default),
    or data-parallel workers through torchrun (see docs/distributed.md). ``batch_size``
    stays the global batch: each of the ``nproc x nnodes`` ranks takes its share."""

    nproc: PositiveInt = Field(1, description="processes per node, one GPU each (torchrun --nproc-per-node)")
    nnodes: PositiveInt = Field(1, description="nodes (torchrun --nnodes); more than 1 needs rdzv_endpoint")
    rdzv_endpoint: str | None = Field(None, description="host:port every node reaches (torchrun --rdzv-endpoint)")
    rdzv_backend: str = Field("c10d", description="torchrun --rdzv-backend")
    rdzv_id: str | None = Field(None, description="job id shared by the nodes; each run meets as <rdzv_id>-<run_id>")
    timeout: float | None = Field(None, gt=0, description="seconds; workers still running then are stopped, the run failed")


class RunConfig(Strict):
    """One run: model, data, strategy, head, and the fine-tuning loop's settings."""

    model: str = Field(
        "minilm",
        description="'minilm' (the embedded default), a Hugging Face name, a local checkpoint "
        "path, or with init=random an architecture: bert-base, bert-large, minilm, bert-tiny",
    )
    init: Literal["pretrained", "random"] = Field("pretrained", description="random: build from the config alone, for timing")
    tokenizer: str | None = Field(None, description="tokenizer name or path (default: the model's)")
    dataset: DatasetRef = Field(default_factory=lambda: DatasetRef(name="cola"))
    strategy: PluginRef = Field(default_factory=lambda: PluginRef(name="fixed"))
    head: PluginRef = Field(default_factory=lambda: PluginRef(name="linear"))
    max_len: int = Field(128, ge=2, description="MAX_LEN: tokens per example, special tokens included")
    batch_size: PositiveInt = 32
    eval_batch_size: PositiveInt | None = Field(None, description="default: batch_size")
    epochs: PositiveInt = 4
    lr: float = Field(2e-5, gt=0)
    adam_eps: float = Field(1e-8, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="share of the steps with a linear warm-up")
    max_grad_norm: float | None = Field(1.0, gt=0, description="gradient clipping; null: none")
    seed: int = 42
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?|mps)$")
    precision: Literal["auto", "fp32", "tf32", "bf16", "fp16"] = "auto"
    attention: Literal["sdpa", "eager"] = "sdpa"
    compile: bool = False
    warmup_batches: int = Field(2, ge=0, description="untimed steps before the first epoch (weights unchanged)")
    eval_split: Literal["validation", "test"] = "validation"
    data_dir: str | None = Field(None, description="default: $HARNESS_DATA_DIR, then the cache")
    launcher: Launcher = Field(default_factory=Launcher, description="data-parallel workers through torchrun")
