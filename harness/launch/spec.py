"""The only thing that crosses to the process that trains a run: its :class:`RunSpec`.

A run is resolved in ``harness run`` (:func:`harness.config.resolve.resolve`) and resolved
again, by the same function, in the process that trains it (:meth:`RunSpec.resolve`):
the spec carries the resolved config and the folder it was resolved against, so the worker
gets the same run and the same run id from any working directory. It is written as JSON
into the run's work directory (:meth:`RunSpec.write`), or pickled by submitit for a job.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pydantic import BaseModel, Field

from harness.config.keys import RunConfig
from harness.config.resolve import ResolvedRun, resolve_run
from harness.records.record import Parallel
from harness.registry import load_registry


class ExportSpec(BaseModel):
    """What a job needs to switch on the exporters its submission switched on: the suite
    file (its ``export:`` list), the local plugin modules, and ``--export`` names."""

    suite: str
    plugins: list[str] = Field(default_factory=list)
    names: list[str] = Field(default_factory=list)


class RunSpec(BaseModel):
    """One run, as a process that trains it needs it (and what its record is given when that
    process's ``harness run`` died before storing it: ``suite``, ``parallel``)."""

    run_id: str
    config: RunConfig
    base_dir: str
    #: the local plugin modules (a module name, or a ``.py`` file's path) the run's plugins come from
    plugins: list[str] = Field(default_factory=list)
    #: the parent's import path: a plugin found there (say on a path a conftest added) is found here
    sys_path: list[str] = Field(default_factory=list)
    #: why the run trains in its precision: its config holds only what ``auto`` became
    precision_reason: str = ""
    suite: str | None = None
    parallel: Parallel | None = None
    # a job of a scheduler (harness.launch.slurm): where it stores its record, through what
    out: str | None = None
    #: where the run writes its side files (harness.records.sidefiles): the results directory
    results_dir: str | None = None
    executor: str | None = None
    export: ExportSpec | None = None
    #: when ``harness run`` started the run's process (``time.time()``, set by
    #: :meth:`~harness.launch.process.RunProcess.start`): the record's ``start_seconds`` runs from it
    launched_at: float | None = None

    @classmethod
    def of(cls, run: ResolvedRun, plugins: list[str], **fields: object) -> "RunSpec":
        return cls(run_id=run.run_id, config=run.config, base_dir=str(run.base_dir), plugins=plugins,
                   sys_path=list(sys.path), precision_reason=run.precision_reason, **fields)

    def write(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp")
        try:
            tmp.write_text(self.model_dump_json(), encoding="utf-8")
        except OSError as exc:  # a full disk fails at the close, which names no file: this one
            exc.filename = exc.filename or str(path)
            raise
        os.replace(tmp, path)

    @classmethod
    def read(cls, path: Path) -> "RunSpec":
        return cls.model_validate_json(path.read_text(encoding="utf-8"))

    def resolve(self) -> ResolvedRun:
        """The :class:`~harness.config.resolve.ResolvedRun` the parent resolved: its recorded
        config, resolved again by the same function against the same folder."""
        sys.path[:0] = [p for p in self.sys_path if p not in sys.path]
        registry = load_registry(self.plugins, base_dir=self.base_dir)
        run = resolve_run(self.config, registry, self.base_dir)
        if run.run_id != self.run_id:  # pragma: no cover - resolution is deterministic
            raise RuntimeError(f"the worker resolved run {run.run_id}, the parent {self.run_id}")
        run.precision_reason = self.precision_reason or run.precision_reason
        return run
