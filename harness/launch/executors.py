"""Several runs at once on this machine: ``harness run --jobs N``.

:func:`run_here` keeps up to N runs going, each in a fresh process of its own
(:class:`harness.launch.process.RunProcess`) with its own share of the machine, from
:class:`Devices`:

- a run on ``cuda`` gets ``launcher.nproc`` GPUs of its own through
  ``CUDA_VISIBLE_DEVICES`` (one run per GPU; a run waits for free GPUs), a run on
  ``cuda:N`` waits for GPU N;
- on a CPU the cores are split between the N jobs: each run is pinned to its own
  ``cores // N`` cores (``os.sched_setaffinity``) and trains with as many torch threads
  (``OMP_NUM_THREADS``; per rank under data parallelism).

With ``--jobs 1`` nothing is handed out: the run's process sees the machine as before.
Each record says how it ran (``parallel``: jobs, threads, cores, GPUs, and ``beside``,
the most other runs that trained at the same time), because runs that share cores, caches
and a memory bus slow each other down. Ctrl-C or SIGTERM stops every running process
(:func:`harness.launch.process.stop_all`); a finished run is stored as soon as it ends.
"""

from __future__ import annotations

import os
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from harness.config.resolve import ResolvedRun
from harness.errors import HarnessError
from harness.launch.events import POLL_SECONDS
from harness.launch.process import RunProcess, stop_all
from harness.records.record import Parallel, RunRecord

#: the record's ``parallel.executor`` for runs that ``harness run`` starts itself
HERE = "here"


def machine_cores() -> list[int]:
    """The cores this process may run on (its affinity), or all of them."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))  # pragma: no cover - not Linux


def visible_gpus() -> list[int]:
    """The GPUs runs may be handed, as ``CUDA_VISIBLE_DEVICES`` numbers them for a child."""
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return list(range(count))


@dataclass
class Share:
    """What one run is given: its cores (and threads) or its GPUs. None: left as it is."""

    cpus: list[int] | None = None
    threads: int | None = None
    gpus: list[int] | None = None  # handed to it as CUDA_VISIBLE_DEVICES
    slot: int | None = None  # the CPU slot it holds
    held: list[int] = field(default_factory=list)  # the GPUs it holds (its own, or the one it named)

    def parallel(self, jobs: int, beside: int | None = None, record: RunRecord | None = None) -> Parallel:
        """The record's ``parallel``; ``threads`` from the run's own process when it was not set."""
        threads = self.threads
        if threads is None and record is not None and record.status != "failed":
            threads = record.env.torch_threads
        return Parallel(executor=HERE, jobs=jobs, beside=beside, threads=threads, cpus=self.cpus, gpus=self.gpus)


class Devices:
    """The machine split between ``jobs`` runs at once (see the module's docstring)."""

    def __init__(self, jobs: int, cores: Sequence[int] | None = None, gpus: Sequence[int] | None = None):
        self.jobs = jobs
        cores = list(machine_cores() if cores is None else cores)
        per = max(1, len(cores) // jobs)
        # more jobs than cores: slots share cores, one thread each
        self.slots = [[cores[(i * per + k) % len(cores)] for k in range(per)] for i in range(jobs)]
        self.free_slots = list(range(jobs))
        # the GPUs, looked up at the first run that needs one
        self.all_gpus: list[int] | None = None if gpus is None else list(gpus)
        self.free_gpus: list[int] = list(self.all_gpus or [])

    def take(self, run: ResolvedRun) -> Share | None:
        """The share ``run`` gets now, or None while what it needs is taken."""
        if self.jobs == 1:
            return Share()
        device, nproc = run.config.device, run.config.launcher.nproc
        if device.startswith("cuda"):
            return self._take_gpus(run, device, nproc)
        if not self.free_slots:
            return None
        slot = self.free_slots.pop(0)
        cpus = self.slots[slot]
        return Share(cpus=cpus, threads=max(1, len(cpus) // nproc), slot=slot)

    def _take_gpus(self, run: ResolvedRun, device: str, nproc: int) -> Share | None:
        if self.all_gpus is None:
            self.all_gpus = visible_gpus()
            self.free_gpus = list(self.all_gpus)
        named = int(device.split(":")[1]) if ":" in device else None
        if (named is not None and named not in self.all_gpus) or nproc > len(self.all_gpus):
            raise HarnessError(
                f"{run.where('device')}: the run needs {device} x{nproc} and this machine has "
                f"{len(self.all_gpus)} GPU(s)"
            )
        if named is not None:  # it named its GPU: it waits for that one, and sees the GPUs as numbered
            if named not in self.free_gpus:
                return None
            self.free_gpus.remove(named)
            return Share(held=[named])
        if len(self.free_gpus) < nproc:
            return None
        gpus, self.free_gpus = self.free_gpus[:nproc], self.free_gpus[nproc:]
        return Share(gpus=gpus, held=gpus)

    def give_back(self, share: Share) -> None:
        if share.slot is not None:
            self.free_slots = sorted([*self.free_slots, share.slot])
        if share.held:
            self.free_gpus = sorted([*self.free_gpus, *share.held])


@dataclass
class _Active:
    run: ResolvedRun
    process: RunProcess
    share: Share
    handle: Any
    beside: int = 0


def run_here(
    runs: Sequence[ResolvedRun], out_dir: Path, progress: Any, keep: Callable[[RunRecord], None], *,
    jobs: int = 1, label: Callable[[ResolvedRun], str] = str,
) -> None:
    """Train ``runs`` in their own processes, up to ``jobs`` at once, in order; hand each
    record to ``keep`` as its run ends, with ``parallel`` filled in (also written with the
    run's spec: what its record gets if this process dies before storing it)."""
    devices = Devices(jobs)
    pending, active = deque(runs), []
    try:
        while pending or active:
            while pending and len(active) < jobs:
                share = devices.take(pending[0])
                if share is None:  # its GPUs are busy: the order is kept, it waits
                    break
                run = pending.popleft()
                handle = progress.start_run(label(run))
                process = RunProcess(run, out_dir, handle, threads=share.threads, cpus=share.cpus, gpus=share.gpus,
                                     spec={"parallel": share.parallel(jobs)})
                # active before it starts: an interrupt in the middle of start() still stops and removes it
                active.append(_Active(run, process, share, handle))
                process.start()
                for a in active:  # the most runs that trained beside each, while it ran
                    a.beside = max(a.beside, len(active) - 1)
            ended = [(a, code) for a in active if (code := a.process.poll()) is not None]
            for a, code in ended:
                active.remove(a)
                devices.give_back(a.share)
                record = a.process.result(code)
                if record is not None:  # None: a node of a multi-node run without rank 0
                    record.parallel = a.share.parallel(jobs, a.beside, record)
                    keep(record)
                progress.end_run(a.handle, record)
            if active:
                time.sleep(POLL_SECONDS)
    except BaseException:
        stop_all([a.process for a in active])
        for a in active:
            a.process.discard()
        raise
