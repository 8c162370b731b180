"""How much cheaper is an epoch with ``freeze_backbone``? Frozen and fine-tuned epochs of the
real loop (``harness.loop.train.fit``) alternate in one process, so a busy machine slows both
alike; the claim is the ratio of their medians.

    pytest benchmarks/test_freeze_backbone.py -s     # ~1-3 min on two idle CPU cores

Knobs (environment): ``FREEZE_BENCH_MODEL`` (default ``minilm``, the embedded pretrained
model), ``FREEZE_BENCH_TRAIN`` (training sentences, default 256), ``FREEZE_BENCH_ROUNDS``
(alternations, default 3), ``FREEZE_BENCH_HEAD`` (default ``cls``).
"""

from __future__ import annotations

import os
import statistics
from pathlib import Path

import pytest

from harness.registry import load_registry
from harness.config.suite import Suite
from harness.config.resolve import resolve
from harness.loop.train import fit

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _data(monkeypatch):
    if not os.environ.get("HARNESS_DATA_DIR"):
        shared = REPO.parent / "shared" / "data"
        if not shared.is_dir():
            pytest.skip("set HARNESS_DATA_DIR to a folder holding cola/")
        monkeypatch.setenv("HARNESS_DATA_DIR", str(shared))


def _runs(model: str, head: str, n_train: int):
    suite = Suite(
        path=Path("<freeze benchmark>"), name="freeze", description="", plugins=[],
        defaults={
            "model": model, "init": "random" if model == "bert-tiny" else "pretrained",
            "dataset": "cola", "strategy": "fixed", "head": head, "max_len": 64, "batch_size": 32,
            "epochs": 1, "lr": 1e-4, "seed": 1, "warmup_batches": 2,
            "dataset.subset.train": n_train, "dataset.subset.validation": 32,
        },
        matrix={"head.options.freeze_backbone": [False, True]}, runs=[], on_cpu={},
    )
    return resolve(suite, load_registry())


def test_a_frozen_backbone_makes_the_epoch_cheaper(benchmark):
    model = os.environ.get("FREEZE_BENCH_MODEL", "minilm")
    n_train = int(os.environ.get("FREEZE_BENCH_TRAIN", 256))
    rounds = int(os.environ.get("FREEZE_BENCH_ROUNDS", 3))
    trained, frozen = _runs(model, os.environ.get("FREEZE_BENCH_HEAD", "cls"), n_train)
    seconds: dict[str, list[float]] = {"trained": [], "frozen": []}
    trainable: dict[str, int] = {}

    def alternate() -> None:
        for _ in range(rounds):
            for label, run in (("trained", trained), ("frozen", frozen)):
                record = fit(run)
                assert record["status"] == "ok"
                seconds[label].append(record["epochs"][0]["train_seconds"])
                trainable[label] = record["model_info"]["trainable_parameters"]

    benchmark.pedantic(alternate, rounds=1, iterations=1)
    t, f = statistics.median(seconds["trained"]), statistics.median(seconds["frozen"])
    benchmark.extra_info.update(
        model=model, train_sentences=n_train, epoch_seconds=seconds, ratio=f / t, trainable_parameters=trainable
    )
    print(f"\n{model}, {n_train} CoLA sentences, fixed MAX_LEN 64, batch 32: epoch {t:.2f} s fine-tuned, "
          f"{f:.2f} s frozen (medians of {rounds}); frozen/trained = {f / t:.2f}; "
          f"trainable parameters {trainable['trained']:,} vs {trainable['frozen']:,}; all: {seconds}")
    assert f < 0.8 * t, f"a frozen epoch should cost well under a fine-tuned one: {f:.2f} s vs {t:.2f} s"
