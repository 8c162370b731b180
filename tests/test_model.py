"""Model sources: embedded, local path, Hugging Face cache by name, random init; clear errors."""

import json

import pytest
import torch

from harness.errors import HarnessError
from harness.loop.checkpoints import ARCHITECTURES, load_config, load_tokenizer, locate
from harness.loop.classifier import build_classifier
from harness.registry import load_registry


@pytest.fixture(autouse=True)
def _fresh_caches():
    load_config.cache_clear()
    load_tokenizer.cache_clear()
    yield
    load_config.cache_clear()
    load_tokenizer.cache_clear()


def tiny_bert_dir(path, **config):
    from transformers import BertConfig, BertModel

    cfg = BertConfig(num_hidden_layers=1, hidden_size=16, num_attention_heads=2, intermediate_size=32, **config)
    BertModel(cfg).save_pretrained(path)
    load_tokenizer("minilm", "pretrained", None).save_pretrained(path)
    return path


def linear_head():
    entry = load_registry().get("head", "linear")
    return entry.cls, entry.cls.Options()


def test_embedded_model_loads_offline():
    config = load_config("minilm", "pretrained")
    assert (config.num_hidden_layers, config.hidden_size, config.vocab_size) == (6, 384, 30522)
    tok = load_tokenizer("minilm", "pretrained", None)
    assert tok("Hello")["input_ids"][0] == tok.cls_token_id


def test_random_init_architectures_need_no_files():
    config = load_config("bert-base", "random")
    assert (config.num_hidden_layers, config.hidden_size) == (12, 768)
    assert set(ARCHITECTURES) >= {"bert-base", "bert-tiny", "minilm"}
    head_cls, options = linear_head()
    model = build_classifier("bert-tiny", "random", "sdpa", head_cls, options, 3)
    ids = torch.tensor([[101, 2023, 102, 0]])
    logits = model(ids, (ids != 0).long(), torch.zeros_like(ids))
    assert logits.shape == (1, 3)


def test_local_checkpoint_path(tmp_path):
    path = tiny_bert_dir(tmp_path / "ckpt")
    assert locate(str(path)) == str(path)
    head_cls, options = linear_head()
    model = build_classifier(str(path), "pretrained", "eager", head_cls, options, 2)
    assert model.backbone.config.hidden_size == 16


def test_hugging_face_name_from_the_local_cache(tmp_path, monkeypatch):
    """A hub name works offline when the model is in the Hugging Face cache."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    snapshot = tmp_path / "hub" / "models--acme--tiny-bert" / "snapshots" / "abc123"
    tiny_bert_dir(snapshot)
    (tmp_path / "hub" / "models--acme--tiny-bert" / "refs").mkdir()
    (tmp_path / "hub" / "models--acme--tiny-bert" / "refs" / "main").write_text("abc123")
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    config = load_config("acme/tiny-bert", "pretrained")
    assert config.hidden_size == 16


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda p: None, "no such checkpoint directory"),
        (lambda p: p.mkdir(), "directory has no config.json"),
        (lambda p: (p.mkdir(), (p / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 16,
            "num_attention_heads": 2, "num_hidden_layers": 1, "intermediate_size": 32}))), "directory has no weights"),
        (lambda p: (p.mkdir(), (p / "config.json").write_text(json.dumps({"model_type": "clip"}))),
         "has no sequence-classification support"),
    ],
)
def test_bad_model_directories(tmp_path, make, expected):
    path = tmp_path / "m"
    make(path)
    head_cls, options = linear_head()
    with pytest.raises(HarnessError) as info:
        build_classifier(str(path), "pretrained", "sdpa", head_cls, options, 2)
    assert expected in str(info.value) and "\n" not in str(info.value)
