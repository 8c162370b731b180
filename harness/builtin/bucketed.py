"""Smart batching: similar lengths batched together inside shuffled chunks, batches shuffled.

Each epoch: a seeded permutation of the examples is cut into chunks of ``chunk_batches``
batches; each chunk is sorted by length and cut into batches; then the order of all the
batches is shuffled. Every example is seen once per epoch, batches are nearly free of
padding, and both the grouping and the order change with the seed and the epoch (the
Trainer's length-grouped sampler works the same way with chunks of 50 batches).
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from harness import hookimpl
from harness.builtin.dynamic import Dynamic, DynamicOptions


class BucketedOptions(DynamicOptions):
    chunk_batches: int = Field(
        50,
        ge=1,
        description="batches per sorted chunk: larger pads less, smaller mixes lengths more "
        "(1: no grouping, as dynamic)",
    )


class Bucketed(Dynamic):
    name = "bucketed"
    Options = BucketedOptions
    description = "length-grouped batches inside shuffled chunks, batch order shuffled; pads per batch"

    def order(self, lengths: np.ndarray, batch_size: int, rng: np.random.Generator | None) -> list[np.ndarray]:
        if rng is None:
            return super().order(lengths, batch_size, rng)  # evaluation: sorted by length
        n = len(lengths)
        perm = rng.permutation(n)
        chunk = batch_size * self.options.chunk_batches
        batches: list[np.ndarray] = []
        for start in range(0, n, chunk):
            part = perm[start : start + chunk]
            # longest first inside a chunk; stable, so ties keep their random order
            part = part[np.argsort(-lengths[part], kind="stable")]
            batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
        return [batches[i] for i in rng.permutation(len(batches))]


@hookimpl
def harness_register_tokenizer_strategies(register):
    register(Bucketed)
