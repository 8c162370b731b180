"""``harness calibrate``'s probe: a few warm steps of a run's own model at a spread of shapes.

:func:`probe` prepares a run as training does (:func:`harness.loop.prepare.prepare`: its data,
tokenizer, model, optimizer and precision), then for each shape (B, L) builds a batch of
B of the run's own training examples padded to L (the longest that fit in L, so the
attention mask holds padding as a padded batch does; shorter splits repeat, longer examples
are cut) and steps it: training steps exactly as an epoch takes them
(:func:`harness.loop.train.train_step`) and evaluation batches exactly as an evaluation
computes them (:func:`harness.loop.train.eval_probabilities`), each step between two
device-synchronised clock readings.

The training shapes come in **contexts**, one per largest shape a run computes (its full
batch at its longest padded length), timed one after another from the smallest: the price
of a short step depends on the largest step the process computed before it. On two Zen 5
cores, 20 x 11 steps took 0.061-0.067 s in a probe that had computed 20 x 128 steps and
0.074-0.079 s in one that had computed nothing longer than 32 (the allocator's heap and
thresholds grow with the largest allocation freed and do not shrink back), and the runs of
the main suite whose longest batch was 32-35 tokens ran 10-23% slower than a probe of every
shape after 128-token steps had priced them. A run computes its own largest shape within
its first steps, so each context is timed after that shape and nothing larger, as its runs
are.

Each context is timed in passes: one untimed pass over its shapes (their warm-up), then
``repeats`` timed passes, each one step of every shape. On two CPU cores of a VM the speed
of one shape's steps moved by ±12% from one minute to the next (docs/estimate.md); timed
shape by shape, a slow stretch would land on one shape (a 128-token step measured
0.66-1.26 s across three probes, against 0.82-0.88 s in the epochs) and bend the fitted
curve there; spread over passes, it moves every shape alike. The contexts, though, are
timed one after another (a process's context only grows), so a slow stretch of the machine
can still land on one context, and its runs' predictions move with it (docs/estimate.md).

Before the first pass the probe trains for :data:`SETTLE_SECONDS` on the first context's
middle shape (nothing larger than that context): on two CPU cores the first second or so of
sustained compute ran 1.7 times slower than the rest (a 1024² matmul loop, a fresh process),
and a run's first training step allocates the optimizer's state. What those steps took
beyond their settled price is kept (``start_seconds``): what a run's first epoch pays beyond
its steps' prices (0.3-2.0 s, median 1.2 s, in the main suite's runs on two Zen 5 cores,
mostly in the first ten steps).

The peak memory of a shape is read in the warm-up pass as the run's record reads it
(:func:`harness.loop.measure.peak_memory`), reset before the shape; the warm-up passes go
from the smallest shape to the largest, so a process's resident set, which keeps what the
allocator once held, grows with them and each reading is its shape's (a shape no larger
than one read before is not read).

The weights change as the steps train; nothing is kept. The seconds of :func:`prepare` are
kept too: a run pays them before its first epoch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from harness.config.resolve import ResolvedRun
from harness.loop.measure import Clock, LoadProbe, peak_memory, reset_peak_memory
from harness.loop.prepare import Prepared, prepare
from harness.loop.tokens import Batch, collate
from harness.loop.train import eval_probabilities, train_step
from harness.records.sidefiles import EVAL, TRAIN

Shape = tuple[int, int]
#: untimed training before the first timed step (see the module's docstring)
SETTLE_SECONDS = 2.0


@dataclass
class ProbeResult:
    """What a probe measured: (kind, B, L, seconds, context) per timed step (context: the
    index in ``contexts`` of a training step's, -1 for evaluation), (kind, B, L, bytes) per shape."""

    steps: list[tuple[int, int, int, float, int]] = field(default_factory=list)
    #: each context's largest shape, in the order timed
    contexts: list[Shape] = field(default_factory=list)
    memory: list[tuple[int, int, int, int]] = field(default_factory=list)
    memory_kind: str = ""
    #: other processes' CPU use while the probe timed, in cores on average (None: not readable)
    other_cores: float | None = None
    setup_seconds: float = 0.0
    #: what the first steps after set-up took beyond their settled price (:func:`_settle`)
    start_seconds: float = 0.0
    seconds: float = 0.0  # the whole probe's, set-up included
    parameters: int = 0
    trainable_parameters: int = 0


def probe_batch(p: Prepared, batch_size: int, length: int) -> Batch:
    """``batch_size`` of the run's training examples padded to ``length``: the longest that fit."""
    lengths = p.enc_train.lengths
    fit = np.flatnonzero(lengths <= length)
    if len(fit):
        chosen = fit[np.argsort(lengths[fit], kind="stable")[::-1][:batch_size]]
    else:  # every example is longer: cut the shortest
        chosen = np.argsort(lengths, kind="stable")[:batch_size]
    chosen = np.resize(chosen, batch_size)  # a split smaller than the batch repeats
    return collate(p.enc_train, chosen, length, p.strategy.pad_id)


def _step(p: Prepared, kind: int, batch: Batch) -> float:
    """One training step or evaluation batch of ``batch``, its seconds."""
    clock = Clock(p.device)
    clock.start()
    if kind == TRAIN:
        train_step(p, batch)
    else:
        with torch.inference_mode():
            eval_probabilities(p, batch)
    return clock.stop()


def _time(p: Prepared, kind: int, shapes: Sequence[Shape], repeats: int, out: ProbeResult, context: int = -1) -> None:
    """One warm-up pass over ``shapes`` (smallest first, the peak memory read of each one
    larger than every shape before), then ``repeats`` timed passes (see the module's docstring)."""
    shapes = _smallest_first(shapes)
    batches = [probe_batch(p, *shape).to(p.device) for shape in shapes]
    largest = max((b * l * l for k, b, l, _ in out.memory if k == kind), default=-1)
    for shape, batch in zip(shapes, batches):
        reset_peak_memory(p.device)
        size = _size(shape)[0]
        _step(p, kind, batch)
        if size > largest:
            figures = peak_memory(p.device)
            out.memory.append((kind, shape[0], shape[1], int(figures["peak_memory_bytes"])))
            out.memory_kind = str(figures["peak_memory_kind"])
            largest = size
    for _ in range(repeats):
        for shape, batch in zip(shapes, batches):
            out.steps.append((kind, shape[0], shape[1], _step(p, kind, batch), context))


def _size(shape: Shape) -> tuple[int, Shape]:
    return shape[0] * shape[1] * shape[1], shape


def _smallest_first(shapes: Sequence[Shape]) -> list[Shape]:
    """Each shape once, by B·L² (see the module's docstring: each peak reading is its shape's)."""
    return sorted(set(shapes), key=_size)


def _settle(p: Prepared, shape: Shape, seconds: float) -> float:
    """Train on ``shape`` for ``seconds``; the seconds its steps took beyond the settled price
    (the median of the later half of them): what a run's first steps cost beyond their price."""
    batch = probe_batch(p, *shape).to(p.device)
    clock, taken = Clock(p.device), []
    clock.start()
    while clock.stop() < seconds:
        taken.append(_step(p, TRAIN, batch))
    if len(taken) < 4:
        return 0.0
    settled = float(np.median(taken[len(taken) // 2:]))
    return float(sum(max(0.0, t - settled) for t in taken))


def probe(
    run: ResolvedRun, contexts: Sequence[Sequence[Shape]], evaluation: Sequence[Shape], *, repeats: int = 3,
    eval_repeats: int = 1,
) -> ProbeResult:
    """Time each context's shapes (``contexts``: a list of shapes per context) as training
    steps, from the context of the smallest largest shape on, and ``evaluation`` shapes as
    evaluation batches of ``run``'s configuration, in ``repeats`` and ``eval_repeats`` passes
    after a warm-up pass (see the module's docstring)."""
    started = time.perf_counter()
    out = ProbeResult()
    p = prepare(run)
    out.setup_seconds = time.perf_counter() - started
    out.parameters = sum(x.numel() for x in p.model.parameters())
    out.trainable_parameters = sum(x.numel() for x in p.trainable)
    ordered = sorted((_smallest_first(c) for c in contexts if len(c)), key=lambda c: _size(c[-1]))
    p.model.train()
    if ordered:
        out.start_seconds = _settle(p, ordered[0][len(ordered[0]) // 2], SETTLE_SECONDS)
    load = LoadProbe()
    load.start()
    for index, shapes in enumerate(ordered):
        out.contexts.append(shapes[-1])
        _time(p, TRAIN, shapes, repeats, out, index)
    p.model.eval()
    _time(p, EVAL, evaluation, eval_repeats, out)
    machine, own = load.stop()
    timed = time.perf_counter() - started - out.setup_seconds
    out.other_cores = None if machine is None or timed <= 0 else max(0.0, machine - own) / timed
    out.seconds = time.perf_counter() - started
    return out
