"""A dataset's splits as the loop uses them: loaded, checked, and cut to a seeded subset.

:func:`load_split` reads one split through the dataset plugin, refuses an empty split or
a label outside the label set (naming the file the plugin read), and, when the run asks
for one, draws a seeded, label-stratified subset (:func:`stratified_subset`) whose
indices are hashed into the record. Plugins that carve a split of their own (IMDB's
holdout) use :func:`stratified_subset` too.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from harness.errors import HarnessError

if TYPE_CHECKING:
    from harness.base import Dataset, Example
    from harness.config import Subset


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


@dataclass
class SplitData:
    examples: list[Example]
    #: what the record keeps under ``data.<split>``: examples used, of how many, the subset's draw
    info: dict[str, Any]


def load_split(dataset: Dataset, split: str, subset: Subset | None = None, name: str | None = None) -> SplitData:
    """The examples of ``split`` (a subset when ``subset`` asks for fewer); errors name the file."""
    name = name or dataset.name
    if split not in dataset.splits:
        raise HarnessError(f"dataset '{name}' has no {split} split (it has {', '.join(dataset.splits)})")
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
    total = len(examples)
    info: dict[str, Any] = {"examples": total, "of": total}
    n = getattr(subset, split, None) if subset is not None else None
    if n is not None and n < total:
        idx = stratified_subset(np.asarray([e.label for e in examples]), n, subset.seed)
        examples = [examples[i] for i in idx]
        digest = hashlib.sha256(np.asarray(idx, dtype=np.int64).tobytes()).hexdigest()[:16]
        info = {"examples": len(examples), "of": total, "seed": subset.seed,
                "stratified": True, "indices_sha256": digest}
    return SplitData(examples, info)
