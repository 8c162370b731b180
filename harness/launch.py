"""One launcher: every run trains in a fresh process of its own.

``harness run`` (:mod:`harness.runner`) hands each run to :func:`launch`, which writes the
resolved run to a work directory and starts ``python -m harness.worker WORKDIR`` (an
argument list, no shell), or for a data-parallel run ``python -m torch.distributed.run ...
-m harness.worker WORKDIR``, whose workers each train one rank. The worker resolves the
run again by the same function (:func:`harness.suite.resolve_run`), trains it
(:func:`harness.train.fit`) and writes the record; rank 0 also writes progress events,
which the parent replays on its progress bars, so the parent stays the only writer of
``results.jsonl``. Why a process per run: every figure belongs to its run (peak memory,
allocator state, threads, compiled graphs start fresh), and a run whose process dies (the
kernel's OOM killer, a segfault or abort in native code, ``os._exit``) fails alone: it is
recorded ``failed`` with the cause (the signal by name, the exit code, the OOM killer) and
the suite goes on. Its output is kept in ``logs/<run_id>.log``.

Several runs at once (``harness run --jobs N``, :mod:`harness.executors`): each is a
:class:`RunProcess` given its share of the machine (cores, threads, GPUs). A run's process
never outlives its ``harness run`` (``PR_SET_PDEATHSIG``, see :mod:`harness.worker`), and a
record that a run finished after its ``harness run`` was killed is stored by the next one
(:func:`orphans`), so a ``kill -9`` loses no finished run and runs none twice.

``harness run --isolation none`` trains single-process runs in the ``harness run``
process instead, for debugging (a debugger, a profiler); its figures then share the process.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from harness.errors import HarnessError
from harness.measure import oom_kills

if TYPE_CHECKING:
    from harness.config import Launcher
    from harness.suite import ResolvedRun

SPEC, RECORD, EVENTS, RANK0, OWNER = "spec.json", "record.json", "events.jsonl", "rank0", "owner"
#: a run's work directory in the output directory: ``<out>/.launch-<run_id>-<random>``
WORKDIR_PREFIX = ".launch-"
#: the cores a worker pins itself to (``0,1``), set by :class:`RunProcess`
CPUS_ENV = "HARNESS_CPUS"
ERROR_GLOB = "error-rank*.json"
#: how often the parent looks at the run's process (progress events, exit, timeout)
POLL_SECONDS = 0.2
#: how long the run's process (or torchrun) gets to stop after SIGTERM before it is killed
STOP_GRACE_SECONDS = 60.0


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


def run_spec(run: ResolvedRun) -> dict[str, Any]:
    """What crosses to the process that trains ``run``: the resolved config and the folder it
    was resolved against (the worker resolves it again the same way, :func:`harness.worker.rebuild_run`,
    and gets the same run), the local plugin modules, this process's import path (a plugin
    found here, say on a path a conftest added, is found there) and why the run has its precision."""
    return {"run_id": run.run_id, "config": run.record_config(), "base_dir": str(run.base_dir),
            "plugins": local_plugins(run), "sys_path": sys.path, "precision_reason": run.precision_reason}


class RunProcess:
    """One run training in a fresh process of its own (torchrun's, when data-parallel).

    :meth:`start` starts it, :meth:`poll` forwards its progress and says when it ended,
    :meth:`result` turns its end into the run's record; :func:`launch` does the three in
    turn, :mod:`harness.executors` keeps several going at once. ``threads`` (torch threads
    per rank), ``cpus`` (cores to pin it to) and ``gpus`` (``CUDA_VISIBLE_DEVICES``) are its
    share of the machine; None leaves each as it is. ``workdirs``: where its work directory
    goes (default: ``out_dir``). While it runs, this process holds a
    lock on ``<workdir>/owner``: a work directory whose lock is free belongs to a
    ``harness run`` that died, and :func:`orphans` hands its record to the next one."""

    def __init__(
        self, run: ResolvedRun, out_dir: Path, progress: Any, *, threads: int | None = None,
        cpus: Sequence[int] | None = None, gpus: Sequence[int] | None = None, extra: dict[str, Any] | None = None,
        workdirs: Path | None = None,
    ):
        self.run, self.out_dir, self.progress = run, out_dir, progress
        self.workdirs = workdirs or out_dir  # where its work directory goes (a SLURM job: its own folder)
        self.threads, self.cpus, self.gpus = threads, cpus, gpus
        self.extra = extra or {}  # kept in the spec: what an adopted record is given (suite, parallel)
        self.single = run.config.world_size == 1
        self.workdir: Path | None = None
        self.proc: _Process | None = None
        self.log_file: Any = None
        self._owner: Any = None

    def start(self) -> None:
        from harness.record import now

        run, launcher = self.run, self.run.config.launcher
        self.started = now()
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{WORKDIR_PREFIX}{run.run_id}-", dir=self.workdirs))
        self._owner = _hold(self.workdir / OWNER)
        (self.workdir / SPEC).write_text(json.dumps(run_spec(run) | self.extra), encoding="utf-8")
        worker = ["-m", "harness.worker", str(self.workdir)]
        if self.single:
            cmd = [sys.executable, *worker]
        else:  # torchrun dies with this process too (see harness.worker.guard)
            cmd = [sys.executable, "-m", "harness.worker", "--guard", str(os.getpid()), sys.executable,
                   "-m", "torch.distributed.run", *torchrun_args(launcher, run.run_id), *worker]
        self.oom_before = oom_kills()
        self.log_file = open(self.workdir / "run.log", "wb")
        self.proc = _Process(cmd, self._env(), self.log_file, self.workdir / EVENTS, self.progress, launcher.timeout)

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

    def result(self, code: int) -> dict[str, Any] | None:
        """The record of the run that ended with ``code``: the worker's, or a ``failed`` one
        naming how the process ended. None on a node of a multi-node run that does not hold
        rank 0 (that node records it). The work directory is removed."""
        from harness.record import RunRecord

        assert self.proc is not None and self.workdir is not None
        launcher, workdir = self.run.config.launcher, self.workdir
        self.log_file.close()
        try:
            if (workdir / RECORD).is_file() and code == 0:
                return json.loads((workdir / RECORD).read_text(encoding="utf-8"))
            if launcher.nnodes > 1 and not (workdir / RANK0).exists():
                return None
            if self.proc.timed_out:
                who = "the run's process was" if self.single else "workers were"
                reason = f"{who} still running after {launcher.timeout:g} s (launcher.timeout); stopped"
            else:
                log_text = (workdir / "run.log").read_text(encoding="utf-8", errors="replace")
                usage, reason = failure_reason(
                    workdir, log_text, code, single=self.single, oom_killed=_rose(self.oom_before)
                )
                if usage:
                    raise HarnessError(reason)
            kept = self.out_dir / "logs" / f"{self.run.run_id}.log"
            kept.parent.mkdir(exist_ok=True)
            shutil.copyfile(workdir / "run.log", kept)
            return RunRecord.failed(self.run, reason, self.started, log=str(kept)).to_dict()
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


def launch(run: ResolvedRun, out_dir: Path, progress: Any, **share: Any) -> dict[str, Any] | None:
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
    _stop_all([p.proc.proc for p in processes if p.proc is not None])


def _hold(path: Path) -> Any:
    """An open file holding an exclusive lock on ``path``: released when this process dies."""
    f = open(path, "a")
    try:
        import fcntl

        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
    except ImportError:  # pragma: no cover - not POSIX
        pass
    return f


def orphans(out_dir: Path) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(spec, record) of each run that finished in a work directory of a ``harness run``
    that then died (``kill -9`` between the record and the store), that directory removed;
    the work directories of dead runs that left no record are removed too. A directory whose
    owner still runs (its lock held), or that has no owner file yet, is left alone."""
    found = []
    for workdir in sorted(Path(out_dir).glob(f"{WORKDIR_PREFIX}*")):
        try:
            owner = open(workdir / OWNER, "a")
        except OSError:  # being created, or not a work directory of this harness
            continue
        with owner:
            try:
                import fcntl

                fcntl.flock(owner.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # its harness run is alive
                continue
            try:
                if (workdir / RECORD).is_file():
                    found.append((json.loads((workdir / SPEC).read_text(encoding="utf-8")),
                                  json.loads((workdir / RECORD).read_text(encoding="utf-8"))))
            except (OSError, json.JSONDecodeError):
                pass
            shutil.rmtree(workdir, ignore_errors=True)
    return found


def _rose(before: int | None) -> bool:
    after = oom_kills()
    return before is not None and after is not None and after > before


class _Process:
    """A started run process (or torchrun): its progress events forwarded, stopped at its
    deadline (SIGTERM, then SIGKILL after the grace period) without blocking the caller."""

    def __init__(
        self, cmd: Sequence[str], env: dict[str, str], log_file: Any, events: Path, progress: Any, timeout: float | None
    ):
        # its own session: Ctrl-C reaches the parent, which stops the process (torchrun its workers)
        self.proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.deadline = time.monotonic() + timeout if timeout else None
        self.events, self.progress, self.offset = events, progress, 0
        self.timed_out, self.kill_at = False, None

    def poll(self) -> int | None:
        code = self.proc.poll()
        self.offset = _forward_events(self.events, self.offset, self.progress)
        if code is not None:
            return code
        now = time.monotonic()
        if self.kill_at is not None and now > self.kill_at:
            self.proc.kill()  # the workers die with it (PR_SET_PDEATHSIG, see harness.worker)
            return self.proc.wait()
        if self.deadline is not None and now > self.deadline and not self.timed_out:
            self.timed_out, self.kill_at = True, now + STOP_GRACE_SECONDS
            self.proc.send_signal(signal.SIGTERM)
        return None


def _supervise(
    cmd: Sequence[str], env: dict[str, str], log_file: Any, events: Path, progress: Any, timeout: float | None
) -> tuple[int, bool]:
    """Start the run's process (or torchrun), forward rank 0's progress events, stop it on
    timeout or interrupt. Returns (exit code, timed out)."""
    process = _Process(cmd, env, log_file, events, progress, timeout)
    try:
        while (code := process.poll()) is None:
            time.sleep(POLL_SECONDS)
        return code, process.timed_out
    except BaseException:
        _stop_all([process.proc])
        raise


def _stop_all(procs: Sequence[subprocess.Popen]) -> None:
    """SIGTERM to each (torchrun passes it to its workers), SIGKILL to any not gone in time."""
    running = [p for p in procs if p.poll() is None]
    for proc in running:
        proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for proc in running:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()  # the workers die with it (PR_SET_PDEATHSIG, see harness.worker)
            proc.wait()


def _forward_events(path: Path, offset: int, progress: Any) -> int:
    """Replay rank 0's progress events written since ``offset``; the new offset."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return offset
    end = data.rfind(b"\n") + 1  # a line still being written waits for the next look
    for line in data[:end].splitlines():
        event = json.loads(line)
        getattr(progress, event["call"])(*event["args"])
    return offset + end


_ROOT_CAUSE = re.compile(r"Root Cause.*?rank\s*:\s*(\d+).*?exitcode\s*:\s*(-?\d+)", re.S)
#: every failed rank torchrun lists (the root cause and the "Other Failures")
_FAILURE = re.compile(r"rank\s*:\s*(\d+)\s*\(local_rank[^)]*\)\s*exitcode\s*:\s*(-?\d+)")
#: what a rank raises when another rank died under it: a consequence, not the cause
_PEER_LOST = ("remote worker crashing", "Connection closed by peer", "Connection reset by peer")


def failure_reason(
    workdir: Path, log_text: str, code: int, *, single: bool = False, oom_killed: bool = False
) -> tuple[bool, str]:
    """(is a user mistake, one line): why the run's process (``single``) or the first of its
    torchrun workers that failed did not finish."""
    errors = {}
    for path in workdir.glob(ERROR_GLOB):
        try:
            e = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        errors[int(e["rank"])] = e
    from harness.record import exit_reason

    if single:
        if 0 in errors:  # a Python error, classified by the worker as the runner would in-process
            return errors[0]["usage"], errors[0]["message"]
        cause = "out of memory: the kernel's OOM killer stopped it" if oom_killed else "no Python error"
        return False, f"the run's process {exit_reason(code)} ({cause})"
    root = _ROOT_CAUSE.search(log_text)
    if root is not None:
        rank, exitcode = int(root.group(1)), int(root.group(2))
    elif errors:
        rank, exitcode = min(errors, key=lambda r: errors[r]["time"]), code
    else:
        return False, f"worker failed: torchrun exited with code {code} (see its log)"
    if rank in errors and any(lost in errors[rank]["message"] for lost in _PEER_LOST):
        # torchrun saw two ranks end in one look and named the one that lost its peer: the
        # rank that died without a Python error is the cause
        died = [(int(r), int(c)) for r, c in _FAILURE.findall(log_text) if int(r) not in errors]
        if died:
            rank, exitcode = died[0]
    if rank in errors:
        e = errors[rank]
        return e["usage"], (e["message"] if e["usage"] else f"worker failed: rank {rank}: {e['message']}")
    how = f"{exit_reason(exitcode)} without a Python error" + (" (the kernel's OOM killer)" if oom_killed else "")
    return False, f"worker died: rank {rank} {how}; the other ranks were stopped"


# ------------------------------------------------------------------- the worker's progress


class EventProgress:
    """The ``train.Progress`` protocol, written by rank 0 as JSON lines for the parent to
    replay on its progress bars. Step counts are batched: a line at most every 0.2 s."""

    def __init__(self, path: Path):
        self.file = open(path, "a", encoding="utf-8")
        self.pending = 0
        self.last = 0.0

    def _write(self, call: str, *args: Any) -> None:
        self.file.write(json.dumps({"call": call, "args": list(args)}, default=str) + "\n")
        self.file.flush()

    def _flush_steps(self) -> None:
        if self.pending:
            self._write("advance", self.pending)
            self.pending = 0
        self.last = time.monotonic()

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        self._write("start_epoch", epoch, epochs, steps)

    def advance(self, steps: int = 1) -> None:
        self.pending += steps
        if time.monotonic() - self.last > POLL_SECONDS:
            self._flush_steps()

    def end_epoch(self, summary: dict[str, Any]) -> None:
        self._flush_steps()
        self._write("end_epoch", summary)

    def close(self) -> None:
        self._flush_steps()
        self.file.close()
