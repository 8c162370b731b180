"""Classification heads: linear = BertForSequenceClassification, mean ignores padding,
freeze_backbone trains the head only, multi-class and sentence pairs, BERT's init, user heads."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForSequenceClassification, BertConfig

from helpers import tiny_sets
from harness.base import Example, masked_mean
from harness.loop.checkpoints import ARCHITECTURES, load_tokenizer
from harness.loop.classifier import build_classifier
from harness.registry import load_registry

HEADS = ["linear", "cls", "mean", "mlp"]
SENTENCES = [
    "The sailors rode the breeze clear of the rocks.",
    "Fred watered the plants flat.",
    "The more you eat, the less you want.",
    "Bill cried himself to sleep.",
]


@pytest.fixture(scope="module")
def registry():
    return load_registry()


def build(registry, head: str, num_labels: int = 2, **options):
    cls = registry.get("head", head).cls
    torch.manual_seed(0)
    return build_classifier("bert-tiny", "random", "sdpa", cls, cls.Options(**options), num_labels)


def encode(registry, examples: list[Example], max_len: int):
    """One batch of ``examples`` padded to ``max_len`` by the built-in ``fixed`` strategy."""
    tokenizer = load_tokenizer("bert-tiny", "random", None)
    strategy = registry.get("strategy", "fixed").cls(registry.get("strategy", "fixed").cls.Options(), tokenizer, max_len)
    encoded = strategy.encode(examples)
    return strategy.collate(encoded, torch.arange(len(examples)).numpy())


def logits_of(model, batch) -> torch.Tensor:
    return model(batch.input_ids, batch.attention_mask, batch.token_type_ids)


# ------------------------------------------------------------ linear = BERT's own head


@pytest.mark.parametrize("num_labels", [2, 3])
def test_linear_gives_the_logits_and_loss_of_bert_for_sequence_classification(registry, num_labels):
    ours = build(registry, "linear", num_labels)
    config = BertConfig(**ARCHITECTURES["bert-tiny"], num_labels=num_labels)
    ref = AutoModelForSequenceClassification.from_config(config, attn_implementation="sdpa")
    ours.backbone.load_state_dict(ref.bert.state_dict())
    ours.head.classifier.load_state_dict(ref.classifier.state_dict())
    ours.eval(), ref.eval()

    labels = torch.arange(len(SENTENCES)) % num_labels
    batch = encode(registry, [Example(s, int(y)) for s, y in zip(SENTENCES, labels)], max_len=24)
    assert (batch.attention_mask == 0).any(), "the batch must hold padding"
    with torch.no_grad():
        expected = ref(batch.input_ids, batch.attention_mask, batch.token_type_ids, labels=labels)
        got = logits_of(ours, batch)
    assert got.shape == (len(SENTENCES), num_labels)
    torch.testing.assert_close(got, expected.logits, rtol=0, atol=1e-6)
    # the loss as the training loop computes it
    torch.testing.assert_close(F.cross_entropy(got.float(), labels), expected.loss, rtol=0, atol=1e-6)

    # in training mode the dropouts draw in the same order: same seed, same logits
    ours.train(), ref.train()
    torch.manual_seed(7)
    train_ref = ref(batch.input_ids, batch.attention_mask, batch.token_type_ids).logits
    torch.manual_seed(7)
    torch.testing.assert_close(logits_of(ours, batch), train_ref, rtol=0, atol=1e-6)


# ---------------------------------------------------------------- mean ignores padding


def test_mean_gives_the_same_logits_however_far_a_sentence_is_padded(registry):
    model = build(registry, "mean").eval()
    sentence = [Example(SENTENCES[0], 1)]
    short, long = encode(registry, sentence, max_len=16), encode(registry, sentence, max_len=48)
    assert short.input_ids.shape[1] == 16 and long.input_ids.shape[1] == 48
    with torch.no_grad():
        torch.testing.assert_close(logits_of(model, short), logits_of(model, long), rtol=0, atol=1e-5)
        # the check can fail: an unmasked mean over the same hidden states differs
        hidden = [model.backbone(b.input_ids, b.attention_mask, b.token_type_ids).last_hidden_state for b in (short, long)]
    assert not torch.allclose(hidden[0].mean(1), hidden[1].mean(1), atol=1e-3)


def test_masked_mean_excludes_padded_positions_whatever_they_hold():
    hidden = torch.randn(2, 5, 3)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0]])
    hidden[0, 3:] = float("nan")  # padding may hold anything
    hidden[1, 1:] = 1e30
    out = masked_mean(hidden, mask)
    torch.testing.assert_close(out[0], hidden[0, :3].mean(0))
    torch.testing.assert_close(out[1], hidden[1, 0])


# ------------------------------------------------------------------- freeze_backbone


@pytest.mark.parametrize("head", HEADS)
def test_freeze_backbone_changes_only_the_head_after_a_step(registry, head):
    model = build(registry, head, num_labels=3, freeze_backbone=True)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    # an optimizer over every parameter, with weight decay: freezing must still hold
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    model.train()
    assert model.head.training and not model.backbone.training, "a frozen backbone runs in eval mode"
    batch = encode(registry, [Example(s, i % 3) for i, s in enumerate(SENTENCES)], max_len=24)
    F.cross_entropy(logits_of(model, batch), batch.labels).backward()
    optimizer.step()

    for name, p in model.named_parameters():
        changed = not torch.equal(p, before[name])
        assert changed == name.startswith("head."), f"{name}: {'changed' if changed else 'unchanged'}"
    assert all(not p.requires_grad for p in model.backbone.parameters())


def test_without_freeze_the_backbone_trains_too(registry):
    model = build(registry, "cls")
    before = model.backbone.embeddings.word_embeddings.weight.detach().clone()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    batch = encode(registry, [Example(s, i % 2) for i, s in enumerate(SENTENCES)], max_len=24)
    model.train()
    F.cross_entropy(logits_of(model, batch), batch.labels).backward()
    optimizer.step()
    assert model.backbone.training
    assert not torch.equal(model.backbone.embeddings.word_embeddings.weight, before)


# ---------------------------------------------------- labels, pairs, initialisation


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("num_labels", [2, 5])
def test_every_head_classifies_sentence_pairs_into_any_number_of_labels(registry, head, num_labels):
    model = build(registry, head, num_labels).eval()
    examples = [Example(a, i % num_labels, text_pair=b) for i, (a, b) in enumerate(zip(SENTENCES, SENTENCES[1:] + SENTENCES[:1]))]
    batch = encode(registry, examples, max_len=40)
    assert (batch.token_type_ids == 1).any()
    with torch.no_grad():
        logits = logits_of(model, batch)
    assert logits.shape == (len(examples), num_labels) and torch.isfinite(logits).all()


@pytest.mark.parametrize("head", HEADS)
def test_heads_initialise_like_berts_classifier(registry, head):
    """Normal(0, initializer_range) weights and zero biases, as BertPreTrainedModel does
    (torch's default would be uniform with std 1/sqrt(3 * fan_in) and nonzero biases)."""
    config = BertConfig(hidden_size=512, initializer_range=0.05)
    cls = registry.get("head", head).cls
    module = cls(cls.Options(), config, 64)
    module.init_weights()
    linears = [m for m in module.modules() if isinstance(m, torch.nn.Linear)]
    assert linears
    for layer in linears:
        assert layer.weight.std().item() == pytest.approx(0.05, rel=0.1)
        assert layer.weight.mean().abs().item() < 0.005
        assert torch.count_nonzero(layer.bias) == 0
    # and the harness applies it when it builds a classifier
    built = build(registry, head)
    assert all(torch.count_nonzero(m.bias) == 0 for m in built.head.modules() if isinstance(m, torch.nn.Linear))


def test_mlp_options_shape_the_head(registry):
    model = build(registry, "mlp", 3, hidden_size=7, activation="tanh", pooling="mean")
    assert model.head.dense.out_features == 7 and model.head.classifier.in_features == 7
    assert isinstance(model.head.activation, torch.nn.Tanh)
    # mean pooling inside the MLP ignores padding too
    model.eval()
    one = [Example(SENTENCES[1], 0)]
    with torch.no_grad():
        torch.testing.assert_close(
            logits_of(model, encode(registry, one, 16)), logits_of(model, encode(registry, one, 40)), rtol=0, atol=1e-5
        )


def test_only_linear_builds_the_pooler(registry):
    assert build(registry, "linear").backbone.pooler is not None
    for head in ("cls", "mean", "mlp"):
        assert getattr(build(registry, head).backbone, "pooler", None) is None


# ------------------------------------------------------------- heads in a suite


USER_PLUGIN = '''
"""A user's own plugin module: a max-pooling head and a 3-class sentence-pair dataset."""
import torch
from torch import nn

from harness import hookimpl
from harness.base import Dataset, Example, Head


class MaxPool(Head):
    name = "maxpool"
    description = "max over the real tokens' final hidden states -> linear"

    def __init__(self, options, config, num_labels):
        super().__init__(options, config, num_labels)
        self.dropout = nn.Dropout(self.classifier_dropout())
        self.classifier = nn.Linear(config.hidden_size, num_labels)

    def forward(self, hidden_states, pooled, attention_mask):
        masked = hidden_states.masked_fill(attention_mask.unsqueeze(-1) == 0, float("-inf"))
        return self.classifier(self.dropout(masked.max(dim=1).values))


WORDS = ["red", "green", "blue"]


class Colours(Dataset):
    name = "colours"
    labels = ("same", "other", "none")
    metrics = ("accuracy", "macro_f1")

    def load(self, split):
        n = {"train": 48, "validation": 24, "test": 24}[split]
        out = []
        for i in range(n):
            a, b = WORDS[i % 3], WORDS[(i // 3) % 3]
            label = 0 if a == b else (2 if i % 5 == 0 else 1)
            out.append(Example(f"the {a} one", label, text_pair=f"a {b} thing"))
        return out


@hookimpl
def harness_register_heads(register):
    register(MaxPool)


@hookimpl
def harness_register_datasets(register):
    register(Colours)
'''


def _records(out):
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def _head_parameters(record_config: dict, plugin) -> int:
    registry = load_registry([str(plugin)])
    cls = registry.get("head", record_config["head"]["name"]).cls
    opts = cls.Options(**record_config["head"]["options"])
    return sum(p.numel() for p in cls(opts, BertConfig(**ARCHITECTURES["bert-tiny"]), 3).parameters())


def test_a_users_head_from_a_local_module_runs_in_a_suite(cli, write_suite, tmp_path):
    (tmp_path / "my_plugin.py").write_text(USER_PLUGIN, encoding="utf-8")
    suite = write_suite(
        """
        name: user-head
        plugins: [my_plugin.py]
        defaults: {dataset: colours, strategy: fixed}
        matrix:
          head: [maxpool, mlp]
          head.options.freeze_backbone: [false, true]
        """
    )
    out = tmp_path / "out"
    code, stdout, stderr = cli("run", suite, "--out", out, "--no-progress", *tiny_sets())
    assert code == 0, stderr
    records = _records(out)
    assert [(r["config"]["head"]["name"], r["config"]["head"]["options"]["freeze_backbone"]) for r in records] == [
        ("maxpool", False), ("maxpool", True), ("mlp", False), ("mlp", True)
    ]
    for r in records:
        assert r["status"] == "ok", r.get("error")
        assert r["data"]["labels"] == ["same", "other", "none"]
        assert set(r["metrics"]) == {"accuracy", "macro_f1"}
        trainable, total = r["model_info"]["trainable_parameters"], r["model_info"]["parameters"]
        if r["config"]["head"]["options"]["freeze_backbone"]:
            assert trainable == _head_parameters(r["config"], tmp_path / "my_plugin.py")  # a probe trains the head only
        else:
            assert trainable == total
    assert "maxpool" in stdout and "freeze_backbone" in stdout


def test_a_users_head_given_with_dash_dash_plugin(cli, write_suite, tmp_path):
    plugin = tmp_path / "elsewhere" / "heads_of_mine.py"
    plugin.parent.mkdir()
    plugin.write_text(USER_PLUGIN, encoding="utf-8")
    suite = write_suite("name: flag\ndefaults: {dataset: cola, head: maxpool}\n")
    out = tmp_path / "out"
    code, _, stderr = cli("run", suite, "--out", out, "--no-progress", "--plugin", plugin, *tiny_sets())
    assert code == 0, stderr
    (record,) = _records(out)
    assert record["status"] == "ok" and record["config"]["head"]["name"] == "maxpool"
    assert set(record["metrics"]) == {"mcc", "accuracy"}


# ------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "head, message",
    [
        ("{name: mlp, options: {activation: swish}}",
         "suite.yaml:3: defaults.head.options.activation: expected one of 'gelu', 'relu', 'tanh' or 'silu', got 'swish'"),
        ("{name: mlp, options: {hidden_size: 0}}", "suite.yaml:3: defaults.head.options.hidden_size: must be >= 1, got 0"),
        ("{name: mean, options: {dropout: high}}", "suite.yaml:3: defaults.head.options.dropout: expected a number, got 'high'"),
        ("{name: cls, options: {dropout: 1.5}}", "defaults.head.options.dropout: must be < 1.0, got 1.5"),
        ("{name: cls, options: {freeze_backbone: maybe}}",
         "defaults.head.options.freeze_backbone: expected true or false, got 'maybe'"),
        ("{name: mlp, options: {pool: mean}}", "defaults.head.options.pool: unknown key 'pool'. Did you mean 'pooling'?"),
        ("{name: cls, options: {pooling: mean}}", "defaults.head.options.pooling: unknown key 'pooling'."),
        ("meen", "suite.yaml:3: defaults.head: unknown head 'meen'. Did you mean 'mean'? Available: auto, cls, linear, mean, mlp"),
    ],
)
def test_bad_head_settings_are_one_line_errors_naming_the_key(cli, write_suite, head, message):
    suite = write_suite(f"name: bad\ndefaults:\n  head: {head}\n")
    code, stdout, stderr = cli("validate", suite)
    assert code == 2
    assert message in " ".join(stderr.split()), stderr
    assert "Traceback" not in stderr


def test_a_head_whose_options_drop_dropout_and_freeze_backbone_is_refused(cli, write_suite, tmp_path):
    (tmp_path / "bad_head.py").write_text(
        "from harness import hookimpl\n"
        "from harness.base import Head, Options\n"
        "class Narrow(Head):\n"
        "    name = 'narrow'\n"
        "    class Options(Options):\n"
        "        width: int = 3\n"
        "@hookimpl\n"
        "def harness_register_heads(register):\n"
        "    register(Narrow)\n",
        encoding="utf-8",
    )
    suite = write_suite("name: bad\nplugins: [bad_head.py]\ndefaults: {head: narrow}\n")
    code, _, stderr = cli("validate", suite)
    assert code == 2
    assert "Narrow.Options must subclass harness.base.HeadOptions" in stderr and "bad_head.py" in stderr


def test_the_heads_suite_tables_mcc_and_epoch_time_per_head_and_freeze_flag_over_three_seeds():
    from pathlib import Path

    from harness.render.tables import table_cells
    from harness.config.suite import load_suite
    from harness.config.resolve import resolve

    suite = load_suite(Path(__file__).resolve().parents[1] / "suites" / "heads.yaml")
    runs = resolve(suite, load_registry())
    configs = [r.record_config() for r in runs]
    assert len(runs) == 24
    assert {(c["head"]["name"], c["head"]["options"]["freeze_backbone"]) for c in configs} == {
        (h, f) for h in HEADS for f in (False, True)
    }
    assert sorted(c["seed"] for c in configs) == [1] * 8 + [2] * 8 + [3] * 8
    assert all(c["dataset"]["name"] == "cola" for c in configs)
    # records as the loop writes them, with made-up numbers: the table groups the seeds
    records = []
    for i, r in enumerate(runs):
        seconds, mcc = 10.0 + i, 0.1 + 0.01 * r.config.seed
        records.append({
            "run_id": r.run_id, "status": "ok", "config": configs[i], "main_metric": "mcc",
            "epochs": [{"train_seconds": seconds, "eval_seconds": 1.0, "train_loss": 0.5, "real_tokens": 10,
                        "padded_tokens": 20, "peak_memory_bytes": 1, "metrics": {"mcc": mcc, "accuracy": 0.7}}],
            "metrics": {"mcc": mcc, "accuracy": 0.7},
        })
    header, cells, _ = table_cells(records)
    assert len(cells) == 8
    col = {name: i for i, name in enumerate(header)}
    assert {"head", "freeze_backbone", "runs", "epoch s", "mcc"} <= set(col)
    for line in cells:
        assert line[col["runs"]] == "3"
        # mean ± the 95% t interval's half-width over the seeds: 4.303 x 0.010 / sqrt(3)
        assert line[col["mcc"]] == "0.120 ± 0.025 (n=3)"
        assert "±" in line[col["epoch s"]]
    assert sorted((line[col["head"]], line[col["freeze_backbone"]]) for line in cells) == sorted(
        (h, str(f)) for h in HEADS for f in (False, True)
    )
