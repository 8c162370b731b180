"""The untimed set-up of a run: everything the loop needs, ready to step.

:func:`prepare` loads the splits (carved and cut to their subsets, as the run asks),
tokenizes them with the run's strategy, builds the model on its device, and the
optimizer, learning-rate schedule and gradient scaler. None of it is on the clock:
:mod:`harness.loop.train` times only the epochs.
Because set-up and loop are apart, one epoch can be timed on its own (the pytest
fixture's round) and a worker process prepares exactly what a single process would.
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass, field


import numpy as np
import torch

from harness.base import Dataset, Encoded, TokenizerStrategy
from harness.config.resolve import ResolvedRun
from harness.data import DataFiles
from harness.data.splits import SplitData, load_splits
from harness.loop.checkpoints import load_tokenizer
from harness.loop.classifier import Classifier, build_classifier, count_parameters
from harness.loop.distributed import Group, current
from harness.records.record import DataInfo, now


def make_dataset(run: ResolvedRun) -> Dataset:
    """The run's dataset plugin, with its typed options and its files (data directory, cache)."""
    files = DataFiles(run.config.dataset.name, run.config.data_dir)
    return run.dataset.cls(run.dataset_options, files)


def run_splits(run: ResolvedRun) -> list[str]:
    """The splits a run reads: ``train``, its ``eval_split`` and its ``test_split`` (if any)."""
    cfg = run.config
    return list(dict.fromkeys(["train", cfg.eval_split, *([cfg.test_split] if cfg.test_split else [])]))


def load_run_splits(run: ResolvedRun, dataset: Dataset) -> dict[str, SplitData]:
    """The run's splits (:func:`run_splits`), carved (``dataset.validation_from_train``) and
    cut to ``dataset.subset``."""
    ref = run.config.dataset
    return load_splits(dataset, run_splits(run), ref.subset, ref.validation_from_train, name=ref.name)


def make_adamw(params, lr: float, eps: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with the fused kernel where torch has one (CUDA, and the CPU since torch 2.4).

    Same update, one pass over parameters, gradients and moments instead of a dozen
    multi-tensor ops: on two CPU cores the step over MiniLM's 22.7M parameters (half of
    them the word embeddings) drops from about 120 to 20 ms of CPU time.
    """
    try:
        return torch.optim.AdamW(params, lr=lr, eps=eps, weight_decay=weight_decay, fused=True)
    except (RuntimeError, ValueError, TypeError):  # a device or dtype without a fused kernel
        return torch.optim.AdamW(params, lr=lr, eps=eps, weight_decay=weight_decay)


def linear_schedule(warmup_steps: int, total_steps: int):
    """The tutorial's linear decay to 0, after an optional linear warm-up from 0."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / max(1, warmup_steps)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return factor


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision in ("bf16", "fp16"):
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        return torch.autocast(device_type=device.type, dtype=dtype)
    return contextlib.nullcontext()


def _set_matmul_precision(device: torch.device, precision: str) -> None:
    if device.type == "cuda":
        tf32 = precision == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32


@dataclass
class Prepared:
    """A run ready to train: data tokenized, model on its device, optimizer and schedule."""

    run: ResolvedRun
    group: Group  # this process's place in a data-parallel run (rank 0 of 1 otherwise)
    device: torch.device
    dataset: Dataset
    train: SplitData
    held_out: SplitData  # the split evaluated after each epoch (``eval_split``)
    strategy: TokenizerStrategy
    enc_train: Encoded
    enc_eval: Encoded
    model: Classifier
    forward: torch.nn.Module  # the model, wrapped in DDP and/or compiled where asked
    trainable: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    batch_size: int  # this rank's share of the global batch
    eval_batch_size: int  # this rank's
    model_info: dict[str, int]
    started_at: str = field(default_factory=now)
    test: SplitData | None = None  # the split evaluated once after the last epoch (``test_split``)
    enc_test: Encoded | None = None

    @property
    def precision(self) -> str:
        return self.run.config.precision

    def data_info(self) -> DataInfo:
        """The record's ``data``: per split, the examples used, the subset's draw and the carve; the labels."""
        cfg = self.run.config
        tested = {cfg.test_split: self.test.info} if cfg.test_split and self.test is not None else {}
        return DataInfo.model_validate({"train": self.train.info, cfg.eval_split: self.held_out.info, **tested,
                                        "labels": list(self.dataset.labels)})


def prepare(run: ResolvedRun, group: Group | None = None) -> Prepared:
    """Everything untimed, in the order the tutorial does it; the RNG seeded before the model."""
    started_at = now()
    cfg = run.config
    group = group or current()  # under torchrun: this rank's place; else one process
    device = group.device(cfg.device)
    _set_matmul_precision(device, cfg.precision)

    dataset = make_dataset(run)
    splits = load_run_splits(run, dataset)
    train, held_out, test = splits["train"], splits[cfg.eval_split], splits.get(cfg.test_split or "")
    tokenizer = load_tokenizer(cfg.model, cfg.init, cfg.tokenizer)
    strategy = run.strategy.cls(run.strategy_options, tokenizer, cfg.max_len)

    seed_everything(cfg.seed)
    model = build_classifier(cfg.model, cfg.init, cfg.attention, run.head.cls, run.head_options, dataset.num_labels)
    model.to(device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_adamw(trainable, cfg.lr, cfg.adam_eps, cfg.weight_decay)
    batch_size = group.per_rank(cfg.batch_size)  # cfg.batch_size is the global batch
    total_steps = strategy.num_batches(len(train.examples), batch_size, group.world_size) * cfg.epochs
    schedule = linear_schedule(int(cfg.warmup_ratio * total_steps), total_steps)
    forward = group.wrap(model, device)  # DistributedDataParallel when there are several ranks
    return Prepared(
        run=run, group=group, device=device, dataset=dataset, train=train, held_out=held_out,
        strategy=strategy, enc_train=strategy.encode(train.examples), enc_eval=strategy.encode(held_out.examples),
        model=model, forward=torch.compile(forward, dynamic=True) if cfg.compile else forward,
        trainable=trainable, optimizer=optimizer, scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, schedule),
        scaler=torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16"),
        batch_size=batch_size, eval_batch_size=-(-(cfg.eval_batch_size or cfg.batch_size) // group.world_size),
        model_info=count_parameters(model), started_at=started_at,
        test=test, enc_test=strategy.encode(test.examples) if test is not None else None,
    )
