"""Measuring honestly: device-synchronised clocks, memory, FLOPs, and the environment.

Every clock read on a GPU is preceded by ``torch.cuda.synchronize()``, so a time covers
the work queued before it, not just its launch.
"""

from __future__ import annotations

import os
import platform
import resource
import subprocess
import sys
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_precision(precision: str, device: str) -> str:
    """``auto``: bf16 on a GPU that supports it, else fp32 (also on a CPU with bf16
    instructions: there bf16 is a choice to make explicitly, see :func:`cpu_bf16_native`)."""
    if precision != "auto":
        return precision
    if device.startswith("cuda") and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"


@lru_cache(maxsize=1)
def cpu_bf16_native() -> bool:
    """Whether the CPU computes bf16 matmuls in hardware: AVX512-BF16 or AMX (x86), BF16 (Arm).

    There, ``precision: bf16`` (autocast) trains MiniLM about 1.6-1.8x faster than fp32
    (two AMD EPYC Zen 4 cores); without them bf16 is emulated and slower than fp32.
    """
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return bool({"avx512_bf16", "amx_bf16", "bf16"} & set(value.split()))
    return False


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Clock:
    """Seconds between ``start()`` and ``stop()``, with the device synchronised at both."""

    def __init__(self, device: torch.device):
        self.device = device
        self._t0 = 0.0

    def start(self) -> None:
        synchronize(self.device)
        self._t0 = time.perf_counter()

    def stop(self) -> float:
        synchronize(self.device)
        return time.perf_counter() - self._t0


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_bytes(device: torch.device) -> int:
    """Peak memory: allocated by torch on a GPU; the process's peak RSS on the CPU.

    The CPU figure is a high-water mark of the whole process (``ru_maxrss``), so within
    one ``harness run`` it never decreases from one run to the next.
    """
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


def train_flops(matmul_params: int, real_tokens: int, layers: int, hidden: int, seq_tokens: int) -> float:
    """Model FLOPs of training on ``real_tokens`` tokens (forward + backward = 3 x forward).

    Forward per token: 2 x the matmul parameters (embeddings excluded: lookups), plus the
    attention scores and weighted sum, 2 x 2 x layers x hidden x the attended length.
    ``seq_tokens`` is the sum over examples of their squared real length, over
    ``real_tokens`` that gives the mean attended length per token.
    """
    attended = seq_tokens / real_tokens if real_tokens else 0.0
    forward = 2.0 * matmul_params * real_tokens + 4.0 * layers * hidden * attended * real_tokens
    return 3.0 * forward


#: dense bf16 tensor-core peak in TFLOP/s, by a substring of the device name
BF16_PEAK_TFLOPS = {
    "H200": 989.0,
    "H100 SXM": 989.0,
    "H100 80GB HBM3": 989.0,
    "H100 PCIe": 756.0,
    "H100": 989.0,
    "A100": 312.0,
    "L40S": 362.0,
    "A10G": 70.0,
    "L4": 121.0,
    "RTX 4090": 165.0,
    "V100": 125.0,  # fp16; no bf16
    "T4": 65.0,  # fp16; no bf16
}


def bf16_peak_tflops(device_name: str) -> float | None:
    for key, value in BF16_PEAK_TFLOPS.items():
        if key in device_name:
            return value
    return None


def _git_sha() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        # only a checkout of the harness itself: an installed copy inside a .venv that sits in
        # some other git repository must not report that repository's commit
        tracked = subprocess.run(
            ["git", "-C", str(here), "ls-files", "--error-unmatch", Path(__file__).name],
            capture_output=True, text=True, timeout=5, check=False,
        )
        if tracked.returncode != 0:
            return None
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
        if out.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5, check=False,
        ).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


_ENV_CACHE: dict[str, Any] = {}


def environment(device: torch.device) -> dict[str, Any]:
    """Provenance for the run record: versions, commit, device, threads."""
    import transformers

    import harness

    if "static" not in _ENV_CACHE:
        _ENV_CACHE["static"] = {
            "harness_version": harness.__version__,
            "harness_git_sha": _git_sha(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "platform": platform.platform(),
            "cpu": _cpu_name(),
            "cpu_bf16": cpu_bf16_native(),
            "cpu_count": os.cpu_count(),
            "hostname": platform.node(),
        }
    env = dict(_ENV_CACHE["static"])
    env["torch_threads"] = torch.get_num_threads()
    env["device"] = str(device)
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env["device_name"] = props.name
        env["device_memory_bytes"] = int(props.total_memory)
        env["cuda"] = torch.version.cuda
        env["cudnn"] = torch.backends.cudnn.version()
        env["gpu_driver"] = _nvidia_driver()
        env["device_count"] = torch.cuda.device_count()
    else:
        env["device_name"] = env["cpu"]
        env["cuda"] = None
    return env


def _nvidia_driver() -> str | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10, check=False,
        )
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.SubprocessError, IndexError):
        return None
