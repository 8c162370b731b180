"""The model a run trains: a backbone from :mod:`harness.loop.checkpoints` and a head.

Any encoder family with an ``AutoModelForSequenceClassification`` works (bert, distilbert,
roberta, xlm-roberta, electra, albert, deberta-v2, modernbert are tested): the backbone gets
only the inputs its forward takes (:func:`forward_inputs`), its pooler only where the family
has one (:func:`has_pooler`), and the ``auto`` head is the family's own classification model
(:class:`WholeModelClassifier`). :func:`build_problem` tells what a run would refuse before
any run starts.
"""

from __future__ import annotations

import copy
import inspect
from typing import Any

import torch
from torch import nn

from harness.base import Head
from harness.errors import HarnessError
from harness.loop.checkpoints import quiet, load_config, load_pretrained


def _model_class(config: Any, *, whole: bool) -> type:
    """The transformers class ``AutoModel`` (or ``AutoModelForSequenceClassification``) builds for ``config``."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING, MODEL_MAPPING

    return (MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING if whole else MODEL_MAPPING)[type(config)]


def has_pooler(config: Any) -> bool:
    """Whether the family's encoder has a pooler ([CLS] -> dense -> tanh): its class takes
    ``add_pooling_layer`` (bert, roberta, xlm-roberta, albert, ...; not distilbert, electra,
    deberta-v2, modernbert)."""
    return "add_pooling_layer" in inspect.signature(_model_class(config, whole=False).__init__).parameters


#: the config key each family's own classification head reads its dropout from, where it
#: is not ``classifier_dropout`` (the ``auto`` head's ``dropout`` option sets it)
CLASSIFIER_DROPOUT_KEYS = {"distilbert": "seq_classif_dropout", "albert": "classifier_dropout_prob",
                           "deberta": "cls_dropout", "deberta-v2": "cls_dropout"}


def _dropout_key(config: Any) -> str | None:
    """The config key the family's head reads its dropout from; None when not known."""
    key = CLASSIFIER_DROPOUT_KEYS.get(getattr(config, "model_type", ""))
    if key is not None:  # read with getattr(config, key, None): it need not be in the config yet
        return key
    return "classifier_dropout" if hasattr(config, "classifier_dropout") else None


def build_problem(
    model: str, init: str, attention: str, head_cls: type[Head], head_options: Any
) -> tuple[str, str] | None:
    """What :func:`build_classifier` would refuse, as (the suite key to blame, a one-line
    reason), told from the config alone: before any run starts, no weights read."""
    config = load_config(model, init)
    family = getattr(config, "model_type", "?")
    if head_cls.uses_pooler and not has_pooler(config):
        return "head", (
            f"head '{head_cls.name}' needs the backbone's pooler and model {model!r} ({family}) has none; "
            "use head 'cls', 'mean' or 'auto'"
        )
    if head_cls.whole_model and getattr(head_options, "dropout", None) is not None and _dropout_key(config) is None:
        return "head", (
            f"head '{head_cls.name}': option dropout: model {model!r} ({family}) has no known config key for its "
            "classifier dropout; leave dropout unset (the family's default)"
        )
    built = _model_class(config, whole=head_cls.whole_model)
    if attention == "sdpa" and not getattr(built, "_supports_sdpa", False):
        return "attention", (
            f"model {model!r} ({family}, {built.__name__}) has no sdpa attention in transformers; set attention: eager"
        )
    return None


def load_backbone(model: str, init: str, attention: str, with_pooler: bool) -> nn.Module:
    """The encoder without a task head (``AutoModel``); the pooler only when asked for and
    the family has one."""
    from transformers import AutoModel

    quiet()
    config = load_config(model, init)
    kwargs: dict[str, Any] = {"attn_implementation": attention}
    if has_pooler(config):
        kwargs["add_pooling_layer"] = with_pooler
    if init == "random":
        return AutoModel.from_config(config, **kwargs)
    return load_pretrained(AutoModel, model, **kwargs)


def load_sequence_classifier(
    model: str, init: str, attention: str, num_labels: int, dropout: float | None
) -> nn.Module:
    """The family's own ``AutoModelForSequenceClassification`` (head ``auto``) for
    ``num_labels`` classes; ``dropout`` sets the config key its classifier reads. A
    pretrained checkpoint's classifier is kept when its shape fits (a checkpoint fine-tuned
    for another number of classes gets a fresh one), as transformers loads it."""
    from transformers import AutoModelForSequenceClassification

    quiet()
    config = copy.deepcopy(load_config(model, init))  # the cached config stays as read
    config.num_labels = num_labels
    if dropout is not None:
        setattr(config, _dropout_key(config) or "classifier_dropout", dropout)
    if init == "random":
        return AutoModelForSequenceClassification.from_config(config, attn_implementation=attention)
    return load_pretrained(
        AutoModelForSequenceClassification, model, config=config, attn_implementation=attention,
        ignore_mismatched_sizes=True,
    )


def forward_inputs(model: nn.Module) -> frozenset[str]:
    """Which of ``attention_mask``, ``token_type_ids`` the model's forward is given: those it
    takes, token types only where the config has more than one (a single type is the zeros
    the model assumes without them; deberta-v2 with none ignores them)."""
    accepted = set(inspect.signature(model.forward).parameters)
    names = {"attention_mask"} & accepted
    if "token_type_ids" in accepted and getattr(model.config, "type_vocab_size", 2) > 1:
        names.add("token_type_ids")
    return frozenset(names)


class Classifier(nn.Module):
    """Backbone + head. With ``freeze_backbone`` the backbone runs without gradients, in eval mode.

    The backbone is given only the inputs its forward takes (:func:`forward_inputs`):
    DistilBERT and ModernBERT get no token types.
    """

    def __init__(self, backbone: nn.Module, head: Head, freeze_backbone: bool = False):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.freeze_backbone = freeze_backbone
        self.inputs = forward_inputs(backbone)
        if freeze_backbone:
            self.backbone.requires_grad_(False)

    def train(self, mode: bool = True) -> "Classifier":
        super().train(mode)
        if self.freeze_backbone:
            self.backbone.eval()  # a probe reads fixed features: no dropout in the backbone
        return self

    def model_inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor) -> dict:
        """The keyword arguments of the backbone's forward: ``input_ids`` and what it takes of the rest."""
        given = {"attention_mask": attention_mask, "token_type_ids": token_type_ids}
        return {"input_ids": input_ids, **{k: v for k, v in given.items() if k in self.inputs}}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        inputs = self.model_inputs(input_ids, attention_mask, token_type_ids)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_backbone):
            out = self.backbone(**inputs, return_dict=True)
        pooled = getattr(out, "pooler_output", None) if self.head.uses_pooler else None
        return self.head(out.last_hidden_state, pooled, attention_mask)


class WholeModelClassifier(Classifier):
    """A head that is a whole model (``auto``: the family's ``AutoModelForSequenceClassification``,
    unchanged): ``model`` maps the inputs to logits; ``backbone`` is its base model, what
    ``freeze_backbone`` freezes (its classification head still trains, dropout and all)."""

    def __init__(self, model: nn.Module, head: Head, freeze_backbone: bool = False):
        nn.Module.__init__(self)
        self.model = model
        self.head = head  # holds no weights: the options, for the record and the registry
        self.freeze_backbone = freeze_backbone
        self.inputs = forward_inputs(model)
        if freeze_backbone:
            self.backbone.requires_grad_(False)

    @property
    def backbone(self) -> nn.Module:  # type: ignore[override]
        return self.model.base_model

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> torch.Tensor:
        return self.model(**self.model_inputs(input_ids, attention_mask, token_type_ids), return_dict=True).logits


def build_classifier(
    model: str, init: str, attention: str, head_cls: type[Head], head_options: Any, num_labels: int
) -> Classifier:
    problem = build_problem(model, init, attention, head_cls, head_options)
    if problem is not None:
        raise HarnessError(f"{problem[0]}: {problem[1]}" if problem[0] == "attention" else problem[1])
    config = load_config(model, init)
    freeze = bool(getattr(head_options, "freeze_backbone", False))
    if head_cls.whole_model:
        whole = load_sequence_classifier(model, init, attention, num_labels, getattr(head_options, "dropout", None))
        return WholeModelClassifier(whole, head_cls(head_options, config, num_labels), freeze_backbone=freeze)
    backbone = load_backbone(model, init, attention, with_pooler=head_cls.uses_pooler)
    head = head_cls(head_options, config, num_labels)  # after the backbone: its random init draws first
    head.init_weights()
    return Classifier(backbone, head, freeze_backbone=freeze)


def count_parameters(model: nn.Module) -> dict[str, int]:
    """All, trainable, and matmul parameters (weights of Linear layers: what FLOPs scale with)."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    matmul = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    return {"parameters": total, "trainable_parameters": trainable, "matmul_parameters": matmul}
