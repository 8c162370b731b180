"""Tokenizer strategies: every example once per epoch, seeded orders, padding as promised,
sentence pairs with token type ids, and truncation keeping the right tokens."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import tiny_sets

from harness.base import Example
from harness.builtin.bucketed import Bucketed
from harness.builtin.cola import CoLA
from harness.builtin.dynamic import Dynamic
from harness.builtin.fixed import Fixed
from harness.data import DataFiles
from harness.loop.checkpoints import load_tokenizer

STRATEGIES = (Fixed, Dynamic, Bucketed)


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("bert-tiny", "random", None)


@pytest.fixture(scope="module")
def cola_examples(data_dir_module):
    return CoLA(CoLA.Options(), DataFiles("cola", data_dir_module)).load("train")[:400]


@pytest.fixture(scope="module")
def data_dir_module():
    from helpers import SHARED_DATA

    return SHARED_DATA


def make(cls, tokenizer, max_len=64, **options):
    return cls(cls.Options(**options), tokenizer, max_len)


def positions(batches) -> np.ndarray:
    return np.concatenate([b.index.numpy() for b in batches])


@pytest.mark.parametrize("cls", STRATEGIES, ids=lambda c: c.name)
def test_every_example_once_per_epoch_in_a_seeded_order(cls, tokenizer, cola_examples):
    strategy = make(cls, tokenizer)
    encoded = strategy.encode(cola_examples)
    n = len(encoded)
    orders = {}
    for seed, epoch in [(1, 0), (1, 1), (2, 0)]:
        batches = strategy.batches(encoded, 32, seed=seed, epoch=epoch)
        seen = positions(batches)
        assert sorted(seen.tolist()) == list(range(n)), "each example exactly once"
        assert len(batches) == strategy.num_batches(n, 32)
        assert all(len(b.labels) <= 32 for b in batches)
        orders[(seed, epoch)] = seen
    assert not np.array_equal(orders[(1, 0)], orders[(1, 1)]), "a new order each epoch"
    assert not np.array_equal(orders[(1, 0)], orders[(2, 0)]), "a different order per seed"
    again = positions(strategy.batches(encoded, 32, seed=1, epoch=0))
    assert np.array_equal(again, orders[(1, 0)]), "the same seed and epoch give the same order"


@pytest.mark.parametrize("cls", STRATEGIES, ids=lambda c: c.name)
def test_batches_hold_the_right_rows_masks_and_counts(cls, tokenizer, cola_examples):
    strategy = make(cls, tokenizer)
    encoded = strategy.encode(cola_examples)
    for b in strategy.batches(encoded, 32, seed=3):
        for row, i in enumerate(b.index.tolist()):
            k = int(encoded.lengths[i])
            assert b.input_ids[row, :k].tolist() == encoded.input_ids[i]
            assert (b.input_ids[row, k:] == tokenizer.pad_token_id).all()
            assert b.attention_mask[row].tolist() == [1] * k + [0] * (b.input_ids.shape[1] - k)
            assert int(b.labels[row]) == cola_examples[i].label
        assert b.real_tokens == int(b.attention_mask.sum())
        assert b.padded_tokens == b.input_ids.numel()


def test_fixed_pads_to_max_len_dynamic_to_the_longest_in_the_batch(tokenizer, cola_examples):
    fixed, dynamic = make(Fixed, tokenizer, max_len=64), make(Dynamic, tokenizer, max_len=64)
    encoded = dynamic.encode(cola_examples)
    assert all(b.input_ids.shape[1] == 64 for b in fixed.batches(encoded, 32, seed=1))
    for b in dynamic.batches(encoded, 32, seed=1):
        assert b.input_ids.shape[1] == int(encoded.lengths[b.index.numpy()].max())


@pytest.mark.parametrize("cls", (Dynamic, Bucketed), ids=lambda c: c.name)
def test_pad_to_multiple_of_rounds_up_but_never_past_max_len(cls, tokenizer, cola_examples):
    strategy = make(cls, tokenizer, max_len=30, pad_to_multiple_of=8)
    encoded = strategy.encode(cola_examples)
    widths = set()
    for b in strategy.batches(encoded, 16, seed=1):
        longest = int(encoded.lengths[b.index.numpy()].max())
        width = b.input_ids.shape[1]
        widths.add(width)
        assert width >= longest and (width % 8 == 0 or width == 30) and width - longest < 8
    assert 30 in widths, "a batch whose longest is 25..30 is capped at MAX_LEN 30, not padded to 32"


def test_bucketed_pads_far_less_than_dynamic(tokenizer, cola_examples):
    dynamic, bucketed = make(Dynamic, tokenizer), make(Bucketed, tokenizer)
    encoded = dynamic.encode(cola_examples)

    def waste(strategy):
        batches = strategy.batches(encoded, 16, seed=5)
        padded = sum(b.padded_tokens for b in batches)
        return (padded - sum(b.real_tokens for b in batches)) / padded

    assert waste(bucketed) < waste(dynamic) / 2


def test_bucketed_groups_lengths_within_chunks_and_shuffles_batches(tokenizer, cola_examples):
    strategy = make(Bucketed, tokenizer, chunk_batches=5)
    encoded = strategy.encode(cola_examples)
    batches = strategy.batches(encoded, 16, seed=7)
    firsts = [int(encoded.lengths[b.index[0]]) for b in batches]
    assert firsts != sorted(firsts, reverse=True), "batch order is shuffled, not longest first"
    for b in batches:  # inside a batch, lengths come longest first (sorted chunk)
        lengths = encoded.lengths[b.index.numpy()].tolist()
        assert lengths == sorted(lengths, reverse=True)


@pytest.mark.parametrize("cls", STRATEGIES, ids=lambda c: c.name)
def test_evaluation_batches_cover_the_split_sorted_by_length(cls, tokenizer, cola_examples):
    strategy = make(cls, tokenizer)
    encoded = strategy.encode(cola_examples)
    batches = strategy.batches(encoded, 64, seed=None)
    seen = positions(batches)
    assert sorted(seen.tolist()) == list(range(len(encoded)))
    assert encoded.lengths[seen].tolist() == sorted(encoded.lengths.tolist())


@pytest.mark.parametrize("cls", STRATEGIES, ids=lambda c: c.name)
def test_sentence_pairs_get_token_type_ids(cls, tokenizer):
    examples = [
        Example("the cat sat on the mat", 1, text_pair="a cat was sitting"),
        Example("short", 0, text_pair="a much longer second sentence of the pair"),
        Example("no pair in this one", 0),
    ]
    strategy = make(cls, tokenizer, max_len=32)
    encoded = strategy.encode(examples)
    for b in strategy.batches(encoded, 3, seed=1):
        for row, i in enumerate(b.index.tolist()):
            ex = examples[i]
            want = tokenizer(ex.text, ex.text_pair)
            k = len(want["input_ids"])
            assert b.input_ids[row, :k].tolist() == want["input_ids"]
            assert b.token_type_ids[row, :k].tolist() == want["token_type_ids"]
            assert (b.token_type_ids[row, k:] == 0).all()
            if ex.text_pair is not None:
                assert 1 in want["token_type_ids"]


def _words(tokenizer, n):
    """A text of ``n`` words, each a single wordpiece, and its token ids."""
    vocab = ["red", "blue", "green", "house", "tree", "river", "stone", "cloud", "bird", "road"]
    text = " ".join(vocab[i % len(vocab)] for i in range(n))
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == n
    return text, ids


@pytest.mark.parametrize(
    "how, keep",
    [
        ("head", lambda ids, budget: ids[:budget]),
        ("tail", lambda ids, budget: ids[-budget:]),
        ("head+tail", lambda ids, budget: ids[: budget // 4] + ids[-(budget - budget // 4) :]),
    ],
)
@pytest.mark.parametrize("cls", STRATEGIES, ids=lambda c: c.name)
def test_truncation_keeps_the_right_tokens(cls, how, keep, tokenizer):
    text, ids = _words(tokenizer, 50)
    strategy = make(cls, tokenizer, max_len=18, truncation=how)
    encoded = strategy.encode([Example(text, 0), Example("red blue", 1)])
    cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
    assert encoded.input_ids[0] == [cls_id, *keep(ids, 16), sep_id]
    assert encoded.input_ids[1] == [cls_id, *ids[:2], sep_id], "short texts are left alone"
    assert encoded.lengths.tolist() == [18, 4] and encoded.full_lengths.tolist() == [52, 4]
    assert (encoded.full_lengths > encoded.lengths).tolist() == [True, False]


def test_pair_truncation_shortens_the_longer_text_first(tokenizer):
    text, ids = _words(tokenizer, 30)
    strategy = make(Dynamic, tokenizer, max_len=16, truncation="head")
    encoded = strategy.encode([Example("red blue", 0, text_pair=text)])
    sep = tokenizer.sep_token_id
    assert encoded.input_ids[0] == [tokenizer.cls_token_id, *ids[:2], sep, *ids[:11], sep]
    assert encoded.token_type_ids[0] == [0] * 4 + [1] * 12


def test_each_rank_gets_an_equal_disjoint_shard(tokenizer, cola_examples):
    strategy = make(Bucketed, tokenizer)
    encoded = strategy.encode(cola_examples[:101])
    shards = [positions(strategy.batches(encoded, 8, seed=1, rank=r, world_size=2)) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 51
    assert set(shards[0]) | set(shards[1]) == set(range(101))


@pytest.mark.parametrize(
    "options, message",
    [
        ("{pad_to_multiple_of: 0}", "strategy.options.pad_to_multiple_of: must be >= 1, got 0"),
        ("{chunk_batches: many}", "strategy.options.chunk_batches: expected an integer, got 'many'"),
        ("{truncation: middle}", "strategy.options.truncation: expected one of"),
        ("{chunk: 5}", "strategy.options.chunk: unknown key 'chunk'. Available: chunk_batches"),
    ],
)
def test_bad_strategy_options_name_the_key(cli, write_suite, options, message):
    suite = write_suite(
        f"""
        name: bad
        defaults:
          strategy: {{name: bucketed, options: {options}}}
        """
    )
    code, _, err = cli("validate", suite)
    assert code == 2
    assert message in err.replace("\n", " ")
    assert "Traceback" not in err


def test_dynamic_and_bucketed_runs_pad_less_than_fixed(cli, write_suite, tmp_path):
    suite = write_suite(
        """
        name: strategies
        defaults: {dataset: cola, head: linear}
        matrix:
          strategy: [fixed, dynamic, bucketed]
        """
    )
    out = tmp_path / "out"
    code, stdout, stderr = cli("run", suite, "--out", out, "--no-progress", *tiny_sets())
    assert code == 0, stderr
    records = {r["config"]["strategy"]["name"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    epoch = {name: r["epochs"][0] for name, r in records.items()}
    assert epoch["fixed"]["real_tokens"] == epoch["dynamic"]["real_tokens"] == epoch["bucketed"]["real_tokens"]
    assert epoch["bucketed"]["padded_tokens"] < epoch["dynamic"]["padded_tokens"] < epoch["fixed"]["padded_tokens"]
    for e in epoch.values():
        assert e["train_cpu_seconds"] > 0
    assert "pad waste" in stdout


def test_max_len_suite_crosses_max_len_with_every_strategy(cli):
    code, stdout, err = cli("validate", "suites/max_len.yaml")
    assert code == 0, err
    assert "max_len: 9 runs" in stdout
    for name in ("fixed", "dynamic", "bucketed"):
        assert stdout.count(f" {name} ") == 3


def test_strategies_seeds_suite_has_three_seeds_per_strategy(cli):
    code, stdout, err = cli("validate", "suites/strategies_seeds.yaml")
    assert code == 0, err
    assert "strategies_seeds: 6 runs" in stdout


def test_imdb_suite_validates_when_the_imdb_plugin_is_installed(cli):
    from harness.registry import load_registry

    if "imdb" not in load_registry().names("dataset"):
        pytest.skip("the imdb dataset plugin is not installed in this tree")
    code, stdout, err = cli("validate", "suites/imdb.yaml")
    assert code == 0, err
    assert "imdb: 6 runs" in stdout and "head+tail" in stdout
