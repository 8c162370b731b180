"""The raw final [CLS] hidden state -> dropout -> linear: no pooler.

BERT's pooler (dense + tanh on [CLS]) was trained for next-sentence prediction; this head
skips it, as RoBERTa-style heads and most sentence-embedding probes do.
"""

from __future__ import annotations

import torch
from torch import nn

from harness import hookimpl
from harness.base import Head


class Cls(Head):
    name = "cls"
    description = "final [CLS] hidden state -> dropout -> linear (no pooler)"

    def __init__(self, options, config, num_labels):
        super().__init__(options, config, num_labels)
        self.dropout = nn.Dropout(self.classifier_dropout())
        self.classifier = nn.Linear(config.hidden_size, num_labels)

    def forward(self, hidden_states: torch.Tensor, pooled: torch.Tensor | None, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(hidden_states[:, 0]))


@hookimpl
def harness_register_heads(register):
    register(Cls)
