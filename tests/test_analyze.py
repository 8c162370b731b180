"""`harness analyze`: the numbers (from lengths alone) and what the command prints."""

from __future__ import annotations

import numpy as np
import pytest

from harness.analyze import analyze_dataset, histogram, padded_tokens, profile


def test_padding_cost_per_strategy():
    lengths = np.array([3, 10, 4, 9, 5, 8])
    assert padded_tokens(lengths, 16, "fixed", 2) == 6 * 16
    assert padded_tokens(lengths, 16, "bucketed", 2) == 2 * (4 + 8 + 10)  # sorted: [3,4] [5,8] [9,10]
    assert padded_tokens(lengths, 6, "bucketed", 2) == 2 * (4 + 6 + 6)  # truncated to 6 first
    dynamic = padded_tokens(lengths, 16, "dynamic", 2)
    assert 2 * (4 + 8 + 10) <= dynamic <= 6 * 10
    with pytest.raises(Exception, match="unknown strategy"):
        padded_tokens(lengths, 16, "sorted", 2)


def test_profile_numbers():
    lengths = np.arange(1, 101)  # 1..100
    a = profile(lengths, dataset="d", split="train", model="m", max_lens=[50, 100, 200], batch_size=10)
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
    ],
)
def test_analyze_mistakes(cli, args, message):
    code, _, err = cli(*args)
    assert code == 2 and message in err.replace("\n", ""), err
