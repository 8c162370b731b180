"""What a plugin subclasses: a small base class per family, paired with a typed options schema.

A plugin subclasses one of :class:`Dataset`, :class:`TokenizerStrategy` or :class:`Head`
(or :class:`Exporter`), sets ``name`` and, when it takes options, an ``Options`` pydantic
model, and registers the class through the matching hook in :mod:`harness.hookspecs` (an
exporter is switched on by name instead). The harness validates the options a suite gives
against ``Options`` (unknown keys and wrong types are errors that name the suite file and
key path) and passes the validated object to ``__init__``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Iterator, Literal, Sequence, get_args, get_origin

import numpy as np
import torch
from pydantic import AfterValidator, BaseModel, Field, PlainSerializer, ValidationInfo
from torch import nn

from harness.config.keys import SPLITS, Split
from harness.config.strict import Strict
from harness.loop.tokens import Batch, Encoded, collate, encode

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedTokenizerBase

    from harness.data import DataFiles

__all__ = [
    "SPLITS", "Batch", "Dataset", "Encoded", "Example", "Exporter", "Head", "HeadOptions", "LocalPath", "Options",
    "Split", "StrategyOptions", "TokenizerStrategy", "iter_option_fields", "masked_mean",
]


class Options(Strict):
    """Base for every plugin's options: unknown keys are errors, values are immutable."""


class _ResolvedPath(str):
    """An absolute path that remembers how the suite wrote it."""

    written: str


def _absolute(value: str, info: ValidationInfo) -> str:
    path = Path(value).expanduser()
    if not path.is_absolute():
        base = (info.context or {}).get("base_dir")
        path = (Path(base) if base else Path.cwd()) / path
    resolved = _ResolvedPath(path)
    resolved.written = value
    return resolved


#: A path option (``train: data/train.csv``). Its value is made absolute when the run is
#: resolved, against the folder of the suite that names it (:func:`harness.config.resolve.resolve_run`),
#: so the run reads the same file from any working directory and in any process. It is
#: recorded as written (a run id that does not depend on where the suite sits); a worker
#: process re-resolves it against the same folder.
LocalPath = Annotated[
    str, AfterValidator(_absolute), PlainSerializer(lambda v: getattr(v, "written", v), return_type=str)
]


# --------------------------------------------------------------------------- datasets


@dataclass(frozen=True, slots=True)
class Example:
    """One labelled example. ``label`` is the class index into the dataset's ``labels``."""

    text: str
    label: int
    text_pair: str | None = None


class Dataset:
    """A labelled text classification dataset with named splits.

    Subclasses set ``name``, ``labels`` (class names; the index is the class id),
    ``metrics`` (names from :mod:`harness.stats.metrics`; the first is the main one) and
    implement :meth:`load`. ``self.files`` finds data files (data directory, cache,
    download); ``self.options`` holds the validated options.
    """

    name: ClassVar[str]
    Options: ClassVar[type[Options]] = Options
    labels: Sequence[str] = ("0", "1")
    metrics: Sequence[str] = ("accuracy",)
    #: which splits exist; ``validation`` is what the loop evaluates after each epoch
    splits: Sequence[str] = SPLITS
    #: short description shown by ``harness plugins``
    description: ClassVar[str] = ""

    def __init__(self, options: Options, files: "DataFiles") -> None:
        self.options = options
        self.files = files

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    def check(self) -> None:
        """Fail fast (before any run starts) when the data cannot be had.

        The default loads nothing; datasets that know their files override it and call
        ``self.files.path(...)`` for each, which raises a clear error when one is missing.
        """

    def load(self, split: str) -> list[Example]:  # pragma: no cover - abstract
        raise NotImplementedError


# ---------------------------------------------------------------- tokenizer strategies


class StrategyOptions(Options):
    truncation: Literal["head", "tail", "head+tail"] = Field(
        "head",
        description="what to keep of a text longer than MAX_LEN: its start, its end, "
        "or both (a quarter from the start, the rest from the end)",
    )


class TokenizerStrategy:
    """Turns examples into batches: how to truncate, in what order, and how far to pad.

    The base class tokenizes, truncates (``options.truncation``), adds special tokens and
    collates (the engine: :mod:`harness.loop.tokens`); a strategy decides two things by
    overriding :meth:`order` (which examples go together, in what order) and :meth:`pad_to`
    (the padded length of a batch). Under data parallelism :meth:`batches` orders the whole
    split into global batches, as one process would, and gives each rank its share of every
    one, so every rank runs the same number of steps and together they take the steps one
    process would.
    """

    name: ClassVar[str]
    Options: ClassVar[type[Options]] = StrategyOptions
    description: ClassVar[str] = ""

    def __init__(self, options: Options, tokenizer: "PreTrainedTokenizerBase", max_len: int) -> None:
        self.options = options
        self.tokenizer = tokenizer
        self.max_len = max_len
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def encode(self, examples: Sequence[Example]) -> Encoded:
        """Token ids and token types of every example, laid out as the tokenizer's own call
        ``tok(text, text_pair)`` lays them out, each text truncated by ``options.truncation``
        (:func:`harness.loop.tokens.encode`)."""
        return encode(self.tokenizer, examples, self.max_len, getattr(self.options, "truncation", "head"))

    # -- what a strategy decides ------------------------------------------------------

    def order(self, lengths: np.ndarray, batch_size: int, rng: np.random.Generator | None) -> list[np.ndarray]:
        """Split positions ``0..len(lengths)-1`` into batches.

        ``rng`` is None for evaluation (order does not matter, speed does: positions sorted
        by length, so a strategy that pads per batch pads little) and a seeded generator for
        training (every example once per epoch, in a per-epoch order). The default for
        training is the tutorial's: a random permutation cut into consecutive batches.
        """
        n = len(lengths)
        perm = rng.permutation(n) if rng is not None else np.argsort(lengths, kind="stable")
        return [perm[i : i + batch_size] for i in range(0, n, batch_size)]

    def pad_to(self, batch_lengths: np.ndarray) -> int:
        """The padded length of a batch whose real lengths are ``batch_lengths``."""
        raise NotImplementedError

    # -- batching --------------------------------------------------------------------

    def batches(
        self,
        encoded: Encoded,
        batch_size: int,
        *,
        seed: int | None,
        epoch: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> list[Batch]:
        """The batches of one epoch (``seed`` given) or of an evaluation (``seed=None``).

        ``batch_size`` is this rank's share of the batch. With ``world_size > 1``, training
        orders the whole split into global batches of ``batch_size x world_size`` exactly
        as one process would (same seed, same :meth:`order`), and each rank takes every
        ``world_size``-th example of each, a short last batch padded by repetition as
        DistributedSampler does: every rank runs the same number of steps, and the ranks
        together take the same optimiser steps as one process with the global batch.
        Evaluation gives each rank a strided shard, unpadded.
        """
        return [self.collate(encoded, g) for g in self.groups(encoded.lengths, batch_size, seed=seed, epoch=epoch,
                                                              rank=rank, world_size=world_size)]

    def groups(
        self, lengths: np.ndarray, batch_size: int, *, seed: int | None, epoch: int = 0, rank: int = 0,
        world_size: int = 1,
    ) -> list[np.ndarray]:
        """The positions of each batch of :meth:`batches`, from the examples' lengths alone: what
        an epoch will be made of, without collating it (``harness analyze``, ``harness estimate``)."""
        if seed is None:
            positions = np.arange(len(lengths))[rank::world_size]
            return [positions[g] for g in self.order(lengths[positions], batch_size, None)]
        rng = np.random.default_rng([seed, epoch])
        groups = self.order(lengths, batch_size * world_size, rng)
        if world_size > 1:
            groups = [np.resize(g, -(-len(g) // world_size) * world_size)[rank::world_size] for g in groups]
        return groups

    def num_batches(self, n: int, batch_size: int, world_size: int = 1) -> int:
        per_rank = -(-n // world_size)
        return -(-per_rank // batch_size)

    def collate(self, encoded: Encoded, idx: np.ndarray) -> Batch:
        """The batch of positions ``idx``, padded to :meth:`pad_to` of their lengths."""
        return collate(encoded, idx, int(self.pad_to(encoded.lengths[np.asarray(idx, dtype=np.int64)])), self.pad_id)


# ------------------------------------------------------------------------------ heads


class HeadOptions(Options):
    dropout: float | None = Field(
        None,
        ge=0.0,
        lt=1.0,
        description="classifier dropout; default: the backbone config's classifier_dropout, "
        "else its hidden_dropout_prob (as BertForSequenceClassification does)",
    )
    freeze_backbone: bool = Field(False, description="train the head only (a linear probe)")


class Head(nn.Module):
    """Maps the backbone's output to logits.

    ``forward(hidden_states, pooled, attention_mask)`` receives the final hidden states
    ``[batch, seq, hidden]``, the pooler output ``[batch, hidden]`` (None unless
    ``uses_pooler``) and the attention mask ``[batch, seq]``, and returns logits
    ``[batch, num_labels]``. Weights are initialised as BERT initialises its own
    classifier (normal with the config's ``initializer_range``, zero bias).
    """

    name: ClassVar[str]
    Options: ClassVar[type[Options]] = HeadOptions
    description: ClassVar[str] = ""
    #: whether the backbone must compute its pooler ([CLS] -> dense -> tanh)
    uses_pooler: ClassVar[bool] = False
    #: a head that is the family's whole ``AutoModelForSequenceClassification`` (the
    #: built-in ``auto``): the harness builds that model and calls it with the inputs; the
    #: head's own ``forward`` is never called and it holds no weights
    whole_model: ClassVar[bool] = False

    def __init__(self, options: Options, config: "PretrainedConfig", num_labels: int) -> None:
        super().__init__()
        self.options = options
        self.config = config
        self.num_labels = num_labels

    def classifier_dropout(self) -> float:
        dropout = getattr(self.options, "dropout", None)
        if dropout is None:
            dropout = getattr(self.config, "classifier_dropout", None)
        if dropout is None:
            dropout = getattr(self.config, "hidden_dropout_prob", 0.1)
        return float(dropout)

    def init_weights(self) -> None:
        std = getattr(self.config, "initializer_range", 0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, mean=0.0, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(
        self, hidden_states: torch.Tensor, pooled: torch.Tensor | None, attention_mask: torch.Tensor
    ) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


def masked_mean(hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden_states`` ``[batch, seq, hidden]`` over the positions where
    ``attention_mask`` is 1: padding is excluded, so the result does not depend on how far
    a batch was padded. Summed in fp32 (stable under bf16/fp16 autocast)."""
    mask = attention_mask.unsqueeze(-1).bool()
    summed = torch.where(mask, hidden_states, 0).sum(dim=1, dtype=torch.float32)
    count = mask.sum(dim=1).clamp(min=1)
    return (summed / count).to(hidden_states.dtype)


def iter_option_fields(options_cls: type[BaseModel]) -> Iterator[tuple[str, str, Any, str]]:
    """(name, type, default, description) for each field of an options schema."""
    for name, f in options_cls.model_fields.items():
        ann = f.annotation
        if get_origin(ann) is Literal:
            type_name = "|".join(str(a) for a in get_args(ann))
        else:
            type_name = str(ann).replace("typing.", "") if get_args(ann) else getattr(ann, "__name__", str(ann))
        default = None if f.is_required() else f.get_default(call_default_factory=True)
        yield name, type_name, default, f.description or ""


# -------------------------------------------------------------------------- exporters


class Exporter:
    """Base of an exporter that a suite switches on by name.

    A subclass sets ``name``, ``description``, ``requires`` (the modules it imports, checked
    when it is switched on) with ``extra`` (the extra of :data:`DISTRIBUTION` that installs
    them), optionally ``Options`` (a :class:`harness.base.Options` model), and implements the
    hook as a method::

        @hookimpl
        def harness_record_stored(self, record, out_dir): ...
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    extra: ClassVar[str] = ""
    requires: ClassVar[tuple[str, ...]] = ()
    Options: ClassVar[type[Options]] = Options

    def __init__(self, options: Options) -> None:
        self.options = options
