"""The tutorial's strategy: every example padded (and truncated) to MAX_LEN, random order."""

from __future__ import annotations

import numpy as np

from harness import hookimpl
from harness.base import TokenizerStrategy


class Fixed(TokenizerStrategy):
    name = "fixed"
    description = "pad every example to MAX_LEN, random order (the tutorial's baseline)"

    def pad_to(self, batch_lengths: np.ndarray) -> int:
        return self.max_len


@hookimpl
def harness_register_tokenizer_strategies(register):
    register(Fixed)
