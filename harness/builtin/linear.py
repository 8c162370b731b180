"""What BertForSequenceClassification puts on top: pooler ([CLS] -> dense -> tanh), dropout, linear."""

from __future__ import annotations

import torch
from torch import nn

from harness import hookimpl
from harness.base import Head


class Linear(Head):
    name = "linear"
    description = "pooler output -> dropout -> linear (BertForSequenceClassification)"
    uses_pooler = True

    def __init__(self, options, config, num_labels):
        super().__init__(options, config, num_labels)
        self.dropout = nn.Dropout(self.classifier_dropout())
        self.classifier = nn.Linear(config.hidden_size, num_labels)

    def forward(self, hidden_states: torch.Tensor, pooled: torch.Tensor | None, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(pooled))


@hookimpl
def harness_register_heads(register):
    register(Linear)
