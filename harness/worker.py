"""The process a run trains in: what ``python -m harness.worker WORKDIR`` starts (one per
run), or ``torchrun ... -m harness.worker WORKDIR`` (one per rank of a data-parallel run;
torchrun itself started as ``python -m harness.worker --guard PID torchrun...``, which
makes it die with ``harness run``).

It reads the resolved run the parent wrote (``WORKDIR/spec.json``), looks its plugins up
again (built-ins, entry points, and the local modules the run's plugins came from),
resolves the run by the same function as the parent, joins the process group when
torchrun started it (NCCL on GPUs, gloo on the CPU) and calls :func:`harness.train.fit`.
Rank 0 writes the record and the progress events. A process that fails writes
``error-rank<N>.json`` (its traceback goes to the run's log) and exits non-zero; torchrun
then stops the other ranks. See :mod:`harness.launch`.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Sequence

from harness.launch import CPUS_ENV, ERROR_GLOB, EVENTS, RANK0, RECORD, SPEC, EventProgress


def rebuild_run(spec: dict[str, Any]):
    """The :class:`~harness.suite.ResolvedRun` the parent resolved: its recorded config,
    resolved again by the same function, against the same folder."""
    from harness.plugins import load_registry
    from harness.suite import resolve_run

    sys.path[:0] = [p for p in spec.get("sys_path", []) if p not in sys.path]
    registry = load_registry(spec["plugins"], base_dir=spec["base_dir"])
    run = resolve_run(spec["config"], registry, spec["base_dir"])
    if run.run_id != spec["run_id"]:  # pragma: no cover - resolution is deterministic
        raise RuntimeError(f"the worker resolved run {run.run_id}, the parent {spec['run_id']}")
    # the config holds the precision `auto` became; why it did is the parent's to say
    run.precision_reason = spec.get("precision_reason") or run.precision_reason
    return run


def _die_with_parent(parent: int | None = None) -> None:
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
    """``python -m harness.worker --guard PARENT_PID CMD...``: run CMD (torchrun) in this
    process, killed when ``harness run`` dies; the request survives the exec."""
    _die_with_parent(int(argv[0]))
    os.execv(argv[1], list(argv[1:]))


def _pin_cores() -> None:
    """Pin this process (its threads, torch's included) to the cores :class:`RunProcess`
    gave it (``HARNESS_CPUS``), before torch starts its threads."""
    cpus = os.environ.get(CPUS_ENV)
    if cpus and hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(0, {int(c) for c in cpus.split(",")})
        except (OSError, ValueError):  # a core that went away: run unpinned
            pass


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, default=str), encoding="utf-8")
    os.replace(tmp, path)  # the parent never reads half a file


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--guard":
        guard(argv[1:])
    workdir = Path(argv[0])
    rank, local_rank = int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0))
    distributed = int(os.environ.get("WORLD_SIZE", 1)) > 1  # started by torchrun
    parent = os.environ.get("HARNESS_PARENT_PID")
    _die_with_parent(int(parent) if parent and "TORCHELASTIC_RUN_ID" not in os.environ else None)
    _pin_cores()
    if rank == 0:
        (workdir / RANK0).touch()  # this node records the run
    progress = None
    try:
        import torch
        import torch.distributed as dist

        from harness.train import fit

        run = rebuild_run(json.loads((workdir / SPEC).read_text(encoding="utf-8")))
        if distributed:
            if run.config.device == "cuda":
                torch.cuda.set_device(local_rank)
            dist.init_process_group("nccl" if run.config.device == "cuda" else "gloo")
        progress = EventProgress(workdir / EVENTS) if rank == 0 else None
        record = fit(run, progress, isolation="process")
        if rank == 0:
            _write_json(workdir / RECORD, record)
        if distributed:
            dist.destroy_process_group()
        return 0
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, then exit non-zero
        from harness.errors import HarnessError
        from harness.record import failure_reason

        usage = isinstance(exc, HarnessError)
        message = str(exc) if usage else failure_reason(exc)
        name = ERROR_GLOB.replace("*", str(rank))
        _write_json(workdir / name, {"rank": rank, "usage": usage, "message": message, "time": time.time()})
        traceback.print_exc()
        return 1
    finally:
        if progress is not None:
            progress.close()


if __name__ == "__main__":
    sys.exit(main())
