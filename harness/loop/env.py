"""Where a run trains: its device and precision, chosen by the hardware, and its provenance.

:func:`choose_precision` resolves ``precision: auto`` by what the device computes natively
(bf16 on a GPU with bf16 and on a CPU with AVX512-BF16, AMX or Arm BF16; else fp32), with
the reason the record keeps; :func:`environment` is the record's ``env``.
"""

from __future__ import annotations

import os
import platform
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple, TypedDict

import torch

from harness import __version__


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


#: CPU flags that mean bf16 matmuls in hardware: x86 AVX512-BF16 and AMX-BF16, Arm BF16
#: (``/proc/cpuinfo``'s ``flags`` on x86, ``Features`` on Arm)
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as ``/proc/cpuinfo`` lists them; empty where it cannot be read."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def cpu_bf16_flags() -> list[str]:
    """The flags of :data:`BF16_FLAGS` this CPU has: where bf16 is computed in hardware.

    There ``precision: bf16`` (autocast) trains MiniLM about 1.6-1.8x faster than fp32
    (two AMD EPYC Zen 4 cores); without them bf16 is emulated, about 4x slower than fp32
    end to end on Zen 3 (AVX2 only)."""
    flags = cpu_flags()
    return [f for f in BF16_FLAGS if f in flags]


def cpu_bf16_native() -> bool:
    """Whether the CPU computes bf16 matmuls in hardware (:func:`cpu_bf16_flags`)."""
    return bool(cpu_bf16_flags())


class PrecisionChoice(NamedTuple):
    """The precision a run trains in, and why (the record's ``env.precision_reason``)."""

    precision: str
    reason: str


def choose_precision(precision: str, device: str) -> PrecisionChoice:
    """``auto`` by the hardware: bf16 where it is computed natively (a GPU with bf16; a CPU
    with AVX512-BF16, AMX or Arm BF16), else fp32. Any other precision is taken as set; bf16
    set for a CPU without native bf16 says so (preflight warns: it is emulated and slow)."""
    cpu = device == "cpu"
    if precision != "auto":
        emulated = cpu and precision == "bf16" and not cpu_bf16_native()
        return PrecisionChoice(precision, f"set: {precision}" + (" (emulated: a CPU without native bf16)" if emulated else ""))
    if device.startswith("cuda") and torch.cuda.is_available():
        name = torch.cuda.get_device_name(torch.device(device))
        if torch.cuda.is_bf16_supported():
            return PrecisionChoice("bf16", f"auto: GPU with bf16 ({name})")
        return PrecisionChoice("fp32", f"auto: GPU without bf16 ({name})")
    if cpu:
        flags = cpu_bf16_flags()
        if flags:
            return PrecisionChoice("bf16", f"auto: CPU with native bf16 ({', '.join(flags)})")
        return PrecisionChoice("fp32", "auto: CPU without native bf16")
    return PrecisionChoice("fp32", f"auto: fp32 on {device}")


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


_ENV_CACHE: dict[str, Environment] = {}


class Environment(TypedDict, total=False):
    """What :func:`environment` reads: the record's ``env`` (:class:`harness.records.record.Env`)."""

    harness_version: str
    harness_git_sha: str | None
    python: str
    torch: str
    transformers: str
    platform: str
    cpu: str
    cpu_bf16: bool
    cpu_count: int | None
    hostname: str
    torch_threads: int
    device: str
    device_name: str
    cuda: str | None
    device_memory_bytes: int
    cudnn: int | None
    gpu_driver: str | None
    device_count: int


def environment(device: torch.device) -> Environment:
    """Provenance for the run record: versions, commit, device, threads."""
    import transformers

    if "static" not in _ENV_CACHE:
        _ENV_CACHE["static"] = {
            "harness_version": __version__,
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
    env = Environment(**_ENV_CACHE["static"])
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


#: the CPU flags that change what a run costs: vector widths, and bf16 / AMX in hardware
PERFORMANCE_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx512_fp16",
                     "amx_bf16", "amx_tile", "amx_int8", "asimd", "sve", "sve2", "bf16", "i8mm")


def cpu_details() -> dict[str, object]:
    """The CPU of ``environment.json``: its model, how many cores, and which of
    :data:`PERFORMANCE_FLAGS` it has (``/proc/cpuinfo``)."""
    flags = cpu_flags()
    return {"model": _cpu_name(), "count": os.cpu_count(), "flags": [f for f in PERFORMANCE_FLAGS if f in flags]}


def torch_build() -> dict[str, object]:
    """The torch of ``environment.json``: its version, and what it was built for (CUDA, ROCm or CPU)."""
    build = "cuda" if torch.version.cuda else "rocm" if getattr(torch.version, "hip", None) else "cpu"
    return {"version": torch.__version__, "build": build, "cuda": torch.version.cuda,
            "hip": getattr(torch.version, "hip", None), "git": getattr(torch.version, "git_version", None),
            "debug": bool(getattr(torch.version, "debug", False)),
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            "mkldnn": torch.backends.mkldnn.is_available(), "threads": torch.get_num_threads()}


def gpu_details() -> list[dict[str, object]] | None:
    """Each GPU's name, clocks, power limit and MIG mode through NVML (``nvidia-ml-py``);
    None where it is not installed or no NVIDIA driver answers."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - NVMLError_*: no driver, no GPU
        return None
    try:
        out = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            out.append({
                "name": _nvml(pynvml.nvmlDeviceGetName, handle),
                "sm_clock_mhz": _nvml(pynvml.nvmlDeviceGetClockInfo, handle, pynvml.NVML_CLOCK_SM),
                "max_sm_clock_mhz": _nvml(pynvml.nvmlDeviceGetMaxClockInfo, handle, pynvml.NVML_CLOCK_SM),
                "memory_clock_mhz": _nvml(pynvml.nvmlDeviceGetClockInfo, handle, pynvml.NVML_CLOCK_MEM),
                "power_limit_w": (lambda mw: None if mw is None else mw / 1000)(
                    _nvml(pynvml.nvmlDeviceGetPowerManagementLimit, handle)),
                "mig_mode": (lambda m: None if m is None else bool(m[0]))(_nvml(pynvml.nvmlDeviceGetMigMode, handle)),
                "driver": _nvml(pynvml.nvmlSystemGetDriverVersion),
            })
        return out
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:  # noqa: BLE001 - nothing to do about a failed shutdown
            pass


def _nvml(read, *args):
    """One NVML reading, None where the GPU does not report it (NVMLError_NotSupported ...)."""
    try:
        value = read(*args)
    except Exception:  # noqa: BLE001 - NVMLError_*
        return None
    return value.decode() if isinstance(value, bytes) else value
