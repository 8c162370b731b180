"""Dynamic padding: each batch padded to its own longest sequence, random order."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from harness import hookimpl
from harness.base import StrategyOptions, TokenizerStrategy


class DynamicOptions(StrategyOptions):
    pad_to_multiple_of: int | None = Field(
        None,
        ge=1,
        description="round each batch's length up to a multiple of this (8 or 16 suit GPU "
        "tensor cores; on a CPU it only adds tokens), never past MAX_LEN; null: no rounding",
    )


class Dynamic(TokenizerStrategy):
    name = "dynamic"
    Options = DynamicOptions
    description = "pad each batch to its longest sequence (optionally to a multiple of N), random order"

    def pad_to(self, batch_lengths: np.ndarray) -> int:
        width = int(batch_lengths.max())
        multiple = self.options.pad_to_multiple_of
        if multiple and width % multiple:
            width = min(width + multiple - width % multiple, max(self.max_len, width))
        return width


@hookimpl
def harness_register_tokenizer_strategies(register):
    register(Dynamic)
