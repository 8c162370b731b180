"""A dataset's splits as the loop uses them: loaded, checked, carved and cut to a seeded subset.

:func:`load_splits` reads the splits a run needs through the dataset plugin, refuses an
empty split or a label outside the label set (naming the file the plugin read); when the
run asks for it (``dataset.validation_from_train``) it carves the validation split out of
train (:func:`carve`: the tutorial's ``random_split``, or stratified by label), so the
dataset's own validation split is not read; then, when the run asks for one, it draws a
seeded, label-stratified subset (:func:`stratified_subset`) of each split, the train
subset from what the carve left. The positions of a carve and of a subset are hashed into
the record. Plugins that carve a split of their own (IMDB's holdout) use
:func:`stratified_subset` too.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import numpy as np

from harness.config.keys import Subset, ValidationFromTrain
from harness.errors import HarnessError


class Example(Protocol):
    """An example as :class:`harness.base.Example` is one: a text (or a pair) and its class."""

    text: str
    label: int
    text_pair: str | None


class Dataset(Protocol):
    """What this module asks of a dataset plugin (:class:`harness.base.Dataset`)."""

    name: str
    splits: Sequence[str]
    labels: Sequence[str]
    files: Any

    @property
    def num_labels(self) -> int: ...

    def load(self, split: str) -> list[Any]: ...


def stratified_subset(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` positions drawn without replacement, each label kept at its share (seeded)."""
    if n >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    quota = np.floor(counts / counts.sum() * n).astype(int)
    # hand out the remainder to the classes with the largest fractional parts
    remainder = n - quota.sum()
    frac = counts / counts.sum() * n - quota
    for i in np.argsort(-frac, kind="stable")[:remainder]:
        quota[i] += 1
    chosen = [rng.choice(np.flatnonzero(labels == c), size=q, replace=False) for c, q in zip(classes, quota)]
    return np.sort(np.concatenate(chosen))


def indices_hash(indices: np.ndarray) -> str:
    """16 hex digits of the SHA-256 of sorted positions (as int64): the exact examples drawn."""
    return hashlib.sha256(np.sort(np.asarray(indices, dtype=np.int64)).tobytes()).hexdigest()[:16]


def carve_size(size: int | float, total: int) -> int:
    """How many of ``total`` examples a carve takes: a count as is; a share as the tutorial
    splits, ``int((1 - share) x total)`` staying (8,551 at 0.1: 7,695 stay, 856 carved)."""
    return size if isinstance(size, int) else total - int((1 - size) * total)


KEY = "dataset.validation_from_train"


def carve(
    labels: np.ndarray, spec: ValidationFromTrain, label_names: Sequence[str], name: str
) -> tuple[np.ndarray, np.ndarray]:
    """(positions that stay in train, positions carved into validation), both sorted, disjoint.

    ``random`` is ``torch.utils.data.random_split(train, [rest, carved], generator)`` with a
    generator seeded ``spec.seed``: the same examples as the tutorial's split (in file order
    here); ``stratified`` carves each label's share (:func:`stratified_subset`)."""
    total = len(labels)
    n = carve_size(spec.size, total)
    if not 0 < n < total:
        what = f"a share of {spec.size}" if isinstance(spec.size, float) else str(spec.size)
        raise HarnessError(
            f"{KEY}.size: {what} of the {total:,} examples of dataset '{name}' train "
            f"{'leaves none for training' if n >= total else 'carves none'}; give fewer than {total:,} "
            "or a share between 0 and 1"
        )
    if spec.by == "random":
        import torch

        perm = torch.randperm(total, generator=torch.Generator().manual_seed(spec.seed)).numpy()
        held = np.sort(perm[total - n:])
    else:
        held = stratified_subset(labels, n, spec.seed)
        _check_strata(labels, held, label_names, name, n)
    rest = np.setdiff1d(np.arange(total), held, assume_unique=True)
    return rest, held


def _check_strata(labels: np.ndarray, held: np.ndarray, label_names: Sequence[str], name: str, n: int) -> None:
    """A stratified carve keeps every label of train on both sides."""
    for c, count in zip(*np.unique(labels, return_counts=True)):
        carved = int(np.sum(labels[held] == c))
        if carved == 0 or carved == count:
            side = "validation" if carved == 0 else "train"
            raise HarnessError(
                f"{KEY}.by: stratified: carving {n:,} of the {len(labels):,} examples of dataset '{name}' train "
                f"leaves label {label_names[c]!r} ({count:,} example{'s' if count != 1 else ''}) none in {side}; "
                f"carve {'more' if side == 'validation' else 'fewer'}, or use by: random"
            )


@dataclass
class SplitData:
    examples: list[Example]
    #: what the record keeps under ``data.<split>``: examples used, of how many, the subset's
    #: draw, the carve's settings (``validation_from_train``)
    info: dict[str, Any]


def read_split(dataset: Dataset, split: str, name: str | None = None) -> list[Example]:
    """Every example of ``split``, checked: not empty, each label in the label set; errors name the file."""
    name = name or dataset.name
    if split not in dataset.splits:
        carve = "; carve one out of train with dataset.validation_from_train: {size: 0.1}" if split == "validation" else ""
        raise HarnessError(f"dataset '{name}' has no {split} split (it has {', '.join(dataset.splits)}){carve}")
    used = getattr(dataset.files, "used", [])
    first = len(used)
    examples = dataset.load(split)
    if not examples:
        read = ", ".join(dict.fromkeys(str(p) for p in used[first:]))
        raise HarnessError(f"{read}: no examples in the {split} split of dataset '{name}'" if read
                           else f"dataset '{name}': the {split} split is empty")
    for i, ex in enumerate(examples):
        if not 0 <= ex.label < dataset.num_labels:
            raise HarnessError(
                f"dataset '{name}' {split} example {i}: label {ex.label} outside 0..{dataset.num_labels - 1} "
                f"(labels: {list(dataset.labels)})"
            )
    return examples


def _draw(examples: list[Example], split: str, subset: Subset | None, info: dict[str, Any]) -> SplitData:
    """``examples`` cut to the subset ``split`` asks for (when it asks for fewer); ``info`` goes along."""
    total = len(examples)
    n = getattr(subset, split, None) if subset is not None else None
    if n is None or n >= total:
        return SplitData(examples, {"examples": total, "of": total, **info})
    idx = stratified_subset(np.asarray([e.label for e in examples]), n, subset.seed)
    return SplitData([examples[i] for i in idx], {
        "examples": n, "of": total, "seed": subset.seed, "stratified": True, "indices_sha256": indices_hash(idx),
        **info,
    })


def load_splits(
    dataset: Dataset, splits: Sequence[str], subset: Subset | None = None,
    validation_from_train: ValidationFromTrain | None = None, name: str | None = None,
) -> dict[str, SplitData]:
    """The examples of each split of ``splits``: carved (``validation`` out of ``train``, when
    ``validation_from_train`` says so), then cut to the subset the run asks for."""
    name = name or dataset.name
    spec = validation_from_train
    carved: dict[str, list[Example]] = {}
    info: dict[str, Any] = {}
    if spec is not None and {"train", "validation"} & set(splits):
        train = read_split(dataset, "train", name)
        rest, held = carve(np.asarray([e.label for e in train]), spec, list(dataset.labels), name)
        carved = {"train": [train[i] for i in rest], "validation": [train[i] for i in held]}
        info = {"validation_from_train": {
            "size": spec.size, "seed": spec.seed, "by": spec.by, "of": len(train), "train": len(rest),
            "validation": len(held), "indices_sha256": indices_hash(held),
        }}
    out = {}
    for split in dict.fromkeys(splits):
        if split in carved:
            out[split] = _draw(carved[split], split, subset, info)
        else:
            out[split] = _draw(read_split(dataset, split, name), split, subset, {})
    return out


def load_split(dataset: Dataset, split: str, subset: Subset | None = None, name: str | None = None) -> SplitData:
    """The examples of ``split`` as the dataset has them (a subset when ``subset`` asks for fewer)."""
    return load_splits(dataset, [split], subset, None, name)[split]
