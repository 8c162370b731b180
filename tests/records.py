"""Small run records built by hand, through the record model train.py uses
(:class:`harness.records.record.RunRecord`), for report/compare tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.records.record import RunRecord

#: when the hand-made runs started and finished (any fixed time: the tables do not show it)
WHEN = "2025-01-01T00:00:00+00:00"


def record(
    run_id: str, *, strategy: str = "fixed", max_len: int = 64, seed: int = 1, seconds: float = 2.0,
    mcc: float = 0.3, status: str = "ok", device_name: str = "NVIDIA H100 80GB HBM3", suite: str = "synthetic",
    **config: Any,
) -> dict[str, Any]:
    metrics = {"mcc": mcc, "accuracy": 0.7} if status == "ok" else {}
    epochs = [] if status == "failed" else [{
        "epoch": 1, "train_seconds": seconds, "eval_seconds": 0.1, "train_loss": 0.5, "steps": 10,
        "real_tokens": 1000, "padded_tokens": 2000, "train_flops": 1e12, "peak_memory_bytes": 10**9,
        "metrics": {"mcc": mcc, "accuracy": 0.7},
    }]
    return RunRecord(
        run_id=run_id,
        status=status,
        error=None if status == "ok" else "RuntimeError: boom",
        suite=suite,
        started_at=WHEN,
        finished_at=WHEN,
        config={
            "model": "minilm", "init": "pretrained", "dataset": {"name": "cola", "options": {}},
            "strategy": {"name": strategy, "options": {}}, "head": {"name": "linear", "options": {}},
            "max_len": max_len, "batch_size": 32, "seed": seed, "device": "cuda", "precision": "bf16", **config,
        },
        env={"device_name": device_name, "torch": "2.11.0", "transformers": "5.17.0", "harness_version": "0.1.0"},
        main_metric="mcc",
        epochs=epochs,
        metrics=metrics,
    ).to_dict()


def with_fields(rec: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """``rec`` with more record fields (``busy=True``, ``metrics_ci95={...}``), validated by
    :class:`RunRecord` again."""
    return RunRecord(**{**rec, **fields}).to_dict()


def write_results(directory: Path, records: list[dict[str, Any]]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return directory


def sweep(strategies=("fixed", "dynamic"), lens=(32, 64, 128), seeds=(1, 2, 3)) -> list[dict[str, Any]]:
    """A strategies x MAX_LEN x seeds sweep: fixed grows with MAX_LEN, the others do not."""
    out = []
    for s in strategies:
        for n in lens:
            for seed in seeds:
                seconds = (n / 16 if s == "fixed" else 2.0) + 0.1 * seed
                out.append(record(f"{s}-{n}-{seed}", strategy=s, max_len=n, seed=seed, seconds=seconds, mcc=0.2 + 0.01 * seed))
    return out
