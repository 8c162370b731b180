"""The fine-tuning loop: the tutorial's loop plus clocks.

:func:`fit` prepares the run (:mod:`harness.prepare`, untimed), warms up, then for each
epoch trains (:func:`train_epoch`: forward, backward, clip, step, schedule, zero grads)
and evaluates (:func:`evaluate_epoch`), and returns the run's record
(:class:`harness.record.RunRecord`). No hook is called and nothing is synchronised with
the host inside a step, so the clock measures the model, not the harness: the loss is
summed on the device and read once per epoch, token counts are host integers, and the
only other thing a step does is ``progress.advance()``, which counts (a display draws the
count from its own thread).
"""

from __future__ import annotations

import time
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from harness import metrics as metric_lib
from harness.measure import Clock, environment, peak_memory_bytes, reset_peak_memory, train_flops
from harness.prepare import Prepared, autocast, prepare, seed_everything
from harness.record import RunRecord
from harness.suite import ResolvedRun


class Progress(Protocol):
    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None: ...
    def advance(self, steps: int = 1) -> None: ...
    def end_epoch(self, summary: dict[str, Any]) -> None: ...


class NullProgress:
    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        pass

    def advance(self, steps: int = 1) -> None:
        pass

    def end_epoch(self, summary: dict[str, Any]) -> None:
        pass


def _step(p: Prepared, batch) -> torch.Tensor:
    """Forward and backward of one batch (already on the device); the loss, still on it."""
    with autocast(p.device, p.precision):
        logits = p.forward(batch.input_ids, batch.attention_mask, batch.token_type_ids)
    loss = F.cross_entropy(logits.float(), batch.labels)
    p.scaler.scale(loss).backward()
    return loss


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


def train_epoch(p: Prepared, epoch: int, progress: Progress) -> dict[str, Any]:
    """One epoch of training, timed; its measurements (the record's epoch fields but the
    evaluation's). ``epoch`` is 0-based."""
    cfg, group = p.run.config, p.group
    batches = p.strategy.batches(p.enc_train, p.batch_size, seed=cfg.seed, epoch=epoch, **group.shard)
    progress.start_epoch(epoch + 1, cfg.epochs, len(batches))
    reset_peak_memory(p.device)
    p.model.train()
    loss_sum = torch.zeros((), device=p.device)
    real = padded = 0
    clock = Clock(p.device)
    clock.start()
    cpu_start = time.process_time()
    for batch in batches:
        loss = _step(p, batch.to(p.device, non_blocking=True))
        if cfg.max_grad_norm is not None:
            p.scaler.unscale_(p.optimizer)
            torch.nn.utils.clip_grad_norm_(p.trainable, cfg.max_grad_norm)
        p.scaler.step(p.optimizer)
        p.scaler.update()
        p.scheduler.step()
        p.optimizer.zero_grad(set_to_none=True)
        loss_sum += loss.detach()
        real += batch.real_tokens
        padded += batch.padded_tokens
        progress.advance()
    # the slowest rank's time; the mean loss and the total tokens of all ranks
    train_seconds = group.max(clock.stop())
    train_cpu_seconds = time.process_time() - cpu_start  # steadier than wall time on a busy machine
    real_total = group.sum(real)
    return {
        "epoch": epoch + 1,
        "train_seconds": train_seconds,
        "train_cpu_seconds": train_cpu_seconds,
        "train_loss": group.mean(float(loss_sum) / max(1, len(batches))),
        "steps": len(batches),
        "real_tokens": real_total,
        "padded_tokens": group.sum(padded),
        "train_flops": _flops(p, real_total),
        "peak_memory_bytes": int(group.max(peak_memory_bytes(p.device))),
    }


def _flops(p: Prepared, real_tokens: int) -> float:
    config = p.model.backbone.config
    seq_tokens = int((p.enc_train.lengths.astype(np.int64) ** 2).sum())
    return train_flops(
        p.model_info["matmul_parameters"], real_tokens, int(getattr(config, "num_hidden_layers", 0)),
        int(getattr(config, "hidden_size", 0)), seq_tokens,
    )


@torch.inference_mode()
def predict(p: Prepared) -> tuple[np.ndarray, np.ndarray]:
    """(labels, predictions) of the evaluated split, in its order; each rank predicts its
    shard, all gather."""
    p.model.eval()
    # start from empty tensors: a rank may have no examples of a tiny split
    preds, order = [torch.empty(0, dtype=torch.long, device=p.device)], [torch.empty(0, dtype=torch.long)]
    for batch in p.strategy.batches(p.enc_eval, p.eval_batch_size, seed=None, **p.group.shard):
        b = batch.to(p.device, non_blocking=True)
        with autocast(p.device, p.precision):
            logits = p.model(b.input_ids, b.attention_mask, b.token_type_ids)
        preds.append(logits.argmax(-1))
        order.append(batch.index)
    predictions = torch.cat(preds).cpu().numpy()
    index, predictions = p.group.gather(torch.cat(order).numpy(), predictions)
    out = np.empty_like(predictions)
    out[index] = predictions
    return p.enc_eval.labels, out


def evaluate_epoch(p: Prepared) -> dict[str, Any]:
    """The evaluation after an epoch, timed apart from training: its seconds and metrics."""
    clock = Clock(p.device)
    clock.start()
    labels, predictions = predict(p)
    seconds = p.group.max(clock.stop())
    return {"eval_seconds": seconds, "metrics": metric_lib.compute(p.dataset.metrics, labels, predictions)}


def fit(run: ResolvedRun, progress: Progress | None = None) -> dict[str, Any]:
    """Fine-tune and evaluate one run; return its record (status ``ok`` or ``diverged``)."""
    progress = progress or NullProgress()
    p = prepare(run)
    warmup_seconds = warm_up(p)
    epochs: list[dict[str, Any]] = []
    diverged = None
    for epoch in range(run.config.epochs):
        measured = train_epoch(p, epoch, progress)
        measured |= evaluate_epoch(p)
        epochs.append(measured)
        progress.end_epoch(measured)
        if not np.isfinite(measured["train_loss"]):
            diverged = f"train loss became {measured['train_loss']} in epoch {epoch + 1}"
            break
    return RunRecord.finished(
        run, started_at=p.started_at, env=environment(p.device), epochs=epochs, diverged=diverged,
        model_info=p.model_info, data=p.data_info(), main_metric=p.dataset.metrics[0],
        warmup_seconds=warmup_seconds, compile_seconds=warmup_seconds if run.config.compile else None,
    ).to_dict()
