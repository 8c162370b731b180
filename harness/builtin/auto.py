"""The family's own classification head, unchanged: the whole model is built by
``AutoModelForSequenceClassification`` (BertForSequenceClassification, RobertaForSequence-
Classification, DistilBert..., ModernBert...), the reference every plugin head can be
compared with on any family. The harness computes the loss, as for every head.

``freeze_backbone`` freezes the model's base model (``model.base_model``); its head
trains. ``dropout`` sets the config key the family's head reads its dropout from
(``classifier_dropout``; DistilBERT ``seq_classif_dropout``, ALBERT
``classifier_dropout_prob``, DeBERTa-v2 ``cls_dropout``); unset, the family's default.
"""

from __future__ import annotations

from pydantic import Field

from harness import hookimpl
from harness.base import Head, HeadOptions


class AutoOptions(HeadOptions):
    dropout: float | None = Field(
        None,
        ge=0.0,
        lt=1.0,
        description="the family head's classifier dropout (the config key it reads: classifier_dropout, "
        "seq_classif_dropout, classifier_dropout_prob or cls_dropout); default: the family's own",
    )


class Auto(Head):
    name = "auto"
    description = "the family's own AutoModelForSequenceClassification head, unchanged (whole model)"
    Options = AutoOptions
    whole_model = True

    def forward(self, hidden_states, pooled, attention_mask):  # pragma: no cover - never called
        raise RuntimeError("head 'auto' is a whole model: harness.loop.classifier.WholeModelClassifier calls it")


@hookimpl
def harness_register_heads(register):
    register(Auto)
