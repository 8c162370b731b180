"""The process a run trains in: what ``python -m harness.launch.worker WORKDIR`` starts (one
per run), or ``torchrun ... -m harness.launch.worker WORKDIR`` (one per rank of a
data-parallel run; torchrun itself started as ``python -m harness.launch.worker --guard PID
torchrun...``, which makes it die with ``harness run``).

It reads the run's spec the parent wrote (``WORKDIR/spec.json``,
:class:`~harness.launch.spec.RunSpec`), resolves the run again by the same function as the
parent (its plugins looked up again: built-ins, entry points, the local modules the run's
plugins came from), joins the process group when torchrun started it (NCCL on GPUs, gloo
on the CPU) and calls :func:`harness.loop.train.fit`. Rank 0 writes the record and the
progress events. A process that fails writes its :class:`~harness.launch.failures.RankError`
(its traceback goes to the run's log) and exits non-zero; torchrun then stops the other
ranks. See :mod:`harness.launch.process`.

A single-process run's process may instead be forked by the fork server
(:mod:`harness.launch.forkserver`), which imported :data:`IMPORTS` once; that child ties
itself to the server, pins itself and calls :func:`work` as :func:`main` does here.

Importing this module imports no torch: the guard (``--guard``) only execs torchrun, and a
worker pins itself to its cores (``HARNESS_CPUS``) before torch starts its threads.
"""

from __future__ import annotations

import ctypes
import importlib
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Sequence

from harness.launch import CPUS_ENV, EVENTS, RANK0, RECORD, SPEC

#: what a run's process imports before it reads its spec, so that ``start_seconds`` holds
#: them and the fork server (:mod:`harness.launch.forkserver`) can import them once for all
#: its runs: torch, the loop, and the transformers modules the loop would import lazily
#: (``transformers.modeling_utils`` alone is 2 s on two cores: it pulls torch._dynamo and sympy).
#: None of them starts a thread (numpy's OpenBLAS does unless told one; see the fork server)
IMPORTS = (
    "torch", "torch.distributed", "transformers", "transformers.modeling_utils",
    "transformers.models.auto.modeling_auto", "transformers.models.auto.tokenization_auto",
    "transformers.models.bert.modeling_bert",  # the embedded MiniLM's and the bert-* architectures' classes
    "harness.launch.events", "harness.launch.spec", "harness.loop.train",
)


def import_all() -> None:
    """Import :data:`IMPORTS` (after the cores are pinned: they import torch)."""
    for name in IMPORTS:
        importlib.import_module(name)


def die_with_parent(parent: int | None = None) -> None:
    """Ask Linux to kill this process when its parent dies (``harness run``, or torchrun),
    so a killed ``harness run`` leaves no run training for nobody. ``parent``: the pid the
    parent should have; if it is gone already (it died before the request), exit now."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if parent is not None and os.getppid() != parent:
        os._exit(1)


def guard(argv: Sequence[str]) -> None:
    """``python -m harness.launch.worker --guard PARENT_PID CMD...``: run CMD (torchrun) in this
    process, killed when ``harness run`` dies; the request survives the exec."""
    die_with_parent(int(argv[0]))
    os.execv(argv[1], list(argv[1:]))


def pin_cores() -> None:
    """Pin this process (its threads, torch's included) to the cores :class:`~harness.launch.process.RunProcess`
    gave it (``HARNESS_CPUS``), before torch starts its threads."""
    cpus = os.environ.get(CPUS_ENV)
    if cpus and hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(0, {int(c) for c in cpus.split(",")})
        except (OSError, ValueError):  # a core that went away: run unpinned
            pass


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--guard":
        guard(argv[1:])
    parent = os.environ.get("HARNESS_PARENT_PID")
    die_with_parent(int(parent) if parent and "TORCHELASTIC_RUN_ID" not in os.environ else None)
    pin_cores()
    return work(Path(argv[0]))


def work(workdir: Path) -> int:
    """Train the run of ``workdir`` in this process (already tied to its parent and pinned to
    its cores); its exit code. The record's ``start_seconds`` runs from the spec's
    ``launched_at`` to here being ready to call fit (imports done, spec read and resolved;
    with torchrun, the process group joined too)."""
    rank, local_rank = int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0))
    distributed = int(os.environ.get("WORLD_SIZE", 1)) > 1  # started by torchrun
    if rank == 0:
        (workdir / RANK0).touch()  # this node records the run
    progress = None
    try:
        import_all()
        import torch
        import torch.distributed as dist

        from harness.launch.events import EventProgress  # after pinning the cores: it imports torch
        from harness.launch.spec import RunSpec  # after pinning the cores: it imports torch
        from harness.loop.train import fit  # after pinning the cores: it imports torch

        spec = RunSpec.read(workdir / SPEC)
        run = spec.resolve()
        if distributed:
            if run.config.device == "cuda":
                torch.cuda.set_device(local_rank)
            dist.init_process_group("nccl" if run.config.device == "cuda" else "gloo")
        ready = time.time()
        progress = EventProgress(workdir / EVENTS) if rank == 0 else None
        record = fit(run, progress, isolation="process", side_dir=Path(spec.results_dir) if spec.results_dir else None)
        if spec.launched_at is not None:
            record.start_seconds = ready - spec.launched_at
        if rank == 0:
            tmp = workdir / (RECORD + ".tmp")
            tmp.write_text(record.model_dump_json(), encoding="utf-8")
            os.replace(tmp, workdir / RECORD)  # the parent never reads half a file
        if distributed:
            dist.destroy_process_group()
        return 0
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, then exit non-zero
        from harness.errors import HarnessError, no_room  # here: a failed import above is reported too
        from harness.launch.failures import RankError  # here: a failed import above is reported too

        exc = no_room(exc) or exc  # a full disk stops the suite in one line, as a user mistake does
        RankError.of(rank, exc, usage=isinstance(exc, HarnessError)).write(workdir)
        traceback.print_exc()
        return 1
    finally:
        if progress is not None:
            progress.close()


if __name__ == "__main__":
    sys.exit(main())
