"""Every BERT-family model the harness claims: inputs laid out as each family's own
tokenizer lays them out, the backbone given only what its forward takes, every head that
applies fine-tuning on CoLA (one text) and MRPC (pairs), and the ``auto`` head, the
family's own ``AutoModelForSequenceClassification``.

Each family is a tiny random model (hidden 32, 2 layers) with a tokenizer trained here,
offline, with the ``tokenizers`` library on CoLA and MRPC sentences, in the family's own
tokenizer class (WordPiece for bert/distilbert/electra, byte-level BPE for roberta and
modernbert, Unigram for xlm-roberta/albert/deberta-v2), saved with ``save_pretrained`` and
named as ``model:`` by its directory, as a user's checkpoint would be.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
import torch.nn.functional as F
import transformers as T
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

from helpers import SHARED_DATA, tiny_sets
from harness.base import Example
from harness.loop.checkpoints import ARCHITECTURES, load_tokenizer
from harness.loop.classifier import build_classifier, build_problem
from harness.registry import load_registry

SIZE = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
MAX_POSITIONS = 64  # MAX_LEN 32 in the runs; 48 in the layout checks


def _corpus() -> list[str]:
    """Text to train the tokenizers on: CoLA sentences and MRPC pairs (a few thousand)."""
    cola = (SHARED_DATA / "cola" / "raw" / "in_domain_train.tsv").read_text(encoding="utf-8").splitlines()
    mrpc = (SHARED_DATA / "mrpc" / "train.tsv").read_text(encoding="utf-8-sig").splitlines()[1:]
    return [line.split("\t")[3] for line in cola[:2000]] + [t for line in mrpc[:600] for t in line.split("\t")[3:5]]


def _wordpiece(corpus: list[str]) -> dict[str, int]:
    tk = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tk.normalizer = normalizers.BertNormalizer(lowercase=True)
    tk.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tk.train_from_iterator(corpus, trainers.WordPieceTrainer(vocab_size=500, special_tokens=specials,
                                                             show_progress=False))
    return tk.get_vocab()


def _byte_bpe(corpus: list[str], specials: list[str]) -> Tokenizer:
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=500, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator(corpus, trainer)
    return tk


def _bpe_parts(tk: Tokenizer) -> tuple[dict[str, int], list[tuple[str, str]]]:
    model = json.loads(tk.to_str())["model"]
    return model["vocab"], [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]


def _unigram_pieces(corpus: list[str]) -> list[tuple[str, float]]:
    """SentencePiece-like pieces and scores, without special tokens (each family puts its own first)."""
    tk = Tokenizer(models.Unigram())
    tk.pre_tokenizer = pre_tokenizers.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=500, special_tokens=["<unk>"], unk_token="<unk>", show_progress=False)
    tk.train_from_iterator(corpus, trainer)
    return [tuple(p) for p in json.loads(tk.to_str())["model"]["vocab"] if p[0] != "<unk>"]


@dataclass
class Family:
    name: str
    make_tokenizer: Callable[[dict], Any]
    make_config: Callable[[Any], Any]
    pooler: bool
    attention: str = "sdpa"


def _modernbert_tokenizer(parts: dict) -> Any:
    """ModernBERT's tokenizer is a plain tokenizer.json: byte-level BPE, BERT's template."""
    tk = parts["modernbert_bpe"]
    tk.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0", pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[(t, tk.token_to_id(t)) for t in ("[CLS]", "[SEP]")],
    )
    return T.PreTrainedTokenizerFast(
        tokenizer_object=tk, cls_token="[CLS]", sep_token="[SEP]", pad_token="[PAD]", unk_token="[UNK]",
        mask_token="[MASK]", model_input_names=["input_ids", "attention_mask"],
    )


def _ids(tok, *more: str) -> dict[str, int]:
    """The config's vocabulary size and special token ids, from the tokenizer."""
    ids = dict(vocab_size=len(tok), pad_token_id=tok.pad_token_id)
    for name in more:  # bos, eos, cls, sep
        ids[f"{name}_token_id"] = getattr(tok, f"{name}_token_id")
    return ids


def _unigram(cls: type, *specials: str) -> Callable[[dict], Any]:
    """A SentencePiece-style tokenizer: the family's special tokens first, then the pieces."""
    return lambda parts: cls(vocab=[(name, 0.0) for name in specials] + parts["unigram"])


ROBERTA_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")
POSITIONS = dict(max_position_embeddings=MAX_POSITIONS)
OFFSET_POSITIONS = dict(max_position_embeddings=MAX_POSITIONS + 2)  # RoBERTa's start after the padding id

FAMILIES = [
    Family("bert", lambda p: T.BertTokenizer(vocab=p["wordpiece"]),
           lambda tok: T.BertConfig(**SIZE, **_ids(tok), **POSITIONS), pooler=True),
    Family("distilbert", lambda p: T.DistilBertTokenizer(vocab=p["wordpiece"]),
           lambda tok: T.DistilBertConfig(dim=32, n_layers=2, n_heads=2, hidden_dim=64, **_ids(tok), **POSITIONS),
           pooler=False),
    Family("electra", lambda p: T.ElectraTokenizer(vocab=p["wordpiece"]),
           lambda tok: T.ElectraConfig(**SIZE, embedding_size=16, **_ids(tok), **POSITIONS), pooler=False),
    Family("roberta", lambda p: T.RobertaTokenizer(vocab=p["roberta_bpe"][0], merges=p["roberta_bpe"][1]),
           lambda tok: T.RobertaConfig(**SIZE, **_ids(tok, "bos", "eos"), type_vocab_size=1, **OFFSET_POSITIONS),
           pooler=True),
    Family("xlm-roberta", _unigram(T.XLMRobertaTokenizer, *ROBERTA_SPECIALS),
           lambda tok: T.XLMRobertaConfig(**SIZE, **_ids(tok, "bos", "eos"), type_vocab_size=1, **OFFSET_POSITIONS),
           pooler=True),
    Family("albert", _unigram(T.AlbertTokenizer, "<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]"),
           lambda tok: T.AlbertConfig(**SIZE, embedding_size=16, **_ids(tok), **POSITIONS), pooler=True),
    # DeBERTa-v3's layout: relative positions only, no token types; no sdpa in transformers
    Family("deberta-v2", _unigram(T.DebertaV2Tokenizer, "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"),
           lambda tok: T.DebertaV2Config(**SIZE, **_ids(tok), **POSITIONS, relative_attention=True, position_buckets=16,
                                         pos_att_type=["p2c", "c2p"], position_biased_input=False,
                                         norm_rel_ebd="layer_norm", share_att_key=True),
           pooler=False, attention="eager"),
    Family("modernbert", _modernbert_tokenizer,
           lambda tok: T.ModernBertConfig(**SIZE, **_ids(tok, "cls", "sep"), bos_token_id=tok.cls_token_id,
                                          eos_token_id=tok.sep_token_id, **POSITIONS, local_attention=16,
                                          global_attn_every_n_layers=2),
           pooler=False),
]
BY_NAME = {f.name: f for f in FAMILIES}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Models this small gain nothing from a second thread, and on a busy machine its
    spinning costs many times the step itself."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """A saved checkpoint directory (config, random weights, tokenizer) per family."""
    T.utils.logging.disable_progress_bar()  # no "Writing model shards" bars
    corpus = _corpus()
    parts = {
        "wordpiece": _wordpiece(corpus),
        "roberta_bpe": _bpe_parts(_byte_bpe(corpus, ["<s>", "<pad>", "</s>", "<unk>", "<mask>"])),
        "modernbert_bpe": _byte_bpe(corpus, ["[CLS]", "[PAD]", "[SEP]", "[UNK]", "[MASK]"]),
        "unigram": _unigram_pieces(corpus),
    }
    root = tmp_path_factory.mktemp("families")
    out = {}
    for family in FAMILIES:
        tok = family.make_tokenizer(parts)
        torch.manual_seed(0)
        model = T.AutoModel.from_config(family.make_config(tok), attn_implementation=family.attention)
        assert model.config.model_type == family.name
        out[family.name] = root / family.name
        tok.save_pretrained(out[family.name])
        model.save_pretrained(out[family.name])
    return out


# ------------------------------------------------- inputs as the family's tokenizer lays them out


def _mrpc_pairs(n: int) -> list[tuple[str, str]]:
    rows = (SHARED_DATA / "mrpc" / "dev.tsv").read_text(encoding="utf-8-sig").splitlines()[1:]
    return [tuple(line.split("\t")[3:5]) for line in rows[:n]]


@pytest.mark.parametrize("family", [f.name for f in FAMILIES])
def test_ids_and_token_types_are_what_the_family_tokenizer_gives(checkpoints, family):
    """For a pair and for one text, at MAX_LEN that truncates (longest first) and that does
    not, the harness's input ids and token types equal ``tok(a, b, truncation='longest_first',
    max_length=L)``; where the tokenizer gives no token types, the harness's are zeros."""
    tok = load_tokenizer(str(checkpoints[family]), "pretrained", None)
    registry = load_registry()
    fixed = registry.get("strategy", "fixed").cls
    pairs = _mrpc_pairs(24) + [("Short.", "A much longer second sentence that has to be cut down to fit in.")]
    for max_len in (16, 48):
        strategy = fixed(fixed.Options(), tok, max_len)
        for examples, texts in (
            ([Example(a, 0, text_pair=b) for a, b in pairs], pairs),
            ([Example(a, 0) for a, _ in pairs], [(a,) for a, _ in pairs]),
        ):
            encoded = strategy.encode(examples)
            truncated = 0
            for row, args in enumerate(texts):
                want = tok(*args, truncation="longest_first", max_length=max_len)
                want_types = want.get("token_type_ids", [0] * len(want["input_ids"]))
                assert encoded.input_ids[row] == want["input_ids"], (family, max_len, args)
                assert encoded.token_type_ids[row] == want_types, (family, max_len, args)
                truncated += encoded.full_lengths[row] > len(want["input_ids"])
            assert truncated > 0 if max_len == 16 else truncated < len(texts), "some cut at 16, some whole at 48"
    if family in ("roberta", "xlm-roberta"):  # the layout the old hand-built BERT pattern got wrong
        assert tok.convert_ids_to_tokens(tok("a", "b")["input_ids"])[2:4] == ["</s>", "</s>"]


# ------------------------------------------------- every head that applies, one text and pairs

HEADS = ["linear", "cls", "mean", "mlp", "auto"]


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_every_head_fine_tunes_one_epoch_on_cola_and_mrpc_pairs(checkpoints, family, cli, write_suite, tmp_path):
    """Through the harness's own run path (preflight, prepare, the loop), in this process:
    a RoBERTa run on MRPC stopped at its first step when every pair got BERT's two token types."""
    heads = [h for h in HEADS if h != "linear" or family.pooler]
    suite = write_suite(
        f"""
        name: {family.name}
        defaults: {{dataset: cola, strategy: bucketed, model: {checkpoints[family.name]}, init: pretrained,
                    attention: {family.attention}}}
        matrix:
          dataset.name: [cola, mrpc]
          head: [{", ".join(heads)}]
        """
    )
    out = tmp_path / "out"
    subset = {"dataset.subset.train": 32, "dataset.subset.validation": 16}
    sets = tiny_sets(model=None, init=None, warmup_batches=0, **subset)
    code, _, err = cli("run", suite, "--out", out, "--no-progress", "--isolation", "none", *sets)
    assert code == 0, err
    records = _records(out)
    assert [(r["config"]["dataset"]["name"], r["config"]["head"]["name"]) for r in records] == [
        (d, h) for d in ("cola", "mrpc") for h in heads
    ]
    for r in records:
        assert r["status"] == "ok", (r["config"]["dataset"]["name"], r["config"]["head"]["name"], r.get("error"))
        epoch = r["epochs"][0]
        assert epoch["steps"] == 2 and math.isfinite(epoch["train_loss"])
        assert r["model_info"]["trainable_parameters"] > 0


@pytest.mark.parametrize(
    "family, head, attention, message",
    [
        ("distilbert", "linear", "sdpa", "defaults.head: head 'linear' needs the backbone's pooler and model"),
        ("modernbert", "linear", "sdpa", "(modernbert) has none; use head 'cls', 'mean' or 'auto'"),
        ("deberta-v2", "cls", "sdpa", "defaults.attention: model"),
        ("deberta-v2", "auto", "sdpa", "(deberta-v2, DebertaV2ForSequenceClassification) has no sdpa attention"),
    ],
)
def test_what_a_family_cannot_do_is_a_one_line_error_before_any_run(
    checkpoints, cli, write_suite, tmp_path, family, head, attention, message
):
    suite = write_suite(
        f"""
        name: refused
        defaults: {{dataset: cola, model: {checkpoints[family]}, init: pretrained, head: {head},
                    attention: {attention}}}
        """
    )
    code, _, err = cli("run", suite, "--out", tmp_path / "out", "--no-progress", "--isolation", "none",
                       *tiny_sets(model=None, init=None))
    assert code == 2
    assert err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "out" / "results.jsonl").exists()


# ------------------------------------------------------------------- the auto head


def _auto(registry, model: str = "bert-tiny", init: str = "random", num_labels: int = 2, **options):
    cls = registry.get("head", "auto").cls
    return build_classifier(model, init, "sdpa", cls, cls.Options(**options), num_labels)


@pytest.fixture(scope="module")
def registry():
    return load_registry()


def _pair_batch(registry, max_len: int = 24):
    tok = load_tokenizer("bert-tiny", "random", None)
    fixed = registry.get("strategy", "fixed").cls
    strategy = fixed(fixed.Options(), tok, max_len)
    pairs = _mrpc_pairs(3) + [("Short one.", "Shorter.")]
    encoded = strategy.encode([Example(a, i % 2, text_pair=b) for i, (a, b) in enumerate(pairs)])
    return strategy.collate(encoded, torch.arange(len(pairs)).numpy())


@pytest.mark.parametrize("num_labels", [2, 3])
def test_auto_on_bert_gives_the_logits_of_bert_for_sequence_classification(registry, num_labels):
    ours = _auto(registry, num_labels=num_labels)
    with torch.no_grad():  # weights far from BERT's tiny init: logits that differ between examples
        for p in ours.parameters():
            p.normal_(0.0, 0.3)
    config = T.BertConfig(**ARCHITECTURES["bert-tiny"], num_labels=num_labels)
    ref = T.BertForSequenceClassification(config)
    ref.load_state_dict(ours.model.state_dict())
    batch = _pair_batch(registry)
    assert (batch.attention_mask == 0).any() and (batch.token_type_ids == 1).any(), "padding and two token types"
    labels = batch.labels % num_labels
    ours.eval(), ref.eval()
    with torch.no_grad():
        expected = ref(batch.input_ids, batch.attention_mask, batch.token_type_ids, labels=labels)
        got = ours(batch.input_ids, batch.attention_mask, batch.token_type_ids)
        # the check can fail: without the token types the same weights give other logits
        untyped = ref(batch.input_ids, batch.attention_mask).logits
    assert not torch.allclose(got[0], got[1], atol=1e-3), "examples must get different logits"
    assert got.shape == (len(labels), num_labels)
    torch.testing.assert_close(got, expected.logits, rtol=0, atol=1e-6)
    torch.testing.assert_close(F.cross_entropy(got.float(), labels), expected.loss, rtol=0, atol=1e-6)
    assert not torch.allclose(untyped, expected.logits, atol=1e-4)
    # training mode: the same dropouts in the same order
    ours.train(), ref.train()
    torch.manual_seed(7)
    train_ref = ref(batch.input_ids, batch.attention_mask, batch.token_type_ids).logits
    torch.manual_seed(7)
    got = ours(batch.input_ids, batch.attention_mask, batch.token_type_ids)
    torch.testing.assert_close(got, train_ref, rtol=0, atol=1e-6)


def test_auto_freeze_backbone_trains_the_family_head_only(registry):
    model = _auto(registry, freeze_backbone=True)
    assert type(model.model).__name__ == "BertForSequenceClassification"
    assert all(not p.requires_grad for p in model.backbone.parameters())
    head = [n for n, p in model.model.named_parameters() if p.requires_grad]
    assert head == ["classifier.weight", "classifier.bias"]
    model.train()
    assert model.model.training and model.model.dropout.training and not model.backbone.training
    batch = _pair_batch(registry)
    before = model.backbone.embeddings.word_embeddings.weight.detach().clone()
    F.cross_entropy(model(batch.input_ids, batch.attention_mask, batch.token_type_ids), batch.labels).backward()
    assert model.model.classifier.weight.grad is not None
    assert model.backbone.embeddings.word_embeddings.weight.grad is None
    assert torch.equal(model.backbone.embeddings.word_embeddings.weight, before)


@pytest.mark.parametrize("family, module", [("bert", "dropout"), ("distilbert", "dropout"), ("albert", "dropout"),
                                            ("deberta-v2", "dropout"), ("roberta", "classifier.dropout"),
                                            ("modernbert", "drop")])
def test_auto_dropout_sets_the_family_heads_own_dropout(checkpoints, registry, family, module):
    cls = registry.get("head", "auto").cls
    attention = BY_NAME[family].attention
    default = build_classifier(str(checkpoints[family]), "pretrained", attention, cls, cls.Options(), 2)
    model = build_classifier(str(checkpoints[family]), "pretrained", attention, cls, cls.Options(dropout=0.37), 2)
    assert model.model.get_submodule(module).p == pytest.approx(0.37)
    assert default.model.get_submodule(module).p != pytest.approx(0.37)
    assert model.model.config.num_labels == 2


def test_auto_dropout_on_a_family_without_a_known_key_is_refused(registry, monkeypatch):
    import harness.loop.checkpoints

    cls = registry.get("head", "auto").cls
    config = harness.loop.checkpoints.load_config("bert-tiny", "random")
    monkeypatch.delattr(type(config), "classifier_dropout", raising=False)
    monkeypatch.delattr(config, "classifier_dropout")  # a family whose head reads no such key
    assert build_problem("bert-tiny", "random", "sdpa", cls, cls.Options()) is None
    key, message = build_problem("bert-tiny", "random", "sdpa", cls, cls.Options(dropout=0.2))
    assert key == "head" and "option dropout" in message and "leave dropout unset" in message


def test_a_suite_crosses_linear_and_auto(cli, write_suite, tmp_path):
    suite = write_suite(
        """
        name: crossed
        defaults: {dataset: mrpc, strategy: dynamic}
        matrix:
          head: [linear, auto]
        """
    )
    code, out, err = cli("validate", suite, *tiny_sets())
    assert code == 0, err
    assert "auto" in out and "linear" in out
    code, _, err = cli("run", suite, "--out", tmp_path / "out", "--no-progress", "--isolation", "none", *tiny_sets())
    assert code == 0, err
    records = _records(tmp_path / "out")
    assert [r["config"]["head"]["name"] for r in records] == ["linear", "auto"]
    assert all(r["status"] == "ok" for r in records)
    # the same backbone either way; auto's head is BERT's own (no extra layers)
    params = [r["model_info"]["parameters"] for r in records]
    assert params[0] == params[1]


def test_harness_plugins_lists_the_auto_head(cli):
    code, out, _ = cli("plugins")
    assert code == 0
    assert "auto" in out and "AutoModelForSequenceClassification" in " ".join(out.split())
