"""Epoch time per tokenizer strategy: the embedded MiniLM on a fixed, seeded slice of CoLA
(128 training sentences, MAX_LEN 64, batch 32, one epoch per round; BENCHMARK_DEFAULTS).

The strategies are the ones registered when the benchmarks are collected (built-ins and
installed plugins), so a new strategy is benchmarked without an edit here.
"""

from __future__ import annotations

import pytest

from harness.registry import load_registry

STRATEGIES = load_registry().names("strategy")


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_epoch_time(harness_benchmark, strategy):
    record = harness_benchmark(strategy=strategy, rounds=3, warmup_rounds=1)
    assert record["status"] == "ok", record.get("error")
    assert record["config"]["strategy"]["name"] == strategy
    epoch = record["epochs"][0]
    assert 0 < epoch["real_tokens"] <= epoch["padded_tokens"]
