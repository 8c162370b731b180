"""The fine-tuning loop: the tutorial's loop plus clocks.

:func:`fit` prepares the run (:mod:`harness.loop.prepare`, untimed), warms up, then for each
epoch trains (:func:`train_epoch`: forward, backward, clip, step, schedule, zero grads)
and evaluates (:func:`evaluate_epoch`), and returns the run's record
(:class:`harness.records.record.RunRecord`). No hook is called and nothing is synchronised with
the host inside a step, so the clock measures the model, not the harness: the loss is
summed on the device and read once per epoch, token and example counts are host
integers, the step's time is a mark (a CUDA event recorded, or ``time.perf_counter`` on a
CPU) read once per epoch, and ``progress.advance()`` only counts (a display draws the
count from its own thread).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from harness.config.resolve import ResolvedRun
from harness.loop.checkpoints import model_revision
from harness.loop.env import environment
from harness.loop.measure import (
    BUSY_CORES,
    Clock,
    DeviceMemorySampler,
    LoadProbe,
    StepTimer,
    gpu_other_processes,
    load_average,
    peak_memory,
    reset_peak_memory,
    spread,
    train_flops,
)
from harness.loop.prepare import Prepared, autocast, prepare, seed_everything
from harness.loop.tokens import Encoded
from harness.records.record import Env, EpochRecord, Load, RunRecord, Target
from harness.records.sidefiles import EVAL, TRAIN, SplitPredictions, StepSamples, split_sha256, write_side_files
from harness.stats import metrics as metric_lib


class Progress(Protocol):
    """What the loop tells a display: an epoch starts (its steps), steps are done, it ended."""

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None: ...
    def advance(self, steps: int = 1) -> None: ...
    def end_epoch(self, epoch: EpochRecord) -> None: ...


class NullProgress:
    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        pass

    def advance(self, steps: int = 1) -> None:
        pass

    def end_epoch(self, epoch: EpochRecord) -> None:
        pass


def _step(p: Prepared, batch) -> torch.Tensor:
    """Forward and backward of one batch (already on the device); the loss, still on it."""
    with autocast(p.device, p.precision):
        logits = p.forward(batch.input_ids, batch.attention_mask, batch.token_type_ids)
    loss = F.cross_entropy(logits.float(), batch.labels)
    p.scaler.scale(loss).backward()
    return loss


def train_step(p: Prepared, batch) -> torch.Tensor:
    """One optimizer step on a batch already on the device: forward and backward, clip, step,
    schedule, zero the gradients (what an epoch repeats, and what ``harness calibrate`` times);
    the loss, still on the device."""
    loss = _step(p, batch)
    if p.run.config.max_grad_norm is not None:
        p.scaler.unscale_(p.optimizer)
        torch.nn.utils.clip_grad_norm_(p.trainable, p.run.config.max_grad_norm)
    p.scaler.step(p.optimizer)
    p.scaler.update()
    p.scheduler.step()
    p.optimizer.zero_grad(set_to_none=True)
    return loss


def eval_probabilities(p: Prepared, batch) -> torch.Tensor:
    """The class probabilities of a batch already on the device (forward only, under the
    run's autocast; the caller holds ``torch.inference_mode``)."""
    with autocast(p.device, p.precision):
        logits = p.model(batch.input_ids, batch.attention_mask, batch.token_type_ids)
    return logits.float().softmax(-1)


def warm_up(p: Prepared) -> float:
    """A few untimed forward/backward passes (kernel selection, allocator, compile) that leave
    the weights as they were; the RNG is reseeded after, so results do not depend on them.
    With compile: at least two steps (two bucket lengths), so compilation and the switch to a
    dynamic-shape graph happen here, not in epoch 1. Returns the seconds it took."""
    cfg, group = p.run.config, p.group
    p.model.train()
    n = max(cfg.warmup_batches, 2 if cfg.compile else 0)
    clock = Clock(p.device)
    clock.start()
    for batch in p.strategy.batches(p.enc_train, p.batch_size, seed=cfg.seed, epoch=0, **group.shard)[:n]:
        _step(p, batch.to(p.device))
        p.optimizer.zero_grad(set_to_none=True)
    seconds = group.max(clock.stop()) if n else 0.0
    seed_everything(cfg.seed + group.rank)  # each rank its own dropout
    return seconds


def train_epoch(p: Prepared, epoch: int, progress: Progress, samples: StepSamples | None = None) -> EpochRecord:
    """One epoch of training, timed; its measurements (the record's epoch but the evaluation's,
    which :func:`evaluate_epoch` adds). ``epoch`` is 0-based. ``samples`` gets each step's
    shape and seconds (the steps side file)."""
    cfg, group = p.run.config, p.group
    batches = p.strategy.batches(p.enc_train, p.batch_size, seed=cfg.seed, epoch=epoch, **group.shard)
    progress.start_epoch(epoch + 1, cfg.epochs, len(batches))
    reset_peak_memory(p.device)
    device_memory, load, steps = DeviceMemorySampler(p.device), LoadProbe(), StepTimer(p.device, len(batches))
    p.model.train()
    loss_sum = torch.zeros((), device=p.device)
    real = padded = examples = 0
    shapes: list[tuple[int, int, int]] = []
    clock = Clock(p.device)
    device_memory.start()
    load.start()
    clock.start()
    steps.mark()
    for batch in batches:
        loss = train_step(p, batch.to(p.device, non_blocking=True))
        steps.mark()
        loss_sum += loss.detach()
        real += batch.real_tokens
        padded += batch.padded_tokens
        examples += len(batch.index)
        shapes.append((len(batch.index), batch.input_ids.shape[-1], batch.real_tokens))  # host figures: no sync
        progress.advance()
    # the slowest rank's time; the mean loss and the total tokens of all ranks
    train_seconds = group.max(clock.stop())
    machine_cpu, own_cpu = load.stop()
    real_total = group.sum(real)
    seconds = steps.seconds()
    if samples is not None:
        samples.add(TRAIN, epoch + 1, shapes, seconds)
    return EpochRecord(
        epoch=epoch + 1,
        train_seconds=train_seconds,
        train_cpu_seconds=own_cpu,  # steadier than wall time on a busy machine
        train_loss=group.mean(float(loss_sum) / max(1, len(batches))),
        steps=len(batches),
        samples=group.sum(examples),
        step_seconds=spread(seconds),
        real_tokens=real_total,
        padded_tokens=group.sum(padded),
        train_flops=_flops(p, real_total),
        eval_seconds=0.0,  # evaluate_epoch's
        **_memory(p, device_memory.stop()),
        # the machine's CPU time less every rank's own: what other processes took
        other_cpu_seconds=None if machine_cpu is None else max(0.0, group.max(machine_cpu) - group.sum(own_cpu)),
        **_gpu_neighbours(p),
    )


def _gpu_neighbours(p: Prepared) -> dict[str, int]:
    """On a GPU with NVML: the processes beside the run's own ranks on its device, at the end
    of the epoch (another job's kernels share the device and its memory bandwidth)."""
    if p.device.type != "cuda":  # nothing to ask NVML, and no collective for the ranks' pids
        return {}
    ours = set(p.group.all(os.getpid()))
    others = gpu_other_processes(p.device, ours)
    return {} if others is None else {"gpu_other_processes": int(p.group.max(others))}


def _memory(p: Prepared, device_peak: int | None) -> dict[str, Any]:
    """The epoch's peak memory, the largest over the ranks (and each rank's, when several)."""
    figures = peak_memory(p.device)
    out = {key: (int(p.group.max(value)) if isinstance(value, int) else value) for key, value in figures.items()}
    if p.group.world_size > 1:
        out["peak_memory_bytes_per_rank"] = [int(v) for v in p.group.all(figures["peak_memory_bytes"])]
    if device_peak is not None:
        out["device_peak_memory_bytes"] = int(p.group.max(device_peak))
    return out


def _flops(p: Prepared, real_tokens: int) -> float:
    config = p.model.backbone.config
    seq_tokens = int((p.enc_train.lengths.astype(np.int64) ** 2).sum())
    return train_flops(
        p.model_info["matmul_parameters"], real_tokens, int(getattr(config, "num_hidden_layers", 0)),
        int(getattr(config, "hidden_size", 0)), seq_tokens,
    )


@torch.inference_mode()
def predict(
    p: Prepared, encoded: Encoded | None = None, samples: StepSamples | None = None, epoch: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels, predicted classes, class probabilities) of the evaluated split (``encoded``,
    else the ``eval_split``), in its order; each rank predicts its shard, all gather.
    ``samples`` gets each batch's shape and seconds (forward only), as epoch ``epoch``."""
    encoded = p.enc_eval if encoded is None else encoded
    p.model.eval()
    batches = p.strategy.batches(encoded, p.eval_batch_size, seed=None, **p.group.shard)
    timer, shapes = StepTimer(p.device, len(batches)), []
    # start from empty tensors: a rank may have no examples of a tiny split
    probs, order = [torch.empty(0, p.dataset.num_labels, device=p.device)], [torch.empty(0, dtype=torch.long)]
    timer.mark()
    for batch in batches:
        probs.append(eval_probabilities(p, batch.to(p.device, non_blocking=True)))
        order.append(batch.index)
        timer.mark()
        shapes.append((len(batch.index), batch.input_ids.shape[-1], batch.real_tokens))
    if samples is not None:
        samples.add(EVAL, epoch, shapes, timer.seconds())
    index, gathered = p.group.gather(torch.cat(order).numpy(), torch.cat(probs).cpu().numpy())
    probabilities = np.empty_like(gathered)
    probabilities[index] = gathered
    return encoded.labels, probabilities.argmax(-1), probabilities


def evaluate_epoch(p: Prepared, epoch: EpochRecord, samples: StepSamples | None = None) -> SplitPredictions:
    """The evaluation after an epoch, timed apart from training: adds its seconds and metrics
    to ``epoch``; returns its predictions, for the final score's interval and the side file."""
    clock = Clock(p.device)
    clock.start()
    labels, predictions, probabilities = predict(p, samples=samples, epoch=epoch.epoch)
    epoch.eval_seconds = p.group.max(clock.stop())
    epoch.metrics = metric_lib.compute(p.dataset.metrics, labels, predictions)
    epoch.predicted_classes = int(len(np.unique(predictions)))
    return SplitPredictions(p.run.config.eval_split, "", labels, predictions, probabilities)


def evaluate_test(p: Prepared) -> tuple[dict[str, Any], SplitPredictions | None]:
    """The final evaluation on the ``test_split``, once, after the last epoch (the tutorial's
    final score): its metrics with their bootstrap intervals and its seconds, none of it
    epoch time, and its predictions. Empty and None when the run has no ``test_split``."""
    if p.enc_test is None or p.test is None:
        return {}, None
    clock = Clock(p.device)
    clock.start()
    labels, predictions, probabilities = predict(p, p.enc_test)
    seconds = p.group.max(clock.stop())
    ci = metric_lib.bootstrap_ci(p.dataset.metrics, labels, predictions, seed=p.run.config.seed)
    fields = {
        "test_metrics": metric_lib.compute(p.dataset.metrics, labels, predictions),
        "test_metrics_ci95": {k: list(v) for k, v in ci.items()}, "test_seconds": seconds,
        "test_one_class": bool(len(np.unique(predictions)) == 1),
    }
    return fields, SplitPredictions(str(p.run.config.test_split), split_sha256(p.test.examples), labels, predictions,
                                    probabilities)


def diverged(epoch: EpochRecord) -> str | None:
    """Why a run stops after ``epoch``: its training loss was not finite; else None."""
    loss = epoch.train_loss
    return None if np.isfinite(loss) else f"train loss became {loss} in epoch {epoch.epoch}"


def fit(
    run: ResolvedRun, progress: Progress | None = None, *, isolation: str = "none", side_dir: Path | None = None,
) -> RunRecord:
    """Fine-tune and evaluate one run; return its record (status ``ok`` or ``diverged``).
    ``isolation`` says where it runs: ``process`` (a worker of :mod:`harness.launch.process`) or
    ``none`` (in the caller's process). ``side_dir``: the results directory its side files go
    to (:mod:`harness.records.sidefiles`); None writes none."""
    progress = progress or NullProgress()
    load_before = load_average()
    p = prepare(run)
    warmup_seconds = warm_up(p)
    epochs: list[EpochRecord] = []
    samples = StepSamples()
    for epoch in range(run.config.epochs):
        measured = train_epoch(p, epoch, progress, samples)
        evaluation = evaluate_epoch(p, measured, samples)
        epochs.append(measured)
        progress.end_epoch(measured)
        if diverged(measured):
            break
    return finish(p, epochs, evaluation, warmup_seconds=warmup_seconds, load_before=load_before, isolation=isolation,
                  samples=samples, side_dir=side_dir)


def finish(
    p: Prepared, epochs: list[EpochRecord], evaluation: SplitPredictions, *, warmup_seconds: float,
    load_before: list[float] | None = None, isolation: str = "none", samples: StepSamples | None = None,
    side_dir: Path | None = None,
) -> RunRecord:
    """The record of a run that trained ``epochs``, the last evaluated to ``evaluation``: its
    figures, the machine's load and the final score's interval, and, unless it diverged, the
    final evaluation on its ``test_split`` (:func:`evaluate_test`). With ``side_dir`` (rank 0
    only), the run's side files are written there and named by the record."""
    cfg = p.run.config
    reason = diverged(epochs[-1])
    labels, predictions = evaluation.labels, evaluation.predicted
    ci = None if reason else metric_lib.bootstrap_ci(p.dataset.metrics, labels, predictions, seed=cfg.seed)
    test, tested = ({}, None) if reason else evaluate_test(p)
    side = {}
    if side_dir is not None and p.group.rank == 0:
        evaluation.sha256 = split_sha256(p.held_out.examples)
        side["side_files"] = write_side_files(side_dir, p.run.run_id, [evaluation, *([tested] if tested else [])],
                                              samples or StepSamples())
    return RunRecord.finished(
        p.run, started_at=p.started_at, epochs=epochs, diverged=reason,
        env=Env(**environment(p.device), model_revision=model_revision(cfg.model, cfg.init),
                precision_reason=p.run.precision_reason),
        model_info=p.model_info, data=p.data_info(), main_metric=p.dataset.metrics[0],
        warmup_seconds=warmup_seconds, compile_seconds=warmup_seconds if cfg.compile else None,
        isolation=isolation, metrics_ci95={k: list(v) for k, v in ci.items()} if ci else None,
        one_class=None if reason else epochs[-1].predicted_classes == 1, **test, **side,
        **throughput(epochs), **load_figures(epochs, load_before, load_average()),
        **({"target": time_to_target(epochs, cfg.target)} if cfg.target else {}),
    )


def throughput(epochs: list[EpochRecord]) -> dict[str, float | None]:
    """The Hugging Face Trainer's figures, over the training epochs' own seconds (its
    ``train_runtime`` also counts set-up and evaluation; these do not)."""
    seconds = sum(e.train_seconds for e in epochs)
    flops = [e.train_flops for e in epochs]
    return {
        "train_samples_per_second": sum(e.samples or 0 for e in epochs) / seconds if seconds else None,
        "train_steps_per_second": sum(e.steps for e in epochs) / seconds if seconds else None,
        "total_flos": sum(flops) if flops and all(f is not None for f in flops) else None,
    }


def load_figures(epochs: list[EpochRecord], before: list[float] | None, after: list[float] | None) -> dict[str, Any]:
    """How busy the machine was: other processes' CPU time during the training epochs, in
    seconds and in cores on average; ``busy`` from :data:`~harness.loop.measure.BUSY_CORES` on."""
    other = [e.other_cpu_seconds for e in epochs]
    seconds = sum(e.train_seconds for e in epochs)
    if not other or any(o is None for o in other) or not seconds:
        return {"load": Load(loadavg_before=before, loadavg_after=after), "busy": None}
    gpu = [e.gpu_other_processes for e in epochs if e.gpu_other_processes is not None]
    load = Load(loadavg_before=before, loadavg_after=after, other_cpu_seconds=sum(other),
                other_cores=sum(other) / seconds, **({"gpu_other_processes": max(gpu)} if gpu else {}))
    # the kernel counts CPU time in ticks (10 ms): too short a run cannot be judged
    cpu_busy = load.other_cores >= BUSY_CORES if seconds >= MIN_JUDGED_SECONDS else None
    return {"load": load, "busy": True if gpu and max(gpu) > 0 else cpu_busy}


#: training seconds below which a run's load is not judged (``busy`` null): the machine's
#: CPU time is counted in 10 ms ticks, an error of a few ticks per core
MIN_JUDGED_SECONDS = 0.5


def time_to_target(epochs: list[EpochRecord], target: dict[str, float]) -> Target:
    """MLPerf's measure: the first epoch after which every metric of ``target`` reached its
    threshold, and the training seconds up to its end (evaluation excluded); None if never."""
    elapsed = 0.0
    for e in epochs:
        elapsed += e.train_seconds
        if all(e.metrics.get(name, float("-inf")) >= threshold for name, threshold in target.items()):
            return Target(thresholds=dict(target), reached=True, epoch=e.epoch, train_seconds=elapsed)
    return Target(thresholds=dict(target), reached=False, epoch=None, train_seconds=None)
