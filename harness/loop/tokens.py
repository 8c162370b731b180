"""The tokenization engine behind :class:`harness.base.TokenizerStrategy`: examples to token ids
laid out as each model family's own tokenizer lays them out, truncated to MAX_LEN, and
batches collated to a padded length.

A strategy decides only which examples go together and how far a batch is padded; what
is the same for every strategy is here: :func:`encode` (one batched tokenizer call per
split, special tokens placed by :class:`SpecialTokens`, longest-first pair truncation as
the ``tokenizers`` library does it) and :func:`collate` (two slices of a pre-padded
array, no Python loop over rows).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch

from harness.errors import HarnessError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


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



def encode(tok: "PreTrainedTokenizerBase", examples: Sequence[Any], max_len: int, truncation: str) -> Encoded:
    """Token ids and token types of every example (``text``, ``text_pair``, ``label``), laid out
    as the tokenizer's own call ``tok(text, text_pair)`` lays them out (:class:`SpecialTokens`),
    each text truncated by ``truncation`` (``head``, ``tail``, ``head+tail``) to what MAX_LEN
    leaves beside the special tokens (a pair: longest first, as transformers does)."""
    one, two = SpecialTokens.of(tok)
    first = _token_ids(tok, [e.text for e in examples])
    pairs = None
    if any(e.text_pair is not None for e in examples):
        pairs = _token_ids(tok, [e.text_pair or "" for e in examples])
    ids, types, lengths, full = [], [], [], []
    for i, a in enumerate(first):
        b = pairs[i] if pairs is not None and examples[i].text_pair is not None else None
        if b is None:
            full.append(len(a) + one.count)
            row, tt = one.build(_truncate(a, max_len - one.count, truncation))
        else:
            full.append(len(a) + len(b) + two.count)
            row, tt = two.build(*_truncate_pair(a, b, max_len - two.count, truncation))
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


def collate(encoded: Encoded, idx: np.ndarray, width: int, pad_id: int) -> Batch:
    """The batch of the examples at positions ``idx``, padded (or cut) to ``width`` tokens."""
    idx = np.asarray(idx, dtype=np.int64)
    lengths = encoded.lengths[idx]
    all_ids, all_types = encoded.padded(pad_id)
    ids = np.full((len(idx), width), pad_id, dtype=np.int64)
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
