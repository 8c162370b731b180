"""Measuring honestly: device-synchronised clocks, memory, step times, the machine's load, FLOPs.

Every clock read on a GPU is preceded by ``torch.cuda.synchronize()``, so a time covers
the work queued before it, not just its launch.
"""

from __future__ import annotations

import os
import resource
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch


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

    Each run trains in a fresh process (:mod:`harness.launch.process`), so the figure is the run's own.
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


def memory_limit(device: torch.device) -> int | None:
    """The memory a run may use: a GPU's whole memory; on a CPU the machine's RAM
    (``MemTotal``) or, when lower, this process's cgroup limit (v2 ``memory.max``, v1
    ``memory.limit_in_bytes``). None where it cannot be read."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    limits = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                limits.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    for path in _cgroup_files("memory.max", "memory.limit_in_bytes"):
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            limits.append(int(text))
    return min(limits) if limits else None


def _cgroup_files(v2: str, v1: str) -> list[Path]:
    """This process's memory cgroup's file ``v2`` (cgroup v2) or ``v1`` (v1's memory controller)."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            out.append(Path("/sys/fs/cgroup") / path.lstrip("/") / v2)
        elif "memory" in controllers.split(","):
            out.append(Path("/sys/fs/cgroup/memory") / path.lstrip("/") / v1)
    return out


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
    candidates = _cgroup_files("memory.events", "memory.oom_control")
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
