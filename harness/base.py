"""The three plugin families: a small base class each, paired with a typed options schema.

A plugin subclasses one of :class:`Dataset`, :class:`TokenizerStrategy` or :class:`Head`,
sets ``name`` and, when it takes options, an ``Options`` pydantic model, and registers the
class through the matching hook in :mod:`harness.hookspecs`. The harness validates the
options a suite gives against ``Options`` (unknown keys and wrong types are errors that
name the suite file and key path) and passes the validated object to ``__init__``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Iterator, Literal, Sequence, get_args, get_origin

import numpy as np
import torch
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer, ValidationInfo, field_validator
from torch import nn

from harness.config import no_bool_for_numbers
from harness.errors import HarnessError

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedTokenizerBase

    from harness.data import DataFiles

Split = Literal["train", "validation", "test"]
SPLITS: tuple[str, ...] = ("train", "validation", "test")


class Options(BaseModel):
    """Base for every plugin's options: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    _no_bool_for_numbers = field_validator("*", mode="before")(classmethod(no_bool_for_numbers))


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
#: resolved, against the folder of the suite that names it (:func:`harness.suite.resolve_run`),
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
    ``metrics`` (names from :mod:`harness.metrics`; the first is the main one) and
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


@dataclass
class Encoded:
    """Token ids of every example of a split, special tokens added, truncated to MAX_LEN."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]]
    labels: np.ndarray  # int64, one per example
    lengths: np.ndarray  # int64, tokens after truncation (special tokens included)
    full_lengths: np.ndarray  # int64, tokens before truncation (special tokens included)
    #: (pad id, ids, token types) as two padded [n, longest] int64 arrays, built on first
    #: collate: a batch is then two slices, not a Python loop over its rows
    _padded: tuple[int, np.ndarray, np.ndarray] | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.input_ids)

    def padded(self, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
        if self._padded is None or self._padded[0] != pad_id:
            width = int(self.lengths.max()) if len(self) else 0
            ids = np.full((len(self), width), pad_id, dtype=np.int64)
            types = np.zeros((len(self), width), dtype=np.int64)
            for row, (a, t) in enumerate(zip(self.input_ids, self.token_type_ids)):
                ids[row, : len(a)] = a
                types[row, : len(t)] = t
            self._padded = (pad_id, ids, types)
        return self._padded[1], self._padded[2]

    @property
    def truncated(self) -> np.ndarray:
        return self.full_lengths > self.lengths


@dataclass
class Batch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    token_type_ids: torch.Tensor
    labels: torch.Tensor
    index: torch.Tensor  # positions of the examples in the split
    real_tokens: int  # counted on the host: no device sync needed to measure them
    padded_tokens: int

    def to(self, device: torch.device, non_blocking: bool = False) -> "Batch":
        move = lambda t: t.to(device, non_blocking=non_blocking)  # noqa: E731
        return Batch(
            move(self.input_ids),
            move(self.attention_mask),
            move(self.token_type_ids),
            move(self.labels),
            self.index,
            self.real_tokens,
            self.padded_tokens,
        )


class TokenizerStrategy:
    """Turns examples into batches: how to truncate, in what order, and how far to pad.

    The base class tokenizes, truncates (``options.truncation``), adds special tokens and
    collates; a strategy decides two things by overriding :meth:`order` (which examples
    go together, in what order) and :meth:`pad_to` (the padded length of a batch).
    Under data parallelism :meth:`batches` orders the whole split into global batches,
    as one process would, and gives each rank its share of every one, so every rank runs
    the same number of steps and together they take the steps one process would.
    """

    name: ClassVar[str]
    Options: ClassVar[type[Options]] = StrategyOptions
    description: ClassVar[str] = ""

    def __init__(self, options: Options, tokenizer: "PreTrainedTokenizerBase", max_len: int) -> None:
        self.options = options
        self.tokenizer = tokenizer
        self.max_len = max_len
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    # -- encoding ------------------------------------------------------------------

    def encode(self, examples: Sequence[Example]) -> Encoded:
        """Token ids and token types of every example, laid out as the tokenizer's own call
        ``tok(text, text_pair)`` lays them out (:class:`SpecialTokens`), each text truncated by
        ``options.truncation`` to what MAX_LEN leaves beside the special tokens (a pair:
        longest first, as transformers does)."""
        tok = self.tokenizer
        one, two = SpecialTokens.of(tok)
        first = _token_ids(tok, [e.text for e in examples])
        pairs = None
        if any(e.text_pair is not None for e in examples):
            pairs = _token_ids(tok, [e.text_pair or "" for e in examples])
        truncation = getattr(self.options, "truncation", "head")
        ids, types, lengths, full = [], [], [], []
        for i, a in enumerate(first):
            b = pairs[i] if pairs is not None and examples[i].text_pair is not None else None
            if b is None:
                full.append(len(a) + one.count)
                row, tt = one.build(_truncate(a, self.max_len - one.count, truncation))
            else:
                full.append(len(a) + len(b) + two.count)
                row, tt = two.build(*_truncate_pair(a, b, self.max_len - two.count, truncation))
            ids.append(row)
            types.append(tt)
            lengths.append(len(row))
        return Encoded(
            ids,
            types,
            np.asarray([e.label for e in examples], dtype=np.int64),
            np.asarray(lengths, dtype=np.int64),
            np.asarray(full, dtype=np.int64),
        )

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
        if seed is None:
            positions = np.arange(len(encoded))[rank::world_size]
            groups = self.order(encoded.lengths[positions], batch_size, None)
            return [self.collate(encoded, positions[g]) for g in groups]
        rng = np.random.default_rng([seed, epoch])
        groups = self.order(encoded.lengths, batch_size * world_size, rng)
        if world_size > 1:
            groups = [np.resize(g, -(-len(g) // world_size) * world_size)[rank::world_size] for g in groups]
        return [self.collate(encoded, g) for g in groups]

    def num_batches(self, n: int, batch_size: int, world_size: int = 1) -> int:
        per_rank = -(-n // world_size)
        return -(-per_rank // batch_size)

    def collate(self, encoded: Encoded, idx: np.ndarray) -> Batch:
        idx = np.asarray(idx, dtype=np.int64)
        lengths = encoded.lengths[idx]
        width = int(self.pad_to(lengths))
        all_ids, all_types = encoded.padded(self.pad_id)
        ids = np.full((len(idx), width), self.pad_id, dtype=np.int64)
        types = np.zeros((len(idx), width), dtype=np.int64)
        keep = min(width, all_ids.shape[1])
        ids[:, :keep] = all_ids[idx, :keep]
        types[:, :keep] = all_types[idx, :keep]
        mask = (np.arange(width)[None, :] < lengths[:, None]).astype(np.int64)
        return Batch(
            torch.from_numpy(ids),
            torch.from_numpy(mask),
            torch.from_numpy(types),
            torch.from_numpy(encoded.labels[idx]),
            torch.from_numpy(idx),
            int(lengths.sum()),
            len(idx) * width,
        )


def _token_ids(tok: "PreTrainedTokenizerBase", texts: list[str]) -> list[list[int]]:
    """Each text's token ids, no special tokens: one batched call to the tokenizer."""
    if not texts:
        return []
    return tok(texts, add_special_tokens=False, return_attention_mask=False, return_token_type_ids=False)["input_ids"]


@dataclass(frozen=True)
class SpecialTokens:
    """Where a tokenizer puts its special tokens around one text or a pair, and the token
    type of each part, read off the tokenizer's own call (:meth:`of`).

    ``specials`` are the ids before, between and after the texts (two runs for one text,
    three for a pair), ``special_types`` their token types, ``text_types`` each text's:
    BERT's ``[CLS] a [SEP] b [SEP]`` with types ``0.. 0.. 0 1.. 1``, RoBERTa's
    ``<s> a </s></s> b </s>`` with one token type. Token types are the tokenizer's where its
    ``model_input_names`` name ``token_type_ids``, else zeros: what ``tok(a, b)`` gives a
    model. Read once per split, so encoding is list concatenation, not a call per example.
    """

    specials: tuple[tuple[int, ...], ...]
    special_types: tuple[tuple[int, ...], ...]
    text_types: tuple[int, ...]

    @property
    def count(self) -> int:
        """How many special tokens (``num_special_tokens_to_add``)."""
        return sum(map(len, self.specials))

    def build(self, a: list[int], b: list[int] | None = None) -> tuple[list[int], list[int]]:
        """(ids, token types) of one text or a pair, already truncated."""
        s, t, ta = self.specials, self.special_types, self.text_types[0]
        if b is None:
            return [*s[0], *a, *s[1]], [*t[0], *([ta] * len(a)), *t[1]]
        tb = self.text_types[1]
        return [*s[0], *a, *s[1], *b, *s[2]], [*t[0], *([ta] * len(a)), *t[1], *([tb] * len(b)), *t[2]]

    @classmethod
    def of(cls, tok: "PreTrainedTokenizerBase") -> tuple["SpecialTokens", "SpecialTokens"]:
        """(one text, a pair) as ``tok`` lays them out: two probe texts encoded with and
        without special tokens, ``return_special_tokens_mask`` telling the two apart."""
        texts = _token_ids(tok, list(SPECIAL_TOKEN_PROBES))
        with_types = "token_type_ids" in (getattr(tok, "model_input_names", None) or ())
        out = []
        for n in (1, 2):
            enc = tok(*SPECIAL_TOKEN_PROBES[:n], return_special_tokens_mask=True, return_token_type_ids=True)
            ids = list(enc["input_ids"])
            types = list(enc["token_type_ids"]) if with_types else [0] * len(ids)
            layout = cls._read(ids, list(enc["special_tokens_mask"]), types, texts[:n])
            if layout is None:
                name = getattr(tok, "name_or_path", "") or type(tok).__name__
                raise HarnessError(
                    f"tokenizer {name!r}: cannot tell where it puts its special tokens: "
                    f"{SPECIAL_TOKEN_PROBES[:n]} encode as {ids}, the texts alone as {texts[:n]}"
                )
            out.append(layout)
        return out[0], out[1]

    @classmethod
    def _read(cls, ids: list[int], mask: list[int], types: list[int], texts: list[list[int]]) -> "SpecialTokens | None":
        specials, special_types, text_types, pos = [], [], [], 0
        for k in range(len(texts) + 1):
            start = pos
            while pos < len(ids) and mask[pos]:
                pos += 1
            specials.append(tuple(ids[start:pos]))
            special_types.append(tuple(types[start:pos]))
            if k == len(texts):
                break
            end = pos + len(texts[k])
            if ids[pos:end] != texts[k] or any(mask[pos:end]) or len(set(types[pos:end])) > 1:
                return None
            text_types.append(types[pos] if end > pos else 0)
            pos = end
        return cls(tuple(specials), tuple(special_types), tuple(text_types)) if pos == len(ids) else None


#: the texts :meth:`SpecialTokens.of` encodes (short words every vocabulary spells somehow)
SPECIAL_TOKEN_PROBES = ("a b", "c")


def _truncate(ids: list[int], budget: int, how: str) -> list[int]:
    if len(ids) <= budget:
        return ids
    if budget <= 0:
        return []
    if how == "head":
        return ids[:budget]
    if how == "tail":
        return ids[len(ids) - budget :]
    keep_head = budget // 4  # head+tail: a quarter from the start, the rest from the end
    return ids[:keep_head] + ids[len(ids) - (budget - keep_head) :]


def _truncate_pair(a: list[int], b: list[int], budget: int, how: str) -> tuple[list[int], list[int]]:
    """Longest first, as the ``tokenizers`` library (the backend of transformers 5's
    tokenizers) cuts a pair: the shorter text keeps all of it while it fits in half the
    budget and the longer takes the rest; both longer than half, the shorter gets half
    (rounded down; the first text on a tie) and the longer the other half. Then each text
    is cut to its share by ``how``."""
    la, lb = len(a), len(b)
    if la + lb > budget:
        if budget <= 0:
            return [], []
        swap = la > lb
        n1, n2 = (lb, la) if swap else (la, lb)  # n1: the shorter
        n2 = max(n1, budget - n1)
        if n1 + n2 > budget:
            n1 = budget // 2
            n2 = budget - n1
        la, lb = (n2, n1) if swap else (n1, n2)
    return _truncate(a, la, how), _truncate(b, lb, how)


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
