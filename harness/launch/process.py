"""One launcher: every run trains in a fresh process of its own.

``harness run`` (:mod:`harness.launch.runner`) hands each run to :func:`launch`, which writes
the run's :class:`~harness.launch.spec.RunSpec` to a work directory and starts ``python -m
harness.launch.worker WORKDIR`` (an argument list, no shell), or for a data-parallel run
``python -m torch.distributed.run ... -m harness.launch.worker WORKDIR``, whose workers
each train one rank. A single-process run's process is instead forked by the fork server
(:mod:`harness.launch.forkserver`) when ``harness run`` started one: a Python that imported
torch, transformers and the loop once, so the run skips their seconds of imports, with
the same isolation (``HARNESS_FORKSERVER=0``: always ``python -m harness.launch.worker``).
The worker resolves the run again by the same function, trains it
(:func:`harness.loop.train.fit`) and writes the record; rank 0 also writes progress events
(:mod:`harness.launch.events`), which the parent replays on its progress bars, so the
parent stays the only writer of ``results.jsonl``. Why a process per run: every figure
belongs to its run (peak memory, allocator state, threads, compiled graphs start fresh),
and a run whose process dies (the kernel's OOM killer, a segfault or abort in native code,
``os._exit``) fails alone: it is recorded ``failed`` with the cause
(:mod:`harness.launch.failures`) and the suite goes on. Its output is kept in
``logs/<run_id>.log``.

Several runs at once (``harness run --jobs N``, :mod:`harness.launch.executors`): each is a
:class:`RunProcess` given its share of the machine (cores, threads, GPUs). A run's process
never outlives its ``harness run`` (``PR_SET_PDEATHSIG``, see :mod:`harness.launch.worker`),
and a record that a run finished after its ``harness run`` was killed is stored by the next
one (:func:`orphans`), so a ``kill -9`` loses no finished run and runs none twice.

``harness run --isolation none`` trains single-process runs in the ``harness run``
process instead, for debugging (a debugger, a profiler); its figures then share the process.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from harness.config.keys import Launcher
from harness.config.resolve import ResolvedRun
from harness.errors import HarnessError
from harness.launch import CPUS_ENV, EVENTS, OWNER, RANK0, RECORD, SPEC, WORKDIR_PREFIX, forkserver
from harness.launch.events import POLL_SECONDS, replay
from harness.launch.failures import process_reason
from harness.launch.spec import RunSpec
from harness.loop.env import environment
from harness.loop.measure import oom_kills
from harness.records.record import Env, RunRecord, now
from harness.records.store import hold

#: how long the run's process (or torchrun) gets to stop after SIGTERM before it is killed
STOP_GRACE_SECONDS = 60.0
WORKER = "harness.launch.worker"


# ------------------------------------------------------------------------------- launching


def torchrun_args(launcher: Launcher, run_id: str) -> list[str]:
    """torchrun's options for one run (one rendezvous per run, so each gets a fresh group)."""
    args = ["--nproc-per-node", str(launcher.nproc), "--max-restarts", "0"]
    if launcher.nnodes == 1 and not launcher.rdzv_endpoint:
        return ["--standalone", *args]  # a local rendezvous on a free port
    rdzv_id = f"{launcher.rdzv_id}-{run_id}" if launcher.rdzv_id else f"harness-{run_id}"
    return [
        "--nnodes", str(launcher.nnodes), *args,
        "--rdzv-backend", launcher.rdzv_backend, "--rdzv-endpoint", launcher.rdzv_endpoint or "localhost:29400",
        "--rdzv-id", rdzv_id,
    ]


def local_plugins(run: ResolvedRun) -> list[str]:
    """The local plugin modules (suite ``plugins:`` / ``--plugin``) the run's plugins come
    from, as the workers must load them: a module name, or the path of a ``.py`` file."""
    out: list[str] = []
    for entry in (run.dataset, run.strategy, run.head):
        if not entry.source.startswith("local module "):
            continue
        where = entry.plugin.removeprefix("local:")
        # a module named in the suite is imported by name again; a file by its path
        name = next(
            (n for n, m in list(sys.modules.items())
             if getattr(m, "__file__", None) == where and not n.startswith("harness_local_")),
            None,
        )
        spec = name or str(Path(where).resolve())
        if spec not in out:
            out.append(spec)
    return out


class RunProcess:
    """One run training in a fresh process of its own (torchrun's, when data-parallel).

    :meth:`start` starts it, :meth:`poll` forwards its progress and says when it ended,
    :meth:`result` turns its end into the run's record; :func:`launch` does the three in
    turn, :mod:`harness.launch.executors` keeps several going at once. ``threads`` (torch
    threads per rank), ``cpus`` (cores to pin it to) and ``gpus`` (``CUDA_VISIBLE_DEVICES``)
    are its share of the machine; None leaves each as it is. ``workdirs``: where its work
    directory goes (default: ``out_dir``). ``spec``: what its spec carries besides the run
    (``suite``, ``parallel``: what an adopted record is given). While it runs, this process
    holds a lock on ``<workdir>/owner``: a work directory whose lock is free belongs to a
    ``harness run`` that died, and :func:`orphans` hands its record to the next one."""

    def __init__(
        self, run: ResolvedRun, out_dir: Path, progress: Any, *, threads: int | None = None,
        cpus: Sequence[int] | None = None, gpus: Sequence[int] | None = None, spec: dict[str, Any] | None = None,
        workdirs: Path | None = None,
    ):
        self.run, self.out_dir, self.progress = run, out_dir, progress
        self.workdirs = workdirs or out_dir  # where its work directory goes (a SLURM job: its own folder)
        self.threads, self.cpus, self.gpus = threads, cpus, gpus
        self.spec = RunSpec.of(run, local_plugins(run), results_dir=str(Path(out_dir).absolute()), **(spec or {}))
        self.single = run.config.world_size == 1
        self.workdir: Path | None = None
        self.proc: Child | None = None
        self.log_file: Any = None
        self._owner: Any = None

    def start(self) -> None:
        run, launcher = self.run, self.run.config.launcher
        self.spec.launched_at = time.time()  # the record's start_seconds runs from here
        self.started = now()
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{WORKDIR_PREFIX}{run.run_id}-", dir=self.workdirs))
        self._owner = hold(self.workdir / OWNER)
        self.spec.write(self.workdir / SPEC)
        worker = ["-m", WORKER, str(self.workdir)]
        if self.single:
            cmd = [sys.executable, *worker]
        else:  # torchrun dies with this process too (see harness.launch.worker.guard)
            cmd = [sys.executable, "-m", WORKER, "--guard", str(os.getpid()), sys.executable,
                   "-m", "torch.distributed.run", *torchrun_args(launcher, run.run_id), *worker]
        self.oom_before = oom_kills()
        self.log_file = open(self.workdir / "run.log", "wb")
        self.proc = Child(self._spawn(cmd), self.workdir / EVENTS, self.progress, launcher.timeout)

    def _spawn(self, cmd: list[str]) -> Any:
        """The run's process, its output to ``run.log``: forked by the fork server when one
        serves this ``harness run`` and the run is single-process (:mod:`harness.launch.forkserver`),
        else ``cmd`` started (a :class:`subprocess.Popen`; the forked one answers alike)."""
        assert self.workdir is not None
        env = self._env()
        forked = forkserver.fork(self.workdir, env, self.workdir / "run.log") if self.single else None
        if forked is not None:
            return forked
        # its own session: Ctrl-C reaches the parent, which stops the process (torchrun its workers)
        return subprocess.Popen(cmd, stdout=self.log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def _env(self) -> dict[str, str]:
        env = dict(os.environ, PYTHONUNBUFFERED="1", HARNESS_PARENT_PID=str(os.getpid()))
        if self.threads is not None:
            env["OMP_NUM_THREADS"] = str(self.threads)
        elif not self.single:  # torchrun would set 1 thread per worker; give each its share of the cores
            env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // self.run.config.launcher.nproc)))
        if self.cpus is not None:
            env[CPUS_ENV] = ",".join(map(str, self.cpus))  # the worker pins itself before it imports torch
        if self.gpus is not None:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, self.gpus))
        return env

    def poll(self) -> int | None:
        """Forward its progress; its exit code once it ended (stopped at ``launcher.timeout``)."""
        assert self.proc is not None
        return self.proc.poll()

    def result(self, code: int) -> RunRecord | None:
        """The record of the run that ended with ``code``: the worker's, or a ``failed`` one
        naming how the process ended. None on a node of a multi-node run that does not hold
        rank 0 (that node records it). The work directory is removed."""
        assert self.proc is not None and self.workdir is not None
        launcher, workdir = self.run.config.launcher, self.workdir
        self.log_file.close()
        try:
            if (workdir / RECORD).is_file() and code == 0:
                return RunRecord.model_validate_json((workdir / RECORD).read_text(encoding="utf-8"))
            if launcher.nnodes > 1 and not (workdir / RANK0).exists():
                return None
            if self.proc.timed_out:
                who = "the run's process was" if self.single else "workers were"
                reason = f"{who} still running after {launcher.timeout:g} s (launcher.timeout); stopped"
            else:
                log_text = (workdir / "run.log").read_text(encoding="utf-8", errors="replace")
                usage, reason = process_reason(
                    workdir, log_text, code, single=self.single, oom_killed=_rose(self.oom_before)
                )
                if usage:
                    raise HarnessError(reason)
            kept = self.out_dir / "logs" / f"{self.run.run_id}.log"
            kept.parent.mkdir(exist_ok=True)
            shutil.copyfile(workdir / "run.log", kept)
            return RunRecord.failed(self.run, reason, self.started, here(self.run), log=str(kept))
        finally:
            self.discard()

    def discard(self) -> None:
        """Remove the work directory (the run abandoned, or its record taken)."""
        if self.workdir is not None:  # (an interrupt may have come in the middle of start())
            if self.log_file is not None and not self.log_file.closed:
                self.log_file.close()
            shutil.rmtree(self.workdir, ignore_errors=True)
            if self._owner is not None:
                self._owner.close()
            self.workdir = None


def here(run: ResolvedRun) -> Env:
    """The environment of this process, for the record of a run that did not train (``failed``)."""
    return Env(**environment(torch.device(run.config.device)))


def launch(run: ResolvedRun, out_dir: Path, progress: Any, **share: Any) -> RunRecord | None:
    """Train ``run`` in a fresh process (through torchrun when it is data-parallel) and
    return its record (see :class:`RunProcess`); interrupted, the process is stopped."""
    process = RunProcess(run, out_dir, progress, **share)
    try:
        process.start()
        while (code := process.poll()) is None:
            time.sleep(POLL_SECONDS)
    except BaseException:
        stop_all([process])
        process.discard()
        raise
    return process.result(code)


def stop_all(processes: Sequence[RunProcess]) -> None:
    """Stop the runs' processes at once: SIGTERM to each (torchrun passes it to its workers),
    SIGKILL to those still running :data:`STOP_GRACE_SECONDS` later."""
    running = [p.proc.proc for p in processes if p.proc is not None and p.proc.proc.poll() is None]
    for proc in running:
        proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for proc in running:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()  # the workers die with it (PR_SET_PDEATHSIG, see harness.launch.worker)
            proc.wait()


def orphans(out_dir: Path) -> list[tuple[RunSpec, RunRecord]]:
    """(spec, record) of each run that finished in a work directory of a ``harness run``
    that then died (``kill -9`` between the record and the store), that directory removed;
    the work directories of dead runs that left no record are removed too. A directory whose
    owner still runs (its lock held), or that has no owner file yet, is left alone."""
    found = []
    for workdir in sorted(Path(out_dir).glob(f"{WORKDIR_PREFIX}*")):
        if not (workdir / OWNER).is_file():  # being created, or not a work directory of this harness
            continue
        owner = hold(workdir / OWNER, wait=False)
        if owner is None:  # its harness run is alive
            continue
        with owner:
            try:
                if (workdir / RECORD).is_file():
                    found.append((RunSpec.read(workdir / SPEC),
                                  RunRecord.model_validate_json((workdir / RECORD).read_text(encoding="utf-8"))))
            except (OSError, ValueError):
                pass
            shutil.rmtree(workdir, ignore_errors=True)
    return found


def _rose(before: int | None) -> bool:
    after = oom_kills()
    return before is not None and after is not None and after > before


class Child:
    """A started run process (or torchrun): its progress events forwarded, stopped at its
    deadline (SIGTERM, then SIGKILL after the grace period) without blocking the caller.
    ``proc``: a :class:`subprocess.Popen`, or a :class:`~harness.launch.forkserver.Forked`."""

    def __init__(self, proc: Any, events: Path, progress: Any, timeout: float | None):
        self.proc = proc
        self.deadline = time.monotonic() + timeout if timeout else None
        self.events, self.progress, self.offset = events, progress, 0
        self.timed_out, self.kill_at = False, None

    def poll(self) -> int | None:
        code = self.proc.poll()
        self.offset = replay(self.events, self.offset, self.progress)
        if code is not None:
            return code
        now = time.monotonic()
        if self.kill_at is not None and now > self.kill_at:
            self.proc.kill()  # the workers die with it (PR_SET_PDEATHSIG, see harness.launch.worker)
            return self.proc.wait()
        if self.deadline is not None and now > self.deadline and not self.timed_out:
            self.timed_out, self.kill_at = True, now + STOP_GRACE_SECONDS
            self.proc.send_signal(signal.SIGTERM)
        return None
