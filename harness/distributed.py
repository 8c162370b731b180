"""Data-parallel runs: torchrun starts the workers, DistributedDataParallel trains.

A run whose ``launcher`` asks for more than one process (``launcher.nproc x
launcher.nnodes``, or ``harness run --nproc N``) is not trained in the ``harness run``
process. :func:`launch` writes the resolved run to a work directory and starts
``python -m torch.distributed.run ... -m harness.worker WORKDIR`` (an argument list, no
shell). torchrun starts one worker per rank; each rebuilds the run, joins the process
group (NCCL on GPUs, gloo on the CPU) and calls :func:`harness.train.fit`, which uses the
:class:`Group` of this module to shard the batches, wrap the model in
DistributedDataParallel and combine its measurements across ranks. Rank 0 writes the
record and the progress events; the parent reads them, so it stays the only writer of
``results.jsonl``. A worker that dies (torchrun exits non-zero) fails that run with the
reason (which rank, which error or exit code; torchrun's output in ``logs/<run_id>.log``)
and the suite goes on.
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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch
import torch.distributed as dist

from harness.errors import HarnessError

if TYPE_CHECKING:
    from harness.config import Launcher
    from harness.suite import ResolvedRun

SPEC, RECORD, EVENTS, RANK0 = "spec.json", "record.json", "events.jsonl", "rank0"
ERROR_GLOB = "error-rank*.json"
#: how often the parent looks at the workers (progress events, exit, timeout)
POLL_SECONDS = 0.2
#: how long torchrun gets to stop its workers after SIGTERM before it is killed
STOP_GRACE_SECONDS = 60.0


# ------------------------------------------------------------------ inside fit(): the group


@dataclass(frozen=True)
class Group:
    """This process's place in the data-parallel group (rank 0 of 1 when not distributed).

    Every method is a no-op for a single process, so ``fit()`` reads the same either way.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def shard(self) -> dict[str, int]:
        """Keyword arguments of ``TokenizerStrategy.batches``: this rank's share of the data."""
        return {"rank": self.rank, "world_size": self.world_size}

    def device(self, name: str) -> torch.device:
        """The run's device for this rank: ``cuda`` means the rank's own GPU."""
        if self.world_size > 1 and name == "cuda":
            return torch.device("cuda", self.local_rank)
        return torch.device(name)

    def per_rank(self, batch_size: int) -> int:
        """This rank's share of the global ``batch_size`` (the launcher checked it divides)."""
        return batch_size // self.world_size

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """DistributedDataParallel around ``model`` (averages gradients in backward)."""
        if self.world_size == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        # BERT's buffers (position ids) never change: no need to broadcast them every step
        return DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False
        )

    def _reduce(self, value: float, op: str) -> float:
        if self.world_size == 1:
            return float(value)
        t = torch.tensor([float(value)], dtype=torch.float64, device=_comm_device())
        dist.all_reduce(t, op=getattr(dist.ReduceOp, op))
        return float(t.item())

    def max(self, value: float) -> float:
        """The largest value over the ranks (the slowest rank's time)."""
        return self._reduce(value, "MAX")

    def sum(self, value: int) -> int:
        return int(round(self._reduce(value, "SUM")))

    def mean(self, value: float) -> float:
        return self._reduce(value, "SUM") / self.world_size

    def gather(self, index: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every rank's (index, values), concatenated, on every rank."""
        if self.world_size == 1:
            return index, values
        parts: list[Any] = [None] * self.world_size
        dist.all_gather_object(parts, (index, values))
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


SINGLE = Group()


def current() -> Group:
    """The group this process belongs to: the torchrun one in a worker, else :data:`SINGLE`."""
    if not (dist.is_available() and dist.is_initialized()):
        return SINGLE
    return Group(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def _comm_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# ---------------------------------------------------------------- the parent: checks, launch


def check(run: ResolvedRun) -> None:
    """Preflight: what would make a data-parallel run fail only after it started."""
    cfg, launcher = run.config, run.config.launcher
    ws = cfg.world_size
    if ws == 1:
        return
    where = run.where("launcher")
    if cfg.batch_size % ws:
        raise HarnessError(
            f"{run.where('batch_size')}: batch_size {cfg.batch_size} is the global batch and must divide "
            f"evenly among the {ws} processes of {where} (nproc {launcher.nproc} x nnodes {launcher.nnodes})"
        )
    if cfg.device not in ("cpu", "cuda"):
        raise HarnessError(
            f"{run.where('device')}: device {cfg.device!r} with {ws} processes; use `cuda` (each process "
            "takes its own GPU, CUDA_VISIBLE_DEVICES picks them) or `cpu`"
        )
    if cfg.device == "cuda" and torch.cuda.is_available() and launcher.nproc > torch.cuda.device_count():
        raise HarnessError(
            f"{where}: nproc {launcher.nproc} processes, one GPU each, and this node has "
            f"{torch.cuda.device_count()} GPU(s)"
        )
    if launcher.nnodes > 1 and not launcher.rdzv_endpoint:
        raise HarnessError(
            f"{where}: nnodes {launcher.nnodes} needs rdzv_endpoint (host:port that every node reaches), "
            "e.g. --set launcher.rdzv_endpoint=node0:29400"
        )


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


def launch(run: ResolvedRun, out_dir: Path, progress: Any) -> dict[str, Any] | None:
    """Run ``run`` under torchrun; its record (``failed`` when a worker died), or None on a
    node of a multi-node run that does not hold rank 0 (that node's parent records it)."""
    from harness.record import RunRecord, now

    started = now()
    launcher = run.config.launcher
    workdir = Path(tempfile.mkdtemp(prefix=f".launch-{run.run_id}-", dir=out_dir))
    try:
        # the resolved config and the folder it was resolved against: the worker resolves it
        # again the same way (harness.suite.resolve_run) and gets the same run
        spec = {"run_id": run.run_id, "config": run.record_config(), "base_dir": str(run.base_dir),
                "plugins": local_plugins(run)}
        (workdir / SPEC).write_text(json.dumps(spec), encoding="utf-8")
        cmd = [
            sys.executable, "-m", "torch.distributed.run", *torchrun_args(launcher, run.run_id),
            "-m", "harness.worker", str(workdir),
        ]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        # torchrun would set 1 thread per worker; give each its share of the cores instead
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // launcher.nproc)))
        log = workdir / "torchrun.log"
        with open(log, "wb") as log_file:
            code, timed_out = _supervise(cmd, env, log_file, workdir / EVENTS, progress, launcher.timeout)

        if (workdir / RECORD).is_file() and code == 0:
            return json.loads((workdir / RECORD).read_text(encoding="utf-8"))
        holds_rank0 = (workdir / RANK0).exists()
        if launcher.nnodes > 1 and not holds_rank0:
            return None
        if timed_out:
            reason = f"workers still running after {launcher.timeout:g} s (launcher.timeout); stopped"
        else:
            usage, reason = failure_reason(workdir, log.read_text(encoding="utf-8", errors="replace"), code)
            if usage:
                raise HarnessError(reason)
        kept = out_dir / "logs" / f"{run.run_id}.log"
        kept.parent.mkdir(exist_ok=True)
        shutil.copyfile(log, kept)
        return RunRecord.failed(run, reason, started, log=str(kept)).to_dict()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _supervise(
    cmd: Sequence[str], env: dict[str, str], log_file: Any, events: Path, progress: Any, timeout: float | None
) -> tuple[int, bool]:
    """Start torchrun, forward rank 0's progress events, stop it on timeout or interrupt."""
    # its own session: Ctrl-C reaches the parent, which stops torchrun (and so its workers)
    proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    deadline = time.monotonic() + timeout if timeout else None
    offset = 0
    try:
        while True:
            code = proc.poll()
            offset = _forward_events(events, offset, progress)
            if code is not None:
                return code, False
            if deadline is not None and time.monotonic() > deadline:
                _stop(proc)
                return proc.returncode, True
            time.sleep(POLL_SECONDS)
    except BaseException:
        _stop(proc)
        raise


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to torchrun (it stops its workers), SIGKILL if it does not exit in time."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(STOP_GRACE_SECONDS)
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


def failure_reason(workdir: Path, log_text: str, code: int) -> tuple[bool, str]:
    """(is a user mistake, one line): the first rank that failed and why."""
    errors = {}
    for path in workdir.glob(ERROR_GLOB):
        try:
            e = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        errors[int(e["rank"])] = e
    root = _ROOT_CAUSE.search(log_text)
    if root is not None:
        rank, exitcode = int(root.group(1)), int(root.group(2))
    elif errors:
        rank, exitcode = min(errors, key=lambda r: errors[r]["time"]), code
    else:
        return False, f"worker failed: torchrun exited with code {code} (see its log)"
    if rank in errors:
        e = errors[rank]
        return e["usage"], (e["message"] if e["usage"] else f"worker failed: rank {rank}: {e['message']}")
    from harness.record import exit_reason

    return False, f"worker died: rank {rank} {exit_reason(exitcode)} without a Python error; the other ranks were stopped"


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
