"""Every key a run may set: the typed configuration of one run, and which keys make its id.

Every key a suite may set under ``defaults``, ``matrix``, ``runs``, ``on_cpu`` or with
``--set`` is a field of :class:`RunConfig` (nested ones with dots:
``dataset.subset.train``, ``strategy.options.truncation``). Plugin options are checked
against the plugin's own schema when the run is resolved (:mod:`harness.config.resolve`).
Past the suite loader, no raw dict travels.

Whether a key is part of a run's id is said once, on the field itself
(``json_schema_extra={"run_id": ...}``, :data:`NEVER` or :data:`WHEN_SET`); :func:`run_id`,
the docs' key table, the record's description of ``run_id`` and the summaries that group
runs read it from there (:func:`run_id_keys`).
"""

from __future__ import annotations

import hashlib
import json
import typing
from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel, Field, PositiveInt, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from harness.config.strict import Strict

#: the splits a dataset may have; ``validation`` is what the loop evaluates after each epoch
SPLITS: tuple[str, ...] = ("train", "validation", "test")
Split = Literal["train", "validation", "test"]
#: the plugin families a run names, as its keys: a dataset, a tokenizer strategy, a head
FAMILIES: tuple[str, ...] = ("dataset", "strategy", "head")

#: a key that is no part of its run's id: it does not change what the run measures
NEVER = {"run_id": "never"}
#: a key added after the first record format, part of the run's id only when set (not null):
#: a run that does not use it keeps the id it had before the key existed
WHEN_SET = {"run_id": "when_set"}


class PluginRef(Strict):
    """A plugin by name, with its options: ``linear`` or ``{name: mlp, options: {...}}``."""

    name: str
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="the plugin's options, see `harness plugins` (each with its type and default); "
        "an unknown option is an error",
    )

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value


class Subset(Strict):
    """A seeded subset of N examples per split, stratified by label (None: the whole split)."""

    train: PositiveInt | None = Field(
        None, description="train on N examples of the train split, drawn seeded and stratified by label; null: all"
    )
    validation: PositiveInt | None = Field(
        None, description="evaluate on N examples of the validation split (drawn the same way); null: all"
    )
    test: PositiveInt | None = Field(None, description="the same for the test split (with `eval_split: test`)")
    seed: int = Field(
        0, description="seed of the subset draw; independent of the run's `seed`, so runs with other seeds "
        "train on the same examples"
    )


class ValidationFromTrain(Strict):
    """The validation split carved out of train, as the tutorial does (``random_split`` 90/10)."""

    size: int | float = Field(
        description="how many training examples become the validation split: a share (0 < x < 1; the "
        "validation split gets the rest after int((1 - x) x N) stay in train, the tutorial's 90/10 of 8,551: "
        "856) or a number of examples"
    )
    seed: int = Field(
        0, description="seed of the carve; independent of the run's `seed` and of `dataset.subset.seed`"
    )
    by: Literal["random", "stratified"] = Field(
        "random",
        description="`random`: torch's `random_split` of the train split with a generator seeded `seed` (the "
        "tutorial's); `stratified`: each label keeps its share on both sides",
    )

    @field_validator("size", mode="before")
    @classmethod
    def _a_number(cls, size: Any) -> Any:
        if not isinstance(size, (int, float)) or isinstance(size, bool):  # not the union's `size.int` path
            raise PydanticCustomError("float_type", "Input should be a number")
        return size

    @field_validator("size")
    @classmethod
    def _share_or_count(cls, size: int | float) -> int | float:
        if not (0 < size < 1 if isinstance(size, float) else size >= 1):
            raise PydanticCustomError(
                "share", "expected a share between 0 and 1 (exclusive) or a whole number of examples"
            )
        return size


class DatasetRef(PluginRef):
    subset: Subset = Field(default_factory=Subset)
    validation_from_train: ValidationFromTrain | None = Field(
        None, json_schema_extra=WHEN_SET,
        description="carve the validation split out of the train split (`{size: 0.1, seed: 42, by: random}`): "
        "the carved examples are the validation split (the dataset's own is not read), training and "
        "`dataset.subset.train` use the rest; null: the dataset's own validation split",
    )


class Launcher(Strict):
    """How a run's processes are started: one, in the ``harness run`` process (the default),
    or data-parallel workers through torchrun (see docs/distributed.md). ``batch_size``
    stays the global batch: each of the ``nproc x nnodes`` ranks takes its share."""

    nproc: PositiveInt = Field(
        1,
        description="data-parallel processes per node (`torchrun --nproc-per-node`; `harness run --nproc N`): "
        "one GPU each, NCCL; with `device: cpu`, CPU processes over gloo",
    )
    nnodes: PositiveInt = Field(
        1, description="nodes (`torchrun --nnodes`), the same command on each; more than 1 needs `rdzv_endpoint`"
    )
    rdzv_endpoint: str | None = Field(
        None, description="`host:port` every node reaches (`torchrun --rdzv-endpoint`)", json_schema_extra=NEVER
    )
    rdzv_backend: str = Field("c10d", description="`torchrun --rdzv-backend`", json_schema_extra=NEVER)
    rdzv_id: str | None = Field(
        None, description="job id shared by the nodes; each run meets as `<rdzv_id>-<run_id>`", json_schema_extra=NEVER
    )
    timeout: float | None = Field(
        None, gt=0,
        description="seconds; workers still running then are stopped and the run is recorded `failed`; "
        "null: no limit", json_schema_extra=NEVER,
    )


class RunConfig(Strict):
    """One run: model, data, strategy, head, and the fine-tuning loop's settings."""

    model: str = Field(
        "minilm",
        description="`minilm` (the embedded MiniLM, offline), a Hugging Face name (from the local cache, or "
        "downloaded when the hub is reachable), a local checkpoint directory (`config.json` and "
        "`model.safetensors`); with `init: random` also an architecture: `bert-base`, `bert-large`, "
        "`minilm`, `bert-tiny`. A list (`[bert-base-uncased, minilm]`, in `defaults`, `runs` or `on_cpu`; in a "
        "`matrix` a list inside the list): the first one this machine has, or can download; a note says which, "
        "the record holds it",
    )
    init: Literal["pretrained", "random"] = Field(
        "pretrained",
        description="`pretrained`: load the checkpoint's weights; `random`: build the model from its config "
        "alone (random weights, for timing)",
    )
    tokenizer: str | None = Field(
        None,
        description="tokenizer name or path; null: the model's own (for a random-init architecture, the "
        "embedded uncased WordPiece)",
    )
    dataset: DatasetRef = Field(
        default_factory=lambda: DatasetRef(name="cola"),
        description="the dataset: `cola`, `sst2`, `mrpc`, `imdb`, `files` or a plugin's; `dataset: cola` "
        "is short for `{name: cola}`",
    )
    strategy: PluginRef = Field(
        default_factory=lambda: PluginRef(name="fixed"),
        description="the tokenizer strategy (truncation, padding, batch order): `fixed`, `dynamic`, "
        "`bucketed` or a plugin's",
    )
    head: PluginRef = Field(
        default_factory=lambda: PluginRef(name="linear"),
        description="the classification head: `linear`, `cls`, `mean`, `mlp`, `auto` (the model family's own) "
        "or a plugin's",
    )
    max_len: int = Field(
        128, ge=2,
        description="MAX_LEN: tokens per example, special tokens included; longer texts are truncated "
        "(`strategy.options.truncation`); at most the model's position limit",
    )
    batch_size: PositiveInt = Field(
        32,
        description="training examples per optimizer step: the global batch, split evenly over the "
        "data-parallel ranks (`launcher.nproc` x `launcher.nnodes`, which must divide it)",
    )
    eval_batch_size: PositiveInt | None = Field(
        None,
        description="examples per evaluation batch (global, like `batch_size`); null: `batch_size`. "
        "Evaluation batches are sorted by length, so a larger one is faster",
    )
    epochs: PositiveInt = Field(
        4,
        description="passes over the training data, each followed by an evaluation; a run whose loss "
        "becomes NaN or infinite stops there (`diverged`)",
    )
    lr: float = Field(
        2e-5, gt=0,
        description="AdamW's peak learning rate, reached after the warm-up, then decayed linearly to 0 "
        "at the last step",
    )
    adam_eps: float = Field(1e-8, gt=0, description="AdamW's epsilon (fused AdamW where torch has the kernel)")
    weight_decay: float = Field(
        0.0, ge=0, description="AdamW's decoupled weight decay, applied to every trainable parameter"
    )
    warmup_ratio: float = Field(
        0.0, ge=0, lt=1,
        description="share of all optimizer steps over which the learning rate rises linearly from 0 to `lr`",
    )
    max_grad_norm: float | None = Field(
        1.0, gt=0, description="clip the gradients' global L2 norm to this before each step; null: no clipping"
    )
    seed: int = Field(
        42,
        description="seeds the model's initialisation (the head's; all of it with `init: random`), dropout "
        "and the order of the training batches; not the subset draw (`dataset.subset.seed`)",
    )
    device: str = Field(
        "auto", pattern=r"^(auto|cpu|cuda(:\d+)?|mps)$",
        description="`auto`: `cuda` when torch sees a GPU, else `cpu`; or `cpu`, `cuda`, `cuda:N`, `mps`. "
        "The record holds the resolved device",
    )
    precision: Literal["auto", "fp32", "tf32", "bf16", "fp16"] = Field(
        "auto",
        description="`auto`: chosen by the hardware, bf16 where it is computed natively (a GPU with bf16; a "
        "CPU with AVX512-BF16, AMX or Arm BF16), else fp32; `tf32`: TF32 matmuls on a CUDA GPU (elsewhere "
        "fp32); `bf16`, `fp16`: autocast (fp16 with a gradient scaler). bf16 set for a CPU without native bf16 "
        "is emulated, several times slower than fp32 (a warning). The record holds the resolved precision "
        "and `env.precision_reason`",
    )
    attention: Literal["sdpa", "eager"] = Field(
        "sdpa",
        description="the backbone's attention implementation: `sdpa` (torch's scaled_dot_product_attention) "
        "or `eager` (the plain one)",
    )
    compile: bool = Field(
        False,
        description="`torch.compile(dynamic=True)` the model; compilation happens in the untimed warm-up "
        "(at least 2 batches) and is recorded as `compile_seconds`, apart from epoch time",
    )
    warmup_batches: int = Field(
        2, ge=0,
        description="untimed forward and backward passes on the first training batches before epoch 1 "
        "(kernel selection, allocator); no optimizer step, the weights stay as they were. At least 2 "
        "with `compile: true`",
    )
    eval_split: Literal["validation", "test"] = Field(
        "validation",
        description="the split evaluated after each epoch, whose metrics the record and the table report",
    )
    test_split: Literal["validation", "test"] | None = Field(
        None,
        description="a split evaluated once, after the last epoch (the tutorial's final MCC on the "
        "out-of-domain set: `test` of `cola`): the record's `test_metrics`, the table's `test` columns; "
        "not timed as epoch time; null: none", json_schema_extra=WHEN_SET,
    )
    data_dir: str | None = Field(
        None,
        description="the folder holding one folder per dataset; null: `$HARNESS_DATA_DIR`, then the cache "
        "(`~/.cache/harness`). Relative to the suite file (to the current folder with `--set`)",
        json_schema_extra=NEVER,
    )
    target: dict[str, float] | None = Field(
        None,
        description="time to target (MLPerf's measure): metric thresholds such as `{mcc: 0.2}`; the record "
        "gets the first epoch after which every one was reached and the training seconds until then",
        json_schema_extra=NEVER,
    )
    launcher: Launcher = Field(default_factory=Launcher, description="data-parallel workers through torchrun")

    @field_validator("test_split")
    @classmethod
    def _not_the_eval_split(cls, split: str | None, info: ValidationInfo) -> str | None:
        if split is not None and split == info.data.get("eval_split"):
            raise PydanticCustomError(
                "same_split", "expected a split other than the eval_split (evaluated after each epoch already), or null"
            )
        return split

    @property
    def world_size(self) -> int:
        """Processes that train the run: ``launcher.nproc x launcher.nnodes`` (1 unless data-parallel)."""
        return self.launcher.nproc * self.launcher.nnodes


# ------------------------------------------------------------------------------- run ids


@lru_cache(maxsize=1)
def run_id_keys() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(keys never part of a run id, keys part of it only when set), dotted, from the fields'
    ``json_schema_extra`` (:data:`NEVER`, :data:`WHEN_SET`)."""
    never: list[str] = []
    when_set: list[str] = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            kind = (field.json_schema_extra or {}).get("run_id") if isinstance(field.json_schema_extra, dict) else None
            {"never": never, "when_set": when_set}.get(kind, []).append(prefix + name)
            for sub in (field.annotation, *typing.get_args(field.annotation)):
                if isinstance(sub, type) and issubclass(sub, BaseModel) and kind is None:
                    walk(sub, f"{prefix}{name}.")

    walk(RunConfig, "")
    return tuple(never), tuple(when_set)


def run_id(config: RunConfig) -> str:
    """A stable hash of the resolved config: the same run gets the same id on every machine.
    The first 12 hex digits of the SHA-256 of the config as sorted JSON, without the keys
    that are never part of it and without those part of it only when set while they are null."""
    never, when_set = run_id_keys()
    exclude: dict[str, Any] = {}
    for key in never:
        top, _, sub = key.partition(".")
        exclude[top] = exclude.get(top, set()) | {sub} if sub else True
    data = config.model_dump(mode="json", exclude=exclude)
    for key in when_set:
        *parents, last = key.split(".")
        node = data
        for part in parents:
            node = node.get(part) or {}
        if last in node and node[last] is None:
            del node[last]
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def run_id_rule() -> str:
    """What :func:`run_id` hashes, in a sentence (the record's description of ``run_id``)."""
    never, when_set = run_id_keys()
    return ("the first 12 hex digits of the SHA-256 of the resolved `config` (as sorted JSON) without "
            f"{', '.join(f'`{k}`' for k in never)}, and without {' and '.join(f'`{k}`' for k in when_set)} while "
            "they are null (keys added later: a run that does not use them keeps the id it had before)")
