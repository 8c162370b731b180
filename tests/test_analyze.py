"""`harness analyze`: the numbers (from lengths alone) and what the command prints."""

from __future__ import annotations

import csv
import re
from types import SimpleNamespace

import numpy as np
import pytest

from harness.analyze import EPOCHS, analyze_dataset, default_strategies, histogram, padded_tokens, profile
from harness.registry import load_registry

#: all a strategy asks of the tokenizer when it only orders and pads lengths
PAD_ONLY_TOKENIZER = SimpleNamespace(pad_token_id=0)


def builtins() -> dict:
    """The built-in strategies, default options, for costing lengths alone."""
    factories, skipped = default_strategies(load_registry(), PAD_ONLY_TOKENIZER)
    assert not skipped
    return factories


def test_padding_cost_per_strategy():
    lengths = np.array([3, 10, 4, 9, 5, 8])
    make = builtins()
    assert padded_tokens(lengths, make["fixed"](16), 2) == 6 * 16
    # bucketed's chunks are 50 batches: six examples are one chunk, sorted: [10,9] [8,5] [4,3]
    assert padded_tokens(lengths, make["bucketed"](16), 2) == 2 * (4 + 8 + 10)
    assert padded_tokens(lengths, make["bucketed"](6), 2) == 2 * (4 + 6 + 6)  # truncated to 6 first
    dynamic = padded_tokens(lengths, make["dynamic"](16), 2)
    assert 2 * (4 + 8 + 10) <= dynamic <= 6 * 10
    with pytest.raises(Exception, match="unknown strategy"):
        default_strategies(load_registry(), PAD_ONLY_TOKENIZER, ["sorted"])


def test_strategies_are_asked_in_registry_order_with_fixed_first():
    make = builtins()
    assert list(make)[0] == "fixed" and set(make) == {"fixed", "dynamic", "bucketed"}
    # the tutorial's order, seeded per epoch as training seeds it, padded to each batch's longest
    lengths = np.random.default_rng(1).integers(2, 40, size=100)
    by_hand = [
        sum(len(b) * lengths[b].max() for b in np.array_split(np.random.default_rng([0, e]).permutation(100), range(8, 100, 8)))
        for e in range(EPOCHS)
    ]
    assert padded_tokens(lengths, make["dynamic"](64), 8) == round(np.mean(by_hand))


def test_profile_numbers():
    lengths = np.arange(1, 101)  # 1..100
    a = profile(lengths, dataset="d", split="train", model="m", strategies=builtins(), max_lens=[50, 100, 200], batch_size=10)
    assert a.coverage() == {0.95: 95, 0.99: 99, 1.0: 100}
    assert a.percentiles()["p50"] == 50 and a.percentiles()["max"] == 100
    assert a.cost("fixed", 50).truncated == 0.5 and a.cost("fixed", 100).truncated == 0.0
    assert a.cost("fixed", 200).waste == pytest.approx(1 - lengths.sum() / (100 * 200))
    # beyond the longest example, dynamic and bucketed padding cost the same at every MAX_LEN
    assert a.same_cost_groups("bucketed") == [[100, 200]]
    assert sum(c for _, _, c in a.histogram()) == 100


def test_histogram_bins_are_round_and_cover_everything():
    bins = histogram(np.array([5, 9, 12, 47]), bins=16)
    widths = {hi - lo + 1 for lo, hi, _ in bins}
    assert len(widths) == 1 and widths.pop() in (1, 2, 4, 5, 8, 10)
    assert bins[0][0] <= 5 and bins[-1][1] >= 47 and sum(c for *_, c in bins) == 4


def test_cola_dynamic_padding_makes_max_len_64_and_128_cost_the_same():
    a = analyze_dataset("cola", model="minilm", max_lens=[32, 64, 128])
    assert a.examples == 8551
    longest = int(a.lengths.max())
    assert longest < 64  # why: no CoLA sentence reaches 64 tokens
    assert a.cost("dynamic", 64).padded_tokens == a.cost("dynamic", 128).padded_tokens
    assert a.cost("fixed", 128).padded_tokens == 2 * a.cost("fixed", 64).padded_tokens
    assert a.cost("bucketed", 64).padded_tokens < a.cost("dynamic", 64).padded_tokens


def test_analyze_cola_prints_the_profile(cli):
    code, out, err = cli("analyze", "cola", "--max-len", "32,64,128")
    assert code == 0, err
    assert "8,551 examples" in out and "p95" in out and "│" in out
    assert "MAX_LEN that keeps examples whole: 95%:" in out
    assert "dynamic: MAX_LEN 64, 128 cost the same" in out


def test_analyze_imdb_shows_truncation(cli):
    code, out, err = cli("analyze", "imdb", "--subset", "400", "--max-len", "128,512")
    assert code == 0, err
    assert "400 of 2,500" in out
    assert "truncation: at MAX_LEN 512" in out


@pytest.mark.parametrize(
    "args,message",
    [
        (["analyze", "colaa"], "unknown dataset 'colaa'. Did you mean 'cola'?"),
        (["analyze", "cola", "--max-len", "64,abc"], "--max-len 64,abc: expected numbers"),
        (["analyze", "cola", "--max-len", "1024"], "above the model's position limit (512"),
        (["analyze", "sst2", "--split", "test"], "dataset 'sst2' has no test split"),
        (["analyze", "imdb", "--option", "validation=nope"], "--option validation: expected one of"),
        (["analyze", "cola", "--strategy", "dynamc"], "--strategy: unknown strategy 'dynamc'. Did you mean 'dynamic'?"),
    ],
)
def test_analyze_mistakes(cli, args, message):
    code, _, err = cli(*args)
    assert code == 2 and message in err.replace("\n", ""), err


STRATEGY_PLUGIN = """
import numpy as np

from harness import hookimpl
from harness.base import StrategyOptions, TokenizerStrategy


class Pad16(TokenizerStrategy):
    name = "pad16"
    description = "each batch padded to a multiple of 16 (at most MAX_LEN), random order"

    def pad_to(self, batch_lengths):
        return min(-(-int(batch_lengths.max()) // 16) * 16, self.max_len)


class WidthOptions(StrategyOptions):
    width: int  # no default


class Width(TokenizerStrategy):
    name = "width"
    Options = WidthOptions

    def pad_to(self, batch_lengths):
        return self.options.width


@hookimpl
def harness_register_tokenizer_strategies(register):
    register(Pad16)
    register(Width)
"""


@pytest.fixture
def pad16_installed(tmp_path, monkeypatch):
    """A strategy package 'installed' as tests/test_plugins.py installs one: the module and
    its .dist-info (entry_points.txt) on sys.path, entry points autoloaded."""
    site = tmp_path / "site"
    (site / "pad16_plugin").mkdir(parents=True)
    (site / "pad16_plugin" / "__init__.py").write_text(STRATEGY_PLUGIN)
    dist = site / "pad16_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: pad16-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[harness]\npad16 = pad16_plugin\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delenv("HARNESS_DISABLE_PLUGIN_AUTOLOAD", raising=False)


def table_row(out: str, strategy: str) -> list[str]:
    """The cells of the cost table's row for ``strategy`` (one MAX_LEN)."""
    lines = [line for line in out.splitlines() if re.search(rf"│ {re.escape(strategy)} +│", line)]
    assert len(lines) == 1, f"no single row for {strategy!r} in:\n{out}"
    return [cell.strip() for cell in lines[0].split("│")[1:-1]]


def test_a_plugin_strategy_shows_up_with_its_padding_waste(cli, data_dir, pad16_installed):
    """Issue item 3: a third-party tokenizer strategy installed as a plugin shows up in
    `harness analyze cola` with its padding waste."""
    code, out, err = cli("analyze", "cola", "--max-len", "64")
    assert code == 0, err

    # the same sentences (the whole train split: no subset, so no sampling to redo), measured
    # with the tokenizer itself and batched by hand as training batches pad16: a seeded
    # permutation per epoch, 32 a batch, each padded to its longest rounded up to 16
    from harness.loop.checkpoints import load_tokenizer

    with open(data_dir / "cola" / "raw" / "in_domain_train.tsv", newline="", encoding="utf-8") as f:
        sentences = [row[3] for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]
    n = len(sentences)
    tokenizer = load_tokenizer("minilm", "pretrained", None)
    lengths = np.minimum([len(ids) for ids in tokenizer(sentences)["input_ids"]], 64)
    padded = round(np.mean([
        sum(len(b) * min(-(-lengths[b].max() // 16) * 16, 64) for b in np.array_split(order, range(32, n, 32)))
        for order in (np.random.default_rng([0, e]).permutation(n) for e in range(EPOCHS))
    ]))
    waste = 1 - lengths.sum() / padded

    _, _, name, tokens, shown_waste, vs_fixed = table_row(out, "pad16")
    assert (name, shown_waste) == ("pad16", f"{waste:.0%}")
    assert tokens == f"{padded / 1e3:.1f}k" and vs_fixed == f"{padded / (n * 64):.2f}×"
    assert table_row(out, "fixed")[2:] == ["fixed", f"{n * 64 / 1e3:.1f}k", f"{1 - lengths.sum() / (n * 64):.0%}", "1.00×"]
    # a strategy whose options have no defaults cannot be costed: said, not hidden
    assert "width: not costed, options without a default: width" in out


def test_strategy_option_restricts_the_table(cli):
    code, out, err = cli("analyze", "cola", "--max-len", "64,128", "--strategy", "dynamic")
    assert code == 0, err
    assert "│ dynamic" in out and "fixed │" not in out and "bucketed" not in out
    assert "vs fixed" not in out  # no baseline costed: no column relative to it
    assert "dynamic: MAX_LEN 64, 128 cost the same" in out
