"""The run record: one model that builds, validates and classifies what a run left behind.

A record is one JSON object per run in ``results.jsonl`` (see docs/results.md). It is
built only here: :meth:`RunRecord.finished` for a run that trained (``ok``, or
``diverged`` when the loss stopped being finite) and :meth:`RunRecord.failed` for a run
that did not finish, with the cause classified by :func:`failure_reason` (an exception)
or :func:`exit_reason` (a process that died). Everything else (the store, reports,
comparisons, resume) reads the plain dict that :meth:`RunRecord.to_dict` returns.

Unknown fields are kept (``extra="allow"``): a record written by another version of the
harness, or extended by a plugin, passes through a read-modify-write unchanged.
"""

from __future__ import annotations

import datetime as dt
import signal
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from harness.suite import ResolvedRun

Status = Literal["ok", "diverged", "failed"]


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


class EpochRecord(BaseModel):
    """What one training epoch measured, and the evaluation after it."""

    model_config = ConfigDict(extra="allow")

    epoch: int = Field(description="1-based epoch number")
    train_seconds: float = Field(
        description="wall seconds of the epoch's training steps, device-synchronised at both ends; warm-up, "
        "data preparation and evaluation excluded (the slowest rank's, under data parallelism)"
    )
    train_cpu_seconds: float | None = Field(
        None, description="CPU seconds this process spent in the epoch's training steps (all its threads)"
    )
    eval_seconds: float = Field(description="wall seconds of the evaluation after the epoch")
    train_loss: float = Field(description="mean training loss over the epoch's steps (mean over ranks)")
    steps: int = Field(description="optimizer steps in the epoch")
    real_tokens: int = Field(description="tokens of the examples trained on (special tokens included, after truncation)")
    padded_tokens: int = Field(description="tokens the model computed on: real tokens plus padding")
    train_flops: float | None = Field(None, description="model FLOPs of the epoch's training (forward + backward)")
    peak_memory_bytes: int = Field(
        description="GPU: peak bytes allocated by torch during the epoch; CPU: the process's peak resident set"
    )
    metrics: dict[str, float] = Field(default_factory=dict, description="validation metrics after the epoch")


class RunRecord(BaseModel):
    """One run: what it was (``config``), where it ran (``env``) and what it measured."""

    model_config = ConfigDict(extra="allow")

    run_id: str = Field(description="stable hash of the resolved config (data_dir and rendezvous settings excluded)")
    status: Status = Field(description="ok, diverged (the training loss became NaN or infinite) or failed")
    error: str | None = Field(None, description="why the run did not finish ok (one line)")
    suite: str | None = Field(None, description="the suite's name")
    started_at: str = Field(description="UTC start time, ISO 8601")
    finished_at: str = Field(description="UTC end time, ISO 8601")
    config: dict[str, Any] = Field(description="the fully resolved run: every key of the suite-key table")
    env: dict[str, Any] = Field(description="provenance: harness version and git commit, python, torch, transformers, device")
    world_size: int = Field(1, description="processes that trained the run (data parallelism)")
    model_info: dict[str, int] | None = Field(None, description="parameters, trainable_parameters, matmul_parameters")
    data: dict[str, Any] | None = Field(
        None, description="per split: examples used, of how many, and the subset's seed and index hash; the labels"
    )
    main_metric: str | None = Field(None, description="the dataset's main metric (tables sort and plots draw by it)")
    warmup_seconds: float | None = Field(None, description="the untimed warm-up steps before epoch 1")
    compile_seconds: float | None = Field(None, description="with compile: the warm-up, where compilation happens")
    epochs: list[EpochRecord] = Field(default_factory=list, description="one entry per epoch (see below)")
    metrics: dict[str, float] = Field(default_factory=dict, description="the last epoch's metrics when the run is ok")
    log: str | None = Field(None, description="a failed run's traceback or worker log")

    # -- constructors --------------------------------------------------------------

    @classmethod
    def finished(
        cls, run: ResolvedRun, *, started_at: str, env: dict[str, Any], epochs: list[dict[str, Any]],
        diverged: str | None = None, **fields: Any,
    ) -> "RunRecord":
        """A run that trained: ``ok``, or ``diverged`` with the reason (its metrics empty)."""
        return cls(
            run_id=run.run_id, status="diverged" if diverged else "ok", error=diverged, started_at=started_at,
            finished_at=_now(), config=run.record_config(), env=env, world_size=run.config.world_size,
            epochs=epochs, metrics=epochs[-1]["metrics"] if epochs and not diverged else {}, **fields,
        )

    @classmethod
    def failed(cls, run: ResolvedRun, reason: str, started_at: str, log: str | None = None) -> "RunRecord":
        """A run that did not finish; ``reason`` from :func:`failure_reason` or :func:`exit_reason`."""
        import torch

        from harness.measure import environment

        return cls(
            run_id=run.run_id, status="failed", error=reason, started_at=started_at, finished_at=_now(),
            config=run.record_config(), env=environment(torch.device(run.config.device)),
            world_size=run.config.world_size, log=log,
        )

    def to_dict(self) -> dict[str, Any]:
        """The record as stored: plain JSON types; optional fields a failed run lacks are left out."""
        data = self.model_dump(mode="json")
        if self.status == "failed":
            for key in ("model_info", "data", "main_metric", "warmup_seconds", "compile_seconds"):
                if data.get(key) is None:
                    data.pop(key, None)
        for key in ("suite", "log"):
            if data.get(key) is None:
                data.pop(key, None)
        return data


def now() -> str:
    """The current UTC time as records write it (``started_at``, ``finished_at``)."""
    return _now()


# ------------------------------------------------------------------ failure classification


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def is_oom(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, (torch.OutOfMemoryError, MemoryError)) or "out of memory" in str(exc).lower()


def failure_reason(exc: BaseException) -> str:
    """One line for a run that raised: ``out of memory: ...`` or ``ValueError: ...``."""
    if is_oom(exc):
        return f"out of memory: {first_line(exc)}"
    return f"{type(exc).__name__}: {first_line(exc)}"


def exit_reason(code: int) -> str:
    """How a process ended, from its exit code (negative: the signal that killed it)."""
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"
