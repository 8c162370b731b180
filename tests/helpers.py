"""Helpers the tests share (imported as ``from helpers import ...``; pytest's conftest.py holds
only fixtures): where the data is, the keys of a tiny run, and a poll."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(
    os.environ.get("HARNESS_DATA_DIR") or os.environ.get("HARNESS_TEST_DATA_DIR") or REPO.parent / "shared" / "data"
).expanduser().resolve()

#: keys that make a run take a second or two on two CPU cores: a 2-layer random BERT,
#: small slices of the data, short sequences
TINY: dict[str, Any] = {
    "model": "bert-tiny",
    "init": "random",
    "max_len": 32,
    "batch_size": 16,
    "epochs": 1,
    "warmup_batches": 1,
    "dataset.subset.train": 64,
    "dataset.subset.validation": 32,
}


def tiny_sets(**extra: Any) -> list[str]:
    """``--set`` arguments for a tiny, fast run (see TINY), plus any extra keys."""
    out = []
    for key, value in {**TINY, **extra}.items():
        if value is None:  # None: leave the key to the suite
            continue
        out += ["--set", f"{key}={value}"]
    return out


def wait_for(predicate, timeout: float = 60, poll: float = 0.02) -> bool:
    """Poll ``predicate`` until it holds (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll)
    return False
