"""Running a suite: check everything first, then each run (N at once with ``--jobs``), resumable.

- Preflight: every run's model config, tokenizer, MAX_LEN and data files are checked
  before the first run starts, so a typo fails in a second, not after an hour.
- Resume: runs whose ``run_id`` is already recorded as finished (``ok``/``diverged``)
  in the output directory are skipped unless ``rerun``.
- Faults: a run that runs out of memory or raises is recorded as ``failed`` with the
  reason (its traceback in ``<out>/logs/<run_id>.log``) and the suite goes on. A
  :class:`HarnessError` (a user mistake) stops the suite. Ctrl-C / SIGTERM abandon the
  runs in flight (all of them with ``--jobs``); every finished run is already on disk, and
  one that finished just as its ``harness run`` was killed is stored by the next
  (:func:`harness.launch.process.orphans`).
"""

from __future__ import annotations

import gc
import signal
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence

import torch

from harness.config.resolve import ResolvedRun
from harness.errors import HarnessError, no_room
from harness.launch import forkserver
from harness.launch.executors import HERE, machine_cores, run_here
from harness.launch.failures import exception_reason
from harness.launch.process import here as here_env
from harness.launch.process import launch, orphans
from harness.loop import distributed
from harness.loop.checkpoints import check_weights, load_config, load_tokenizer, max_positions
from harness.loop.classifier import build_problem
from harness.loop.env import cpu_bf16_native
from harness.loop.measure import BUSY_CORES, LoadProbe
from harness.loop.prepare import load_run_splits, make_dataset
from harness.loop.tokens import SpecialTokens
from harness.loop.train import NullProgress, Progress, fit
from harness.records.record import Parallel, RunRecord, now
from harness.records.store import OnStored, ResultsStore


def preflight(runs: Sequence[ResolvedRun], *, here: bool = True) -> tuple[list[str], str | None]:
    """Fail fast on anything that would fail a run; return the warnings worth a line each, and
    (``here``: the runs train on this machine, whose load is read while the checks run) the
    line that says the machine is busy (:func:`busy_note`), to print right before the first run."""
    checked: dict[tuple, bool] = {}  # data already checked: whether it holds sentence pairs
    warnings: dict[str, None] = {}
    probe = LoadProbe()
    probe.start()
    for run in runs:
        cfg = run.config
        distributed.check(run)
        if cfg.precision == "bf16" and cfg.device == "cpu" and not cpu_bf16_native():
            warnings[
                f"warning: {run.where('precision')}: bf16 on a CPU without bf16 instructions (AVX512-BF16, AMX) "
                "is emulated and slower than fp32; --set precision=auto (fp32 here) or precision=fp32"
            ] = None
        try:
            config = load_config(cfg.model, cfg.init)
            check_weights(cfg.model, cfg.init)
        except HarnessError as exc:
            raise HarnessError(f"{run.where('model')}: {exc}") from None
        problem = build_problem(cfg.model, cfg.init, cfg.attention, run.head.cls, run.head_options)
        if problem is not None:  # a pooler the family lacks, sdpa it has not: before any run
            raise HarnessError(f"{run.where(problem[0])}: {problem[1]}")
        limit = max_positions(config)
        if limit is not None and cfg.max_len > limit:
            raise HarnessError(
                f"{run.where('max_len')}: MAX_LEN {cfg.max_len} is above the model's position limit "
                f"({limit}, max_position_embeddings of {cfg.model!r})"
            )
        try:
            tok = load_tokenizer(cfg.model, cfg.init, cfg.tokenizer)
        except HarnessError as exc:
            raise HarnessError(f"{run.where('tokenizer' if cfg.tokenizer else 'model')}: {exc}") from None
        data_key = (cfg.dataset.model_dump_json(), str(run.base_dir), cfg.data_dir, cfg.eval_split, cfg.test_split)
        if data_key not in checked:
            checked[data_key] = _check_data(run)
        _check_room(run, tok, pairs=checked[data_key])
    return list(warnings), busy_note(probe) if here else None


def busy_note(probe: LoadProbe) -> str | None:
    """A warning when other processes keep the machine busy before the first run starts
    (from :data:`~harness.measure.BUSY_CORES` on: what marks a run ``busy``), with how many
    of its cores they use; None on a quiet machine, or where the load cannot be read."""
    load = probe.other_cores()
    if load is None or load[0] < BUSY_CORES:
        return None
    cores = len(machine_cores())
    return (f"warning: the machine is busy before the suite starts: other processes kept {load[0]:.1f} of its "
            f"{cores} core{'s' if cores != 1 else ''} busy over the last {load[1]:.1f} s; runs measured beside them "
            "are marked busy and their times are not comparable with a quiet machine's")


def _check_data(run: ResolvedRun) -> bool:
    """The run's data can be had and read (its splits carved); whether it holds sentence pairs."""
    cfg = run.config
    dataset = make_dataset(run)
    dataset.check()
    unknown = sorted(set(cfg.target or {}) - set(dataset.metrics))
    if unknown:
        raise HarnessError(
            f"{run.where('target')}: dataset '{cfg.dataset.name}' reports no metric {unknown[0]!r} "
            f"(it reports {', '.join(dataset.metrics)})"
        )
    # read the splits now (and carve): a broken row fails in a second, not after hours of runs
    splits = load_run_splits(run, dataset)
    return any(e.text_pair is not None for split in splits.values() for e in split.examples)


def _check_room(run: ResolvedRun, tok: Any, pairs: bool) -> None:
    """MAX_LEN leaves room for text once the tokenizer's special tokens are in (RoBERTa puts
    four around a pair, BERT three): at least one token of each text."""
    one, two = SpecialTokens.of(tok)
    specials, texts = (two.count, 2) if pairs else (one.count, 1)
    if run.config.max_len < specials + texts:
        raise HarnessError(
            f"{run.where('max_len')}: MAX_LEN {run.config.max_len} leaves no room for the text: the tokenizer of "
            f"{run.config.model!r} adds {specials} special tokens to {'a sentence pair' if pairs else 'a text'}; "
            f"give at least {specials + texts}"
        )


def _free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (and SIGINT, even where a background shell ignores it) stop the suite the way
    Ctrl-C does: KeyboardInterrupt at the next bytecode, the run in flight abandoned."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = {}
    try:
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread
        pass
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def label(run: ResolvedRun, precision: bool = False) -> str:
    """How a run's progress line names it; ``precision``: with its precision (the runs of
    the suite differ in it)."""
    cfg = run.config
    procs = cfg.world_size
    return f"{cfg.dataset.name} {cfg.strategy.name} {cfg.head.name} L={cfg.max_len} seed={cfg.seed}" + (
        f" {cfg.precision}" if precision else ""
    ) + (f" x{procs} processes" if procs > 1 else "")


def labeller(runs: Sequence[ResolvedRun]) -> Callable[[ResolvedRun], str]:
    """:func:`label` for the runs of one suite: with the precision when they differ in it."""
    differ = len({r.config.precision for r in runs}) > 1
    return lambda run: label(run, precision=differ)


class SuiteProgress(Protocol):
    """What :func:`run_suite` tells a display (``harness.render.progress.RichProgress`` is one):
    each run started gets a :class:`~harness.loop.train.Progress` of its own (several at once
    with ``--jobs``), handed back when the run ends."""

    def start_run(self, label: str) -> Progress: ...
    def end_run(self, run: Progress, record: RunRecord | None) -> None: ...
    def skip_run(self) -> None: ...


class NullSuiteProgress:
    def start_run(self, label: str) -> Progress:
        return NullProgress()

    def end_run(self, run: Progress, record: RunRecord | None) -> None:
        pass

    def skip_run(self) -> None:
        pass


class Scheduler(Protocol):
    """Runs a suite's runs as jobs of a scheduler (:class:`harness.launch.slurm.Cluster`)."""

    def run(self, runs: Sequence[ResolvedRun], out_dir: Path, progress: SuiteProgress,
            keep: Callable[[RunRecord], None], *, label: Callable[[ResolvedRun], str],
            suite_name: str | None) -> None: ...


def run_suite(
    runs: Sequence[ResolvedRun], out_dir: Path, *, rerun: bool = False, progress: SuiteProgress | None = None,
    suite_name: str | None = None, isolation: str = "process", on_stored: OnStored | None = None,
    jobs: int = 1, cluster: Scheduler | None = None, predictions: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Run (or skip, when already finished) every run; return their records in suite order.
    ``suite_name`` is recorded with each run (``harness report`` titles its table with it);
    ``progress`` hears of every run, epoch and step; ``isolation``: ``process``,
    each run in a fresh process (:func:`harness.launch.process.launch`), up to ``jobs`` at once
    (:func:`harness.launch.executors.run_here`), or ``none``, in this one; ``cluster``: submit
    them as jobs instead (:mod:`harness.launch.slurm`); ``on_stored`` hears of each record the
    store writes (:func:`harness.records.export.notifier`). The records returned are as stored."""
    store = ResultsStore(out_dir, on_stored=on_stored)
    progress = progress or NullSuiteProgress()
    name = labeller(runs)

    def keep(record: RunRecord, predicted: bool = True) -> None:  # every record of a run this process saw end
        if suite_name:
            record.suite = suite_name
        if predicted and predictions and record.run_id in predictions:
            record.estimate = predictions[record.run_id]
        store.add(record)

    with sigterm_as_interrupt():
        # runs that finished after the harness run that started them was killed
        for spec, record in orphans(out_dir):
            if not store.finished(record.run_id):
                if spec.parallel is not None:
                    record.parallel = spec.parallel.model_copy(update={"beside": None})
                keep(record, predicted=False)  # it trained before this command predicted anything
        pending = [r for r in runs if rerun or not store.finished(r.run_id)]
        for _ in range(len(runs) - len(pending)):
            progress.skip_run()
        if cluster is not None:
            cluster.run(pending, out_dir, progress, keep, label=name, suite_name=suite_name)
        elif isolation == "none":
            for run in pending:
                handle = progress.start_run(name(run))
                record = _train(run, out_dir, handle, isolation)
                if record is not None:  # None: a node of a multi-node run without rank 0 (that node records it)
                    record.parallel = Parallel(executor=HERE, jobs=1, beside=0, threads=torch.get_num_threads(),
                                               cpus=None, gpus=None)
                    keep(record)
                progress.end_run(handle, record)
        else:
            with forkserver.serving(pending):  # each single-process run forked from it, not a new python
                run_here(pending, out_dir, progress, keep, jobs=jobs, label=name)
    # jobs stored their records themselves: the file as it is now
    records = ResultsStore(out_dir).records if cluster is not None else store.records
    return [records[r.run_id] for r in runs if r.run_id in records]


def _train(run: ResolvedRun, out_dir: Path, progress: Progress, isolation: str) -> RunRecord | None:
    """One run's record: from its own process, or trained here (a fault recorded ``failed``)."""
    if isolation == "process" or run.config.world_size > 1:
        return launch(run, out_dir, progress)
    started = now()
    try:
        return fit(run, progress, side_dir=out_dir)
    except (HarnessError, KeyboardInterrupt):
        raise
    except Exception as exc:  # a fault of this run: record it, go on with the suite
        # a full disk: the suite stops in one line (the next runs could not be written either)
        if (full := no_room(exc)) is not None:
            raise full from None
        log = out_dir / "logs" / f"{run.run_id}.log"
        log.parent.mkdir(exist_ok=True)
        log.write_text(traceback.format_exc(), encoding="utf-8")
        return RunRecord.failed(run, exception_reason(exc), started, here_env(run), log=str(log))
    finally:
        _free_memory()
