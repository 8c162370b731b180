"""The job's side of ``harness run --executor slurm`` (or ``local``): what a job runs on its node.

:func:`run_job` is what submitit pickles and calls: it resolves the run from its
:class:`~harness.launch.spec.RunSpec`, trains it in a fresh process of its own
(:func:`harness.launch.process.launch`, as ``harness run`` does) and stores the record
itself, through the results store's lock, with the exporters its submission switched on.
The submitting side is :mod:`harness.launch.slurm`.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from harness.config.suite import load_suite
from harness.errors import HarnessError, one_line
from harness.launch.events import EventProgress
from harness.launch.process import here, launch
from harness.launch.spec import ExportSpec, RunSpec
from harness.records.export import OnStored, notifier, switch_on
from harness.records.record import RunRecord, now
from harness.records.store import ResultsStore
from harness.registry import load_registry

#: the progress events a job writes, in its submitit folder
EVENTS_FILE = "events.jsonl"
#: what a scheduler's state means when a job ended without its run's record
MEANING = {"CANCELLED": "was cancelled (scancel, or an administrator)", "TIMEOUT": "reached its time limit",
           "PREEMPTED": "was preempted", "NODE_FAIL": "lost its node (a node failure)",
           "OUT_OF_MEMORY": "ran out of memory", "FAILED": "failed", "BOOT_FAIL": "could not boot its node",
           "DEADLINE": "reached its deadline", "INTERRUPTED": "was killed by a signal",
           "FINISHED": "ended without a result"}


def run_job(spec: RunSpec) -> dict[str, str]:
    """What a job runs (pickled by submitit, called on the node): train the run in a fresh
    process, store its record through the store's lock; return its id and status."""
    import submitit  # the job's own environment: only a job has one

    env = submitit.JobEnvironment()
    stopped: list[str] = []
    # SLURM's SIGTERM (scancel, time limit, preemption) reaches the run's process too; say why it died
    signal.signal(signal.SIGTERM, lambda signum, frame: stopped.append("SIGTERM"))
    out, started = Path(spec.out or "."), now()
    run = spec.resolve()
    threads = int(os.environ["SLURM_CPUS_PER_TASK"]) if os.environ.get("SLURM_CPUS_PER_TASK") else None
    progress = EventProgress(env.paths.folder / EVENTS_FILE)
    assert spec.parallel is not None
    parallel = spec.parallel.model_copy(update={"beside": None, "threads": threads, "cpus": None,
                                                "gpus": _visible_gpus(), "job_id": str(env.job_id)})
    try:
        # its work directory beside the job's files: no `harness run` takes it for an orphan
        record = launch(run, out, progress, threads=threads, workdirs=env.paths.folder)
    except HarnessError:
        raise
    except Exception as exc:  # submitit's time-out signal, raised in this process: say so, then let it go on
        reason = f"{kind(spec.executor)} job {env.job_id} was stopped: {one_line(exc, 'first')}"
        failed = RunRecord.failed(run, reason, started, here(run))
        failed.parallel = parallel
        _store(spec, failed)
        raise
    finally:
        progress.close()
    assert record is not None
    if record.status == "failed" and stopped:  # slurmstepd said why in the job's log, before its SIGTERM
        why = log_reason(env.paths.stderr) or f"was stopped ({stopped[0]}: scancel, its time limit or preemption)"
        record.error = f"{kind(spec.executor)} job {env.job_id} {why}; {record.error}"
    if threads is None and record.status != "failed":
        parallel = parallel.model_copy(update={"threads": record.env.torch_threads})
    record.parallel = parallel
    _store(spec, record)
    return {"run_id": record.run_id, "status": record.status}


def kind(executor: str | None) -> str:
    """How a message names the executor: ``SLURM``, ``local``."""
    return "SLURM" if executor == "slurm" else str(executor)


def _visible_gpus() -> list[int] | None:
    gpus = os.environ.get("CUDA_VISIBLE_DEVICES")
    return [int(g) for g in gpus.split(",") if g.strip().isdigit()] if gpus else None


def _store(spec: RunSpec, record: RunRecord) -> None:
    """Store the record from the job, with the exporters the submission switched on."""
    if spec.suite:
        record.suite = spec.suite
    ResultsStore(spec.out or ".", on_stored=_job_exporters(spec.export)).add(record)


def _job_exporters(export: ExportSpec | None) -> OnStored | None:
    """The exporters of the submission (``harness run``'s ``--export`` and the suite's
    ``export:``), switched on again in the job as ``harness run`` switched them on."""
    if export is None:
        return None
    suite = load_suite(export.suite)
    registry = load_registry(export.plugins, base_dir=suite.path.parent)
    switch_on(registry.pm, suite, export.names)
    return notifier(registry.pm)


def log_reason(log: Path) -> str | None:
    """Why the job was stopped, from what slurmstepd wrote in its log (``*** JOB 12 ON n1
    CANCELLED AT ... DUE TO TIME LIMIT ***``); None when it says nothing."""
    try:
        text = Path(log).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    line = next((ln for ln in reversed(text.splitlines()) if "*** JOB" in ln or "*** STEP" in ln), None)
    if line is None:
        return None
    for words, meaning in (("TIME LIMIT", "TIMEOUT"), ("PREEMPTION", "PREEMPTED"), ("CANCELLED", "CANCELLED")):
        if words in line:
            return MEANING[meaning]
    return None
