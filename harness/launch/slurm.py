"""Runs as jobs of a scheduler, through submitit: ``harness run --executor slurm`` (or ``local``).

Each run that is not finished in the output directory becomes one job of a job array
(submitit's ``map_array``); the settings (partition, time, GPUs and CPUs per run, array
parallelism, ...) come from the suite's ``slurm:`` section and ``--slurm KEY=VALUE``
(:class:`SlurmSettings`). A job trains its run in a fresh process of its own
(:mod:`harness.launch.slurm_job`, as ``harness run`` does) and stores the record itself,
through the results store's lock, so every record lands once in ``<out>/results.jsonl``
whoever waits for it. Its submitit files (script, pickles, logs) are in
``<out>/slurm/<job id>/``; ``<out>/slurm/jobs.json`` says which job each run went to.

- The submitting ``harness run`` waits for the jobs (their progress shown, as the jobs
  write it) unless ``--no-wait``. Ctrl-C stops the waiting, not the SLURM jobs.
- A job the scheduler stops (time limit, preemption, ``scancel``, a node failure) is
  recorded ``failed`` with the reason: by the job itself where it can (submitit's time-out
  signal, SIGTERM), else by the waiting ``harness run`` or by the next submission, from
  the scheduler's state (``squeue``, or submitit's ``sacct`` watcher) or the job's log.
- A submission skips finished runs and runs whose job is still pending or running, and
  runs the rest again (a ``failed`` run included).

``--executor local`` runs the same jobs through submitit's ``LocalExecutor`` on this
machine, all at once: the submitit path without a cluster (the tests use it).
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from pydantic import Field, PositiveFloat, PositiveInt, ValidationError, field_validator

from harness.config.resolve import ResolvedRun
from harness.config.sentences import describe_error
from harness.config.strict import Strict
from harness.errors import HarnessError, install_hint, one_line
from harness.launch.events import POLL_SECONDS, replay
from harness.launch.process import here, local_plugins
from harness.launch.slurm_job import EVENTS_FILE, MEANING, kind, log_reason, run_job
from harness.launch.spec import ExportSpec, RunSpec
from harness.records.record import Parallel, RunRecord, now
from harness.records.store import ResultsStore, locked

log = logging.getLogger(__name__)

EXECUTORS = ("slurm", "local")
JOBS_FILE = "jobs.json"
#: scheduler states of a job that may still run (submitit's list, and SLURM's other transient ones)
ACTIVE = {"UNKNOWN", "READY", "PENDING", "RUNNING", "REQUEUED", "COMPLETING", "PREEMPTED", "CONFIGURING", "SUSPENDED",
          "RESIZING", "REQUEUE_FED", "REQUEUE_HOLD", "STAGE_OUT", "SIGNALING", "RESV_DEL_HOLD"}
#: how often a waiting ``harness run`` asks the scheduler about a job without a result yet
STATE_SECONDS = 5.0


class SlurmSettings(Strict):
    """The jobs' settings: the suite's ``slurm:`` section, then ``--slurm KEY=VALUE``."""

    partition: str | None = Field(None, description="the partition (`sbatch --partition`); null: the cluster's default")
    time: int | str = Field(
        60, description="each job's time limit: minutes, or `[D-]HH:MM:SS`; a run still training then is "
        "recorded `failed` (submitit signals the job 90 s before)",
    )
    gpus_per_run: int = Field(0, ge=0, description="GPUs of each job (`--gpus-per-node`); give `launcher.nproc`")
    cpus_per_run: PositiveInt | None = Field(
        None, description="CPU cores of each job (`--cpus-per-task`); the run's torch threads"
    )
    mem_gb: PositiveFloat | None = Field(None, description="memory of each job in GB (`--mem`)")
    array_parallelism: PositiveInt = Field(256, description="jobs of the array running at once (`--array=...%N`)")
    account: str | None = Field(None, description="`sbatch --account`")
    qos: str | None = Field(None, description="`sbatch --qos`")
    constraint: str | None = Field(None, description="`sbatch --constraint`")
    setup: list[str] = Field(default_factory=list, description="shell lines each job runs first (`module load ...`)")
    additional: dict[str, Any] = Field(
        default_factory=dict, description="any other sbatch option, without its dashes: `{exclusive: true}`"
    )

    @field_validator("time")
    @classmethod
    def _time(cls, value: int | str) -> int | str:
        minutes(value)
        return value


def minutes(value: int | str) -> int:
    """A SLURM time as whole minutes: ``90``, ``"1:30:00"``, ``"2-00:00:00"``."""
    if isinstance(value, bool):
        raise ValueError(f"expected minutes or [D-]HH:MM:SS, got {value!r}")
    if isinstance(value, int):
        if value < 1:
            raise ValueError(f"expected at least 1 minute, got {value}")
        return value
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", value.strip())
    if not match:
        raise ValueError(f"expected minutes or [D-]HH:MM:SS, got {value!r}")
    days, first, second, third = (int(g) if g else 0 for g in match.groups())
    if match.group(4) is not None or match.group(1) is not None:  # [D-]HH:MM:SS, or D-HH
        hours, mins, secs = first, second, third
    elif match.group(3) is not None:  # MM:SS
        hours, mins, secs = 0, first, second
    else:
        hours, mins, secs = 0, first, 0
    total = days * 1440 + hours * 60 + mins + (1 if secs else 0)
    if total < 1:
        raise ValueError(f"expected at least 1 minute, got {value!r}")
    return total


def settings(section: dict[str, Any], where: Callable[[str], str], overrides: dict[str, Any]) -> SlurmSettings:
    """The suite's ``slurm:`` section (``where(key)`` names its line) with ``--slurm``
    overrides; an error is one line naming the key."""
    data = {**section, **overrides}
    try:
        return SlurmSettings.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        top = str(err["loc"][0]) if err["loc"] else ""
        at = f"--slurm {top}" if top in overrides else where(f"slurm.{key}")
        if err["type"] == "value_error":
            return _raise(f"{at}: {err['msg'].removeprefix('Value error, ')}")
        return _raise(f"{at}: {describe_error(err, SlurmSettings)}")


def _raise(message: str) -> Any:
    raise HarnessError(message)


# ------------------------------------------------------------------- the submitting side


@dataclass
class _Tracked:
    run: ResolvedRun
    job: Any
    submitted_at: str
    handle: Any = None
    offset: int = 0
    asked: float = 0.0


class Cluster:
    """Submits a suite's runs as submitit jobs and (unless ``wait`` is false) waits for
    them; ``kind`` is ``slurm`` or ``local`` (submitit's ``LocalExecutor``). ``export``:
    what a job needs to switch the submission's exporters on again (see :func:`_store`)."""

    def __init__(self, kind: str, slurm: SlurmSettings, *, wait: bool = True, export: ExportSpec | None = None):
        if kind not in EXECUTORS:
            raise HarnessError(f"--executor {kind}: expected one of {', '.join(EXECUTORS)}")
        self.kind, self.slurm, self.wait, self.export = kind, slurm, wait, export
        self.in_flight = 0  # jobs submitted or still running after :meth:`run`, not waited for

    def check(self) -> None:
        """Before anything is written: submitit installed, SLURM's commands on the PATH."""
        try:
            import submitit  # noqa: F401
        except ImportError:
            raise HarnessError(
                f"--executor {self.kind} needs submitit: {install_hint('slurm')}"
            ) from None
        if self.kind == "slurm":
            from shutil import which

            missing = [c for c in ("sbatch", "squeue", "scancel") if which(c) is None]
            if missing:
                raise HarnessError(
                    f"--executor slurm: {missing[0]} is not on the PATH (run it where SLURM's commands are: a "
                    "login node; or start a single-node SLURM with scripts/slurm/start.sh)"
                )

    @property
    def jobs(self) -> int:
        """Jobs that may run at once (the progress display's layout)."""
        return self.slurm.array_parallelism

    def run(self, runs: Sequence[ResolvedRun], out_dir: Path, progress: Any, keep: Callable[[RunRecord], None],
            *, label: Callable[[ResolvedRun], str], suite_name: str | None) -> None:
        """Submit the runs (not finished in ``out_dir``) as one job array; with ``wait``,
        show their progress until every job ended. ``keep`` stores what a job could not."""
        out_dir = Path(out_dir).resolve()
        ledger = Ledger(out_dir)
        tracked, submit = [], []
        for run in runs:  # what earlier submissions left
            entry = ledger.entries.get(run.run_id)
            job = self._job(out_dir, entry) if entry else None
            if job is None:
                submit.append(run)
                continue
            state = self._state(job)
            if state in ACTIVE:
                tracked.append(_Tracked(run, job, entry.submitted_at))
                continue
            store = ResultsStore(out_dir)  # as it is now that the job has ended
            if not _recorded_since(store, run.run_id, job.job_id, entry.submitted_at):
                keep(self._failed(run, job, entry.submitted_at, state))
            submit.append(run)
        if tracked:
            log.info(f"{len(tracked)} run{'s' if len(tracked) != 1 else ''} still queued or running from an earlier "
                     f"submission (job{'s' if len(tracked) != 1 else ''} {', '.join(t.job.job_id for t in tracked)}): "
                     "not submitted again")
        if submit:
            new = self._submit(submit, out_dir, suite_name)
            ledger.update({t.run.run_id: LedgerEntry(job_id=t.job.job_id, executor=self.kind,
                                                     submitted_at=t.submitted_at) for t in new})
            ids = [t.job.job_id for t in new]
            log.info(f"submitted {len(new)} {self.kind} job{'s' if len(new) != 1 else ''} ({_span(ids)}); "
                     f"their files: {out_dir / 'slurm'}")
            tracked += new
        self.in_flight = len(tracked)
        if not self.wait:
            if self.kind == "slurm" and tracked:
                log.info("not waiting (--no-wait): each job stores its record when it ends; "
                         "the same command again shows the table and reruns what failed")
            return
        self._wait(tracked, out_dir, progress, keep, label)

    def _executor(self, out_dir: Path) -> Any:
        import submitit

        s = self.slurm
        executor = submitit.AutoExecutor(folder=out_dir / "slurm" / "%j", cluster=self.kind)
        params: dict[str, Any] = {"timeout_min": minutes(s.time), "gpus_per_node": s.gpus_per_run,
                                  "name": "harness"}
        if s.cpus_per_run:
            params["cpus_per_task"] = s.cpus_per_run
        if self.kind == "slurm":
            params |= {"slurm_array_parallelism": s.array_parallelism, "slurm_setup": list(s.setup)}
            params |= {f"slurm_{k}": v for k, v in (("partition", s.partition), ("account", s.account),
                                                      ("qos", s.qos), ("constraint", s.constraint)) if v}
            if s.mem_gb:
                params["mem_gb"] = s.mem_gb
            if s.additional:
                params["slurm_additional_parameters"] = dict(s.additional)
        elif s.setup:
            params["local_setup"] = list(s.setup)
        executor.update_parameters(**params)
        return executor

    def _submit(self, runs: Sequence[ResolvedRun], out_dir: Path, suite_name: str | None) -> list[_Tracked]:
        parallel = Parallel(executor=self.kind, jobs=min(self.jobs, len(runs)) if self.kind == "slurm" else len(runs))
        specs = [RunSpec.of(r, local_plugins(r), out=str(out_dir), suite=suite_name, executor=self.kind,
                            parallel=parallel, export=self.export) for r in runs]
        executor = self._executor(out_dir)
        submitted_at = now()
        try:
            jobs = executor.map_array(run_job, specs)
        except Exception as exc:  # sbatch refused it (a partition that does not exist, a bad option)
            raise HarnessError(f"--executor {self.kind}: submitting the jobs failed: {one_line(exc, 'last')}") from None
        return [_Tracked(r, j, submitted_at) for r, j in zip(runs, jobs)]

    def _job(self, out_dir: Path, entry: LedgerEntry) -> Any:
        """The job of an earlier submission, as submitit knows it; None when it cannot be
        asked about any more (a local job of another ``harness run`` that is gone)."""
        import submitit

        folder = out_dir / "slurm" / "%j"
        if entry.executor == "slurm":
            return submitit.SlurmJob(folder=folder, job_id=entry.job_id)
        job = submitit.LocalJob(folder=folder, job_id=entry.job_id)
        return job if _pid_alive(int(entry.job_id)) or job.paths.result_pickle.exists() else None

    def _state(self, job: Any) -> str | None:
        """The scheduler's state of the job (``RUNNING``, ``CANCELLED``, ...), ``DONE`` when it
        left its result, None when no one knows any more."""
        if job.paths.result_pickle.exists():
            return "DONE"
        if self.kind == "local":
            if getattr(job, "_process", None) is None:  # a job of an earlier harness run
                return "RUNNING" if _pid_alive(int(job.job_id)) else None
            return job.state  # RUNNING, FINISHED, INTERRUPTED (killed by a signal)
        state = _squeue_state(job.job_id)
        if state is None:  # squeue forgot it (MinJobAge): ask sacct through submitit, if accounting is on
            with _quiet_submitit():
                state = job.watcher.get_state(job.job_id, mode="force")
            state = None if state == "UNKNOWN" else state.split()[0]
        return state

    def _failed(self, run: ResolvedRun, job: Any, submitted_at: str, state: str | None) -> RunRecord:
        """The ``failed`` record of a run whose job ended without storing one."""
        who = kind(self.kind)
        if job.paths.result_pickle.exists():  # it may have appeared since the state was read
            state = "DONE"
        if state == "DONE":  # the job's function raised before it could store anything
            exc = job.exception()
            lines = str(exc).strip().splitlines() if exc else []
            trace = [ln for ln in lines if re.match(r"^\w[\w.]*(Error|Exception|Interrupt)\b", ln)]
            why = trace[-1] if trace else (one_line(exc, "first") if exc else "no result")
            reason = f"{who} job {job.job_id} raised: {why}"
        else:
            why = (MEANING.get(state, f"ended {state}") if state else
                   log_reason(job.paths.stderr) or "ended (SLURM no longer knows its state)")
            reason = f"{who} job {job.job_id} {why} before the run finished"
        return RunRecord.failed(run, reason, submitted_at, here(run), log=str(job.paths.stderr))

    def _wait(self, tracked: list[_Tracked], out_dir: Path, progress: Any, keep: Callable[[RunRecord], None],
              label: Callable[[ResolvedRun], str]) -> None:
        waiting = list(tracked)
        try:
            while waiting:
                for t in list(waiting):
                    events = t.job.paths.folder / EVENTS_FILE
                    if t.handle is None and events.exists():
                        t.handle = progress.start_run(label(t.run))
                    if t.handle is not None:
                        t.offset = replay(events, t.offset, t.handle)
                    state = None
                    if t.job.paths.result_pickle.exists():
                        state = "DONE"
                    elif time.monotonic() - t.asked > STATE_SECONDS or self.kind == "local":
                        t.asked = time.monotonic()
                        state = self._state(t.job)
                        if state in ACTIVE:
                            continue
                    else:
                        continue
                    waiting.remove(t)
                    store = ResultsStore(out_dir)
                    if not _recorded_since(store, t.run.run_id, t.job.job_id, t.submitted_at):
                        keep(self._failed(t.run, t.job, t.submitted_at, state))
                        store = ResultsStore(out_dir)
                    stored = store.records.get(t.run.run_id)
                    progress.end_run(t.handle or progress.start_run(label(t.run)),
                                     RunRecord.model_validate(stored) if stored else None)
                time.sleep(POLL_SECONDS)
        except KeyboardInterrupt:
            if self.kind == "local":  # the local jobs are children of this process: they stop with it
                for t in waiting:
                    t.job.cancel(check=False)
            else:
                ids = " ".join(t.job.job_id for t in waiting)
                log.info(f"stopped waiting; the SLURM jobs go on (scancel {ids} stops them), each storing its "
                         "record; the same command again collects them")
            raise


def refuse_beside_jobs(out_dir: Path) -> None:
    """Before a ``harness run`` trains runs itself in ``out_dir``: a :class:`HarnessError` when
    jobs of an earlier submission into it (``--no-wait``, or one whose ``harness run`` was
    stopped) may still be queued or running, and so still writing there: the same runs would
    train twice. A job SLURM cannot be asked about (no ``squeue`` here) counts as running."""
    if not (out_dir / "slurm" / JOBS_FILE).is_file():
        return
    ledger, store = Ledger(out_dir), ResultsStore(out_dir)
    active = [entry for run_id, entry in ledger.entries.items()
              if not _recorded_since(store, run_id, entry.job_id, entry.submitted_at)
              and (entry.job_id.isdigit() and _pid_alive(int(entry.job_id)) if entry.executor == "local" else
                   _squeue_state(entry.job_id) in ACTIVE)]
    if active:
        ids = [e.job_id for e in active]
        raise HarnessError(
            f"--out {out_dir}: {len(ids)} {kind(active[0].executor)} job{'s' if len(ids) != 1 else ''} of an earlier "
            f"submission may still be running and writing there ({_span(ids)}, in {ledger.path}); the same command "
            "with --executor slurm waits for them and collects their records, or pick another --out")


def _recorded_since(store: Any, run_id: str, job_id: str, since: str) -> bool:
    """Whether the store holds a record of the run from that job (or a later one)."""
    record = store.records.get(run_id)
    if record is None:
        return False
    return (record.get("parallel") or {}).get("job_id") == job_id or str(record.get("finished_at", "")) >= since


def _squeue_state(job_id: str) -> str | None:
    """SLURM's state of a job that it still knows (ended ones for ``MinJobAge``); None when
    it knows no such job; ``UNKNOWN`` when it cannot be asked (the controller unreachable:
    the job may well be running)."""
    try:
        out = subprocess.run(["squeue", "-h", "-t", "all", "-j", str(job_id), "-o", "%T"],
                             capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.SubprocessError):
        return "UNKNOWN"
    states = out.stdout.split()
    if out.returncode == 0:
        return states[0].upper() if states else None
    return None if "invalid job id" in out.stderr.lower() else "UNKNOWN"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def _quiet_submitit() -> Iterator[None]:
    """submitit warns on every failed ``sacct`` (a cluster without accounting): not here."""
    logger = logging.getLogger("submitit")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _span(ids: Sequence[str]) -> str:
    return ids[0] if len(ids) == 1 else f"{ids[0]} ... {ids[-1]}"


class LedgerEntry(Strict):
    """The job a run was last submitted as."""

    job_id: str
    executor: str
    submitted_at: str


class Ledger:
    """``<out>/slurm/jobs.json``: the job each run was last submitted as (:class:`LedgerEntry`),
    written under the results store's lock."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.path = out_dir / "slurm" / JOBS_FILE
        self.entries: dict[str, LedgerEntry] = self._read()

    def _read(self) -> dict[str, LedgerEntry]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return {run_id: LedgerEntry.model_validate(entry) for run_id, entry in (data or {}).items()}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, AttributeError) as exc:
            raise HarnessError(f"{self.path}: not the harness's job list ({exc}); remove it to start afresh") from None

    def update(self, entries: dict[str, LedgerEntry]) -> None:
        with locked(self.out_dir):
            self.entries = self._read() | entries
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps({k: v.model_dump() for k, v in self.entries.items()}, indent=1), encoding="utf-8")
            os.replace(tmp, self.path)
