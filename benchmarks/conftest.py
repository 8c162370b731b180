"""pytest-benchmark regression checks (not part of the default test run: tests/ is the testpath).

    pytest benchmarks/ --benchmark-autosave                       # save a baseline
    pytest benchmarks/ --benchmark-compare --benchmark-compare-fail=median:50%

The data come from HARNESS_DATA_DIR, else the ``shared/data`` folder beside the
repository. The saved JSON's machine_info names the GPU (or CPU), CUDA, torch and
transformers; each benchmark's extra_info holds the run's metrics (see docs/results.md).
"""

from __future__ import annotations

import os
from pathlib import Path

from harness.pytest_plugin import machine_info as harness_machine_info

REPO = Path(__file__).resolve().parents[1]
_shared = REPO.parent / "shared" / "data"
if "HARNESS_DATA_DIR" not in os.environ and _shared.is_dir():
    os.environ["HARNESS_DATA_DIR"] = str(_shared)
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info.update(harness_machine_info())
