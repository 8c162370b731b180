"""A small MLP: pooled features -> dropout -> dense -> activation -> dropout -> linear.

One hidden layer on the raw [CLS] state (the shape of RoBERTa's classification head) or
on the masked mean of the final hidden states (``pooling: mean``).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from harness import hookimpl
from harness.base import Head, HeadOptions, masked_mean

ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU, "tanh": nn.Tanh, "silu": nn.SiLU}


class MlpOptions(HeadOptions):
    hidden_size: int | None = Field(
        None, ge=1, description="width of the hidden layer; default: the backbone's hidden size"
    )
    activation: Literal["gelu", "relu", "tanh", "silu"] = Field("gelu", description="activation of the hidden layer")
    pooling: Literal["cls", "mean"] = Field(
        "cls", description="input features: the final [CLS] state, or the masked mean over real tokens"
    )


class Mlp(Head):
    name = "mlp"
    description = "[CLS] or mean -> dropout -> dense -> activation -> dropout -> linear"
    Options = MlpOptions

    def __init__(self, options: MlpOptions, config, num_labels):
        super().__init__(options, config, num_labels)
        width = options.hidden_size or config.hidden_size
        self.dropout = nn.Dropout(self.classifier_dropout())
        self.dense = nn.Linear(config.hidden_size, width)
        self.activation = ACTIVATIONS[options.activation]()
        self.classifier = nn.Linear(width, num_labels)

    def forward(self, hidden_states: torch.Tensor, pooled: torch.Tensor | None, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.options.pooling == "mean":
            features = masked_mean(hidden_states, attention_mask)
        else:
            features = hidden_states[:, 0]
        hidden = self.activation(self.dense(self.dropout(features)))
        return self.classifier(self.dropout(hidden))


@hookimpl
def harness_register_heads(register):
    register(Mlp)
