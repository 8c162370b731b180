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
import threading
import time
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple

import torch


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


# ------------------------------------------------------------------------------ memory


def _status_kib(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak: torch's allocator statistics on a GPU; on Linux the process's
    resident-set high-water mark (``VmHWM``, reset through ``/proc/self/clear_refs``)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:  # not Linux, or not allowed: the peak stays the process's since its start
        pass


def peak_memory(device: torch.device) -> dict[str, Any]:
    """The peak since :func:`reset_peak_memory`, and which figure it is.

    - GPU: ``peak_memory_bytes`` is ``torch.cuda.max_memory_allocated`` (tensors),
      ``peak_memory_reserved_bytes`` ``max_memory_reserved`` (what the caching allocator
      held); ``peak_memory_kind`` ``"cuda_allocated"``.
    - CPU: ``peak_memory_bytes`` is this process's peak resident set (``VmHWM``, bytes),
      ``peak_memory_kind`` ``"rss"``; where ``VmHWM`` cannot be read, ``ru_maxrss`` (the
      peak since the process started), ``peak_memory_kind`` ``"rss_since_start"``.

    Each run trains in a fresh process (:mod:`harness.launch`), so the figure is the run's own.
    """
    if device.type == "cuda":
        return {
            "peak_memory_bytes": int(torch.cuda.max_memory_allocated(device)),
            "peak_memory_reserved_bytes": int(torch.cuda.max_memory_reserved(device)),
            "peak_memory_kind": "cuda_allocated",
        }
    hwm = _status_kib("VmHWM")
    if hwm is not None:
        return {"peak_memory_bytes": hwm * 1024, "peak_memory_kind": "rss"}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"peak_memory_bytes": int(rss if sys.platform == "darwin" else rss * 1024), "peak_memory_kind": "rss_since_start"}


class DeviceMemorySampler:
    """The device-level peak of a GPU's used memory (every process's, the CUDA context
    included) from NVML, sampled every ``interval`` seconds by a thread while it runs.
    Needs ``nvidia-ml-py`` (the ``nvml`` extra); without it, or on a CPU, it measures
    nothing and :meth:`stop` returns None."""

    def __init__(self, device: torch.device, interval: float = 0.05):
        self.device, self.interval = device, interval
        self.peak: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._handle = _nvml_handle(device)

    def start(self) -> None:
        if self._handle is None:
            return
        self._stop.clear()
        self.peak = 0
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        import pynvml

        while True:
            self.peak = max(self.peak or 0, int(pynvml.nvmlDeviceGetMemoryInfo(self._handle).used))
            if self._stop.wait(self.interval):
                return

    def stop(self) -> int | None:
        if self._thread is None:
            return None
        self._stop.set()
        self._thread.join()
        self._thread = None
        return self.peak


def _nvml_handle(device: torch.device) -> Any:
    if device.type != "cuda":
        return None
    try:
        import pynvml

        pynvml.nvmlInit()
        index = device.index if device.index is not None else torch.cuda.current_device()
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        if visible:  # NVML counts every GPU of the machine, torch only the visible ones
            index = int(visible.split(",")[index])
        return pynvml.nvmlDeviceGetHandleByIndex(index)
    except Exception:  # noqa: BLE001 - not installed, no driver, a UUID in CUDA_VISIBLE_DEVICES
        return None


def gpu_other_processes(device: torch.device, ours: set[int] | None = None) -> int | None:
    """How many processes other than ``ours`` (default: this one) hold a context on the
    run's GPU, from NVML (the ``nvml`` extra); None on a CPU or without NVML."""
    handle = _nvml_handle(device)
    if handle is None:
        return None
    import pynvml

    try:
        running = pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
    except Exception:  # noqa: BLE001 - a driver that does not report processes
        return None
    ours = ours if ours is not None else {os.getpid()}
    return len({p.pid for p in running} - ours)


def oom_kills() -> int | None:
    """How many processes the kernel's OOM killer has killed in this process's memory cgroup
    (cgroup v2 ``memory.events``, v1 ``memory.oom_control``); None where it cannot be read.
    A run whose process died of SIGKILL while this count rose was killed for memory."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    candidates = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            candidates.append(Path("/sys/fs/cgroup") / path.lstrip("/") / "memory.events")
        elif "memory" in controllers.split(","):
            candidates.append(Path("/sys/fs/cgroup/memory") / path.lstrip("/") / "memory.oom_control")
    for path in candidates:
        try:
            for line in path.read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            continue
    return None


# -------------------------------------------------------------------- step times, load


class StepTimer:
    """The time of every training step, with no host sync per step: on a GPU a CUDA event
    is recorded after each step and the events are read once, at the end of the epoch;
    on a CPU (where every op has finished when it returns) ``time.perf_counter``."""

    def __init__(self, device: torch.device, steps: int):
        self.cuda = device.type == "cuda"
        self.marks: list[Any] = []
        if self.cuda:
            self.events = [torch.cuda.Event(enable_timing=True) for _ in range(steps + 1)]

    def mark(self) -> None:
        """At the start of the epoch, then after each step."""
        if self.cuda:
            event = self.events[len(self.marks)]
            event.record()
            self.marks.append(event)
        else:
            self.marks.append(time.perf_counter())

    def seconds(self) -> list[float]:
        """Each step's seconds (the device synchronised first, once)."""
        if self.cuda:
            self.marks[-1].synchronize()
            return [a.elapsed_time(b) / 1000.0 for a, b in zip(self.marks, self.marks[1:])]
        return [b - a for a, b in zip(self.marks, self.marks[1:])]


def spread(seconds: list[float]) -> dict[str, float] | None:
    """p50 / p90 / p99 / max / mean of step times (linear interpolation between ranks)."""
    if not seconds:
        return None
    import numpy as np

    values = np.asarray(seconds, dtype=np.float64)
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "max": float(values.max()),
            "mean": float(values.mean())}


#: other processes' CPU use, in cores on average over the training epochs, from which a
#: run counts as measured on a busy machine
BUSY_CORES = 0.25


def _machine_busy_seconds() -> float | None:
    """CPU seconds every process of the machine has used since boot (``/proc/stat``)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU seconds this process has used, all its threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class LoadProbe:
    """How much CPU other processes took while a run trained: the machine's CPU time
    (``/proc/stat``) over an interval, less this process's own (summed over the ranks of a
    data-parallel run by the caller). None where ``/proc/stat`` cannot be read."""

    def start(self) -> None:
        self.machine0, self.own0, self.t0 = _machine_busy_seconds(), own_cpu_seconds(), time.monotonic()

    def other_cores(self, at_least: float = 0.5) -> tuple[float, float] | None:
        """(other processes' CPU use since :meth:`start` in cores on average, the seconds it
        covers), after waiting until ``at_least`` seconds have passed (the kernel counts CPU
        time in 10 ms ticks); None where ``/proc/stat`` cannot be read."""
        time.sleep(max(0.0, at_least - (time.monotonic() - self.t0)))
        machine, own = self.stop()
        seconds = time.monotonic() - self.t0
        if machine is None or seconds <= 0:
            return None
        return max(0.0, machine - own) / seconds, seconds

    def stop(self) -> tuple[float | None, float]:
        """(the machine's CPU seconds, this process's) since :meth:`start`."""
        machine = _machine_busy_seconds()
        own = own_cpu_seconds() - self.own0
        if machine is None or self.machine0 is None:
            return None, own
        return machine - self.machine0, own


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


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
