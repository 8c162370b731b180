"""Mean pooling: the average of the final hidden states over the real tokens -> dropout -> linear.

Padding is excluded (``attention_mask``), so an example gets the same logits however far
its batch was padded; [CLS] and [SEP] count as tokens, as in sentence-transformers.
"""

from __future__ import annotations

import torch
from torch import nn

from harness import hookimpl
from harness.base import Head, masked_mean


class Mean(Head):
    name = "mean"
    description = "masked mean of the final hidden states (padding excluded) -> dropout -> linear"

    def __init__(self, options, config, num_labels):
        super().__init__(options, config, num_labels)
        self.dropout = nn.Dropout(self.classifier_dropout())
        self.classifier = nn.Linear(config.hidden_size, num_labels)

    def forward(self, hidden_states: torch.Tensor, pooled: torch.Tensor | None, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(masked_mean(hidden_states, attention_mask)))


@hookimpl
def harness_register_heads(register):
    register(Mean)
