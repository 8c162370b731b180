"""``harness estimate`` and ``harness calibrate``: what every run of a suite will cost, before it runs.

Two halves. The shapes: every run's training epochs, warm-up, evaluations and test
evaluation are batches whose shapes (B, L) follow from its data's token lengths and its
strategy alone: the strategy's own :meth:`~harness.base.TokenizerStrategy.groups` with the
seed and epoch training gives it, then its :meth:`~harness.base.TokenizerStrategy.pad_to`
per batch (:func:`run_shapes`, exactly what :mod:`harness.analyze` costs). The price of a
shape: a calibration of the run's configuration on the machine
(:mod:`harness.records.calibration`, fitted by :mod:`harness.stats.cost`), from a probe of a
few warm steps at a spread of shapes covering those the suite uses (:func:`calibrate`,
:mod:`harness.loop.probe`) or from the steps files of runs already in a results directory
(:func:`calibrate_from_results`); a short step's price depends on the largest step the
process computed before it, so the training steps are priced per context (a run's largest
shape, :func:`context_of`). A run's estimate (:func:`estimate_run`) is the sum of its
shapes' prices in its context, with an interval, plus what a first epoch pays beyond its
steps (a process's first steps), and its peak memory, the largest of its shapes'.

What it assumes: the same machine, software and configuration as the calibration, steady
clocks and no other load. Shapes outside the calibrated range are priced by the fitted
curve and marked (``extrapolated``), never silently; data-parallel runs are not modelled.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from harness.analyze import token_lengths
from harness.config.resolve import ResolvedRun
from harness.data.files import default_cache_dir
from harness.errors import HarnessError
from harness.loop.checkpoints import load_config, load_tokenizer
from harness.loop.env import environment
from harness.loop.measure import BUSY_CORES, memory_limit
from harness.loop.prepare import load_run_splits, make_dataset
from harness.records.calibration import (
    DEFAULT_FILE,
    Calibration,
    find,
    nearest_difference,
    read_calibrations,
    write_calibration,
)
from harness.records.record import Prediction, now
from harness.records.sidefiles import EVAL, TRAIN
from harness.stats import cost

log = logging.getLogger(__name__)

#: lengths probed between the shortest and the longest padded length a group of runs uses
PROBE_LENGTHS = 6
#: a padded length that holds at least this share of a group's training steps is probed exactly
FREQUENT_SHARE = 0.1


def default_calibration_file() -> Path:
    """Where calibrations are kept without ``--calibration``: the harness's cache."""
    return default_cache_dir() / DEFAULT_FILE


# ----------------------------------------------------------------------------- the keys


def machine_key(run: ResolvedRun) -> dict[str, Any]:
    """What a calibration's prices depend on in the machine: the device and its name,
    torch's threads on a CPU, torch's version."""
    return _machine(environment(torch.device(run.config.device)))


def _machine(env: dict[str, Any]) -> dict[str, Any]:
    device = str(env.get("device") or "cpu").split(":")[0]
    return {"device": device, "device_name": env.get("device_name"),
            "threads": env.get("torch_threads") if device == "cpu" else None, "torch": env.get("torch")}


def config_key(run: ResolvedRun) -> dict[str, Any]:
    """What a calibration's prices depend on in the run's configuration (not its data,
    strategy, MAX_LEN, batch sizes or learning rate: those only choose the shapes)."""
    return _config(run.record_config())


def _config(cfg: dict[str, Any]) -> dict[str, Any]:
    """:func:`config_key` of a recorded config (its options filled in, auto resolved)."""
    config = load_config(cfg["model"], cfg.get("init", "pretrained"))
    arch = "{} layers={} hidden={} heads={} intermediate={} vocab={}".format(
        getattr(config, "model_type", "?"), getattr(config, "num_hidden_layers", "?"),
        getattr(config, "hidden_size", "?"), getattr(config, "num_attention_heads", "?"),
        getattr(config, "intermediate_size", "?"), getattr(config, "vocab_size", "?"))
    launcher = cfg.get("launcher") or {}
    return {"model": cfg["model"], "architecture": arch, "precision": cfg.get("precision"),
            "attention": cfg.get("attention"), "compile": bool(cfg.get("compile")),
            "head": {"name": cfg["head"]["name"], "options": cfg["head"].get("options") or {}},
            "clip": cfg.get("max_grad_norm") is not None,
            "world_size": int(launcher.get("nproc", 1)) * int(launcher.get("nnodes", 1))}


# --------------------------------------------------------------------------- the shapes


@dataclass
class RunShapes:
    """The shapes (rows of (B, L)) of everything a run computes."""

    run: ResolvedRun
    epochs: list[np.ndarray]  # each training epoch's steps
    real_tokens: list[int]  # each training epoch's real tokens
    warmup: np.ndarray
    evaluation: np.ndarray  # one evaluation of the eval_split
    test: np.ndarray  # the test_split's one evaluation (empty without one)


class Lengths:
    """Each split's token lengths, untruncated, read and tokenized once per dataset and tokenizer."""

    def __init__(self) -> None:
        self._cache: dict[tuple, dict[str, np.ndarray]] = {}

    def of(self, run: ResolvedRun) -> dict[str, np.ndarray]:
        cfg = run.config
        key = (cfg.dataset.model_dump_json(), str(run.base_dir), cfg.data_dir, cfg.eval_split, cfg.test_split,
               cfg.model, cfg.init, cfg.tokenizer)
        if key not in self._cache:
            tokenizer = load_tokenizer(cfg.model, cfg.init, cfg.tokenizer)
            splits = load_run_splits(run, make_dataset(run))
            self._cache[key] = {name: token_lengths(split.examples, tokenizer) for name, split in splits.items()}
        return self._cache[key]


def _groups(strategy: Any, kept: np.ndarray, batch_size: int, seed: int | None, epoch: int = 0) -> list[np.ndarray]:
    return [g for g in strategy.groups(kept, batch_size, seed=seed, epoch=epoch) if len(g)]


def _shapes(strategy: Any, kept: np.ndarray, groups: Sequence[np.ndarray]) -> np.ndarray:
    """(B, L) of each batch: its size and the strategy's padded length."""
    return np.array([(len(g), int(strategy.pad_to(kept[g]))) for g in groups], dtype=np.int64).reshape(-1, 2)


def run_shapes(run: ResolvedRun, lengths: Lengths) -> RunShapes:
    """Every batch shape of ``run``, as training will make them (see the module's docstring)."""
    cfg = run.config
    if cfg.world_size > 1:
        raise HarnessError(f"{run.where('launcher')}: harness estimate does not model data-parallel runs "
                           f"({cfg.world_size} processes)")
    split_lengths = lengths.of(run)
    tokenizer = load_tokenizer(cfg.model, cfg.init, cfg.tokenizer)
    strategy = run.strategy.cls(run.strategy_options, tokenizer, cfg.max_len)
    # what training hands the strategy: the lengths after truncation to MAX_LEN
    kept = {name: np.minimum(v.astype(np.int64), cfg.max_len) for name, v in split_lengths.items()}
    eval_bs = cfg.eval_batch_size or cfg.batch_size
    train = kept["train"]
    per_epoch = [_groups(strategy, train, cfg.batch_size, cfg.seed, e) for e in range(cfg.epochs)]
    epochs = [_shapes(strategy, train, groups) for groups in per_epoch]
    real = [int(sum(int(train[g].sum()) for g in groups)) for groups in per_epoch]
    warm = max(cfg.warmup_batches, 2 if cfg.compile else 0)

    def evaluated(split: str) -> np.ndarray:
        return _shapes(strategy, kept[split], _groups(strategy, kept[split], eval_bs, None))

    test = evaluated(cfg.test_split) if cfg.test_split else np.zeros((0, 2), dtype=np.int64)
    return RunShapes(run, epochs, real, epochs[0][:warm], evaluated(cfg.eval_split), test)


def largest_shape(rows: np.ndarray) -> tuple[int, int]:
    """The largest of training shapes (rows of (B, L)): the full batch (the most frequent
    batch size) at the longest padded length, what a probe's context is keyed by
    (:mod:`harness.loop.probe`)."""
    rows = np.asarray(rows, dtype=np.int64).reshape(-1, 2)
    return int(Counter(rows[:, 0].tolist()).most_common(1)[0][0]), int(rows[:, 1].max())


def context_of(shapes: RunShapes) -> tuple[int, int]:
    """A run's context: the largest shape its training computes (:func:`largest_shape`)."""
    return largest_shape(np.concatenate(shapes.epochs))


def probe_grid(shapes: Sequence[RunShapes]) -> tuple[list[list[tuple[int, int]]], list[tuple[int, int]]]:
    """The shapes to probe for a group of runs of one configuration: the training shapes of
    each context (the runs of one :func:`context_of`), and the evaluation shapes. Each is
    each batch size the runs use at :data:`PROBE_LENGTHS` lengths spread geometrically from the
    shortest to the longest padded length they use (3 where the runs use at most two, as
    ``fixed`` does; the largest context's from the shortest any run uses, as its curve prices
    the runs no context holds), plus, for training, every length that holds
    :data:`FREQUENT_SHARE` of their steps (MAX_LEN under ``fixed``). An evaluation of sorted
    batches has a length or two per batch, each a tenth of them: the spread alone keeps the
    probe short."""

    def grid(rows: np.ndarray, frequent_too: bool = True, spread: np.ndarray | None = None) -> list[tuple[int, int]]:
        b, _ = largest_shape(rows)  # the full batch; a short last one is priced by B
        lengths = rows[:, 1]
        spread_lengths = lengths if spread is None else spread
        # from at most a quarter of the longest: a curve needs a spread even where one length is used
        low = max(2, min(int(spread_lengths.min()), int(lengths.max()) // 4))
        count = PROBE_LENGTHS if len(np.unique(spread_lengths)) > 2 else 3
        spread = np.geomspace(low, lengths.max(), count).round().astype(int)
        frequent = [length for length, n in Counter(lengths.tolist()).items()
                    if frequent_too and n >= FREQUENT_SHARE * len(lengths)]
        return sorted({(int(b), int(v)) for v in [*spread, *frequent]})

    contexts: dict[tuple[int, int], list[np.ndarray]] = {}
    for s in shapes:
        contexts.setdefault(context_of(s), []).extend(s.epochs)
    evaluation = np.concatenate([s.evaluation for s in shapes] + [s.test for s in shapes if len(s.test)])
    keys = sorted(contexts, key=lambda c: (c[0] * c[1] * c[1], c))
    every = np.concatenate([e for s in shapes for e in s.epochs])[:, 1]
    # the largest context's curve prices the runs no context holds (train): the whole spread
    grids = [grid(np.concatenate(contexts[key]), spread=every if key == keys[-1] else None) for key in keys]
    return grids, grid(evaluation, frequent_too=False)


# ------------------------------------------------------------------------- calibrating


def fit_calibration(
    machine: dict[str, Any], config: dict[str, Any], steps: Sequence[tuple[int, int, int, float, int]],
    memory: Sequence[tuple[int, int, int, int]], *, memory_kind: str, setup_seconds: float, parameters: int,
    source: str, contexts: Sequence[tuple[int, int]] = (), pooled: int | None = None, first_epoch_seconds: float = 0.0,
    probe_seconds: float | None = None, device_memory_bytes: int | None = None, other_cores: float | None = None,
) -> Calibration:
    """A calibration fitted on (kind, B, L, seconds, context) steps and (kind, B, L, bytes)
    peaks. ``contexts``: the largest shape of each context (a training step's ``context``
    indexes it); each context that has shapes enough for a curve gets its own
    (:meth:`Calibration.train_for`). ``train`` is the curve of the steps of ``pooled``: the
    largest context's, or with ``pooled`` None every training step's."""
    fits = {}
    train_rows = [(b, l, s, c) for k, b, l, s, c in steps if k == TRAIN]
    by_context = []
    for index, largest in enumerate(contexts):
        try:
            by_context.append((tuple(largest), cost.fit([(b, l, s) for b, l, s, c in train_rows if c == index])))
        except ValueError:  # too few shapes in it: its runs are priced by a larger context's curve, or train
            continue
    for kind, name in ((TRAIN, "training"), (EVAL, "evaluation")):
        rows = [(b, l, s) for k, b, l, s, c in steps if k == kind and (kind == EVAL or pooled is None or c == pooled)]
        try:
            fits[kind] = cost.fit(rows)
        except ValueError as exc:
            raise HarnessError(f"{source}: cannot fit the {name} steps' cost: {exc}") from None
    # the training steps' peaks: on a CPU the resident set keeps what training once held, so
    # an evaluation's reading after them says nothing of its own (and it needs less)
    train_memory = [(b, l, float(v)) for k, b, l, v in memory if k == TRAIN]
    # the attention's quadratic term where there are shapes enough for it (4), else a line
    forms = cost.MEMORY_FORMS if len({(b, l) for b, l, _ in train_memory}) > 3 else cost.FORMS
    try:
        mem = cost.fit(train_memory, forms=forms) if train_memory else None
    except ValueError:  # too few shapes for a memory curve: none, said where it is shown
        mem = None
    return Calibration(
        machine=machine, config=config, train=fits[TRAIN], eval=fits[EVAL], memory=mem, memory_kind=memory_kind,
        contexts=by_context, first_epoch_seconds=first_epoch_seconds,
        setup_seconds=setup_seconds, parameters=parameters, measured_at=now(), source=source,
        probe_seconds=probe_seconds, device_memory_bytes=device_memory_bytes, other_cores=other_cores,
        samples={"steps": [list(s) for s in steps], "memory": [list(m) for m in memory]},
    )


def calibrate(run: ResolvedRun, shapes: Sequence[RunShapes]) -> Calibration:
    """Probe ``run``'s configuration at the shapes ``shapes`` use (:func:`probe_grid`)."""
    from harness.loop.probe import probe  # here: it builds models (torch), only when a probe runs

    contexts, evaluation = probe_grid(shapes)
    measured = probe(run, contexts, evaluation)
    return fit_calibration(
        machine_key(run), config_key(run), measured.steps, measured.memory, memory_kind=measured.memory_kind,
        setup_seconds=measured.setup_seconds, parameters=measured.parameters, source="probe",
        contexts=measured.contexts, pooled=len(measured.contexts) - 1, first_epoch_seconds=measured.start_seconds,
        probe_seconds=measured.seconds, device_memory_bytes=memory_limit(torch.device(run.config.device)),
        other_cores=measured.other_cores,
    )


def calibrate_from_results(folder: Path) -> list[Calibration]:
    """Calibrations fitted on the steps files of the finished runs of a results directory,
    one per (machine, configuration) of their records; each epoch's peak memory against its
    largest training shape gives the memory curve."""
    from harness.records.sidefiles import record_steps  # here: numpy archives, read only on request
    from harness.records.store import read_records

    groups: dict[str, dict[str, Any]] = {}
    for record in read_records(folder):
        steps = record_steps(folder, record) if record.get("status") in ("ok", "diverged") else None
        if steps is None:
            continue
        machine, config = _machine(record.get("env") or {}), _config(record["config"])
        group = groups.setdefault(repr((machine, config)), {"machine": machine, "config": config, "steps": [],
                                                            "memory": [], "memory_kind": "", "contexts": [],
                                                            "first": []})
        # columns: kind, epoch, step, batch_size, padded_len, real_tokens, seconds
        trained, context = steps[steps[:, 0] == TRAIN], -1
        if len(trained):  # the run's context
            largest = largest_shape(trained[:, 3:5])
            if largest not in group["contexts"]:
                group["contexts"].append(largest)
            context = group["contexts"].index(largest)
        group["steps"] += [(int(r[0]), int(r[3]), int(r[4]), float(r[6]), context if r[0] == TRAIN else -1)
                           for r in steps]
        sums = [float(trained[trained[:, 1] == e, 6].sum()) for e in np.unique(trained[:, 1])]
        if len(sums) > 1:  # the first epoch beyond the others, in the steps' own seconds
            group["first"].append(max(0.0, sums[0] - float(np.mean(sums[1:]))))
        for e in record.get("epochs") or []:
            train = steps[(steps[:, 0] == TRAIN) & (steps[:, 1] == e["epoch"])]
            if len(train) and e.get("peak_memory_bytes"):
                big = train[np.argmax(train[:, 3] * train[:, 4] ** 2)]
                group["memory"].append((TRAIN, int(big[3]), int(big[4]), int(e["peak_memory_bytes"])))
                group["memory_kind"] = e.get("peak_memory_kind") or ""
    if not groups:
        raise HarnessError(f"{folder}: no finished run with a steps file to calibrate from")
    return [fit_calibration(g["machine"], g["config"], g["steps"], g["memory"], memory_kind=g["memory_kind"],
                            setup_seconds=0.0, parameters=0, source=f"results {folder}", contexts=g["contexts"],
                            first_epoch_seconds=float(np.median(g["first"])) if g["first"] else 0.0)
            for g in groups.values()]


# -------------------------------------------------------------------------- estimating


@dataclass
class RunEstimate:
    """One run's predicted cost; each figure (value, low, high), the interval 95%."""

    run: ResolvedRun
    epoch_seconds: tuple[float, float, float]  # the mean training epoch
    train_seconds: tuple[float, float, float]  # every training epoch
    eval_seconds: tuple[float, float, float]  # one evaluation of the eval_split
    test_seconds: float
    run_seconds: float  # set-up, warm-up, epochs, evaluations and the test split
    tokens_per_second: float
    peak_memory: tuple[float, float, float] | None
    memory_kind: str
    memory_limit: int | None
    calibration: Calibration
    extrapolated: list[str] = field(default_factory=list)  # what lies outside the calibrated range

    @property
    def fits(self) -> bool | None:
        """Whether the predicted peak fits the memory limit (None: no limit, or no memory curve)."""
        if self.peak_memory is None or not self.memory_limit:
            return None
        return self.peak_memory[0] <= self.memory_limit

    def prediction(self) -> Prediction:
        """What ``harness run --estimate`` stores in the run's record."""
        return Prediction(
            epoch_seconds=self.epoch_seconds[0], epoch_seconds_low=self.epoch_seconds[1],
            epoch_seconds_high=self.epoch_seconds[2], eval_seconds=self.eval_seconds[0],
            peak_memory_bytes=None if self.peak_memory is None else int(self.peak_memory[0]),
            memory_kind=self.memory_kind or None, calibration=self.calibration.describe(),
            calibrated_at=self.calibration.measured_at, extrapolated=self.extrapolated or None,
        )


def estimate_run(shapes: RunShapes, calibration: Calibration, limit: int | None = None) -> RunEstimate:
    """The prices of ``shapes`` under ``calibration`` (see the module's docstring)."""
    train_fit, eval_fit = calibration.train_for(context_of(shapes)), calibration.eval
    all_train = np.concatenate(shapes.epochs)
    # the first epoch's extra seconds (the process's first steps) in the sum and the mean
    total = tuple(v + calibration.first_epoch_seconds for v in train_fit.total(all_train))
    n = len(shapes.epochs)
    epoch = (total[0] / n, total[1] / n, total[2] / n)
    evaluation = eval_fit.total(shapes.evaluation)
    test = eval_fit.total(shapes.test)[0]
    warm = train_fit.total(shapes.warmup)[0]
    run_seconds = calibration.setup_seconds + warm + total[0] + n * evaluation[0] + test
    # the training steps' peak: evaluation needs less (no activations kept for a backward pass)
    peak = calibration.memory.peak(all_train) if calibration.memory is not None else None
    extrapolated = []
    for name, fit, rows in (("training", train_fit, all_train), ("evaluation", eval_fit,
                                                                 np.concatenate([shapes.evaluation, shapes.test]))):
        # a batch smaller than those measured (a split's short last one) is priced by the curve's B terms
        if len(rows) and not fit.covers(rows)[1]:
            extrapolated.append(f"{name} L {int(rows[:, 1].min())}-{int(rows[:, 1].max())} "
                                f"(calibrated {fit.lengths[0]}-{fit.lengths[1]})")
        if len(rows) and rows[:, 0].max() > fit.batch_sizes[1]:
            extrapolated.append(f"{name} B up to {int(rows[:, 0].max())} (calibrated {fit.batch_sizes[0]}-"
                                f"{fit.batch_sizes[1]})")
    tokens = sum(shapes.real_tokens) / total[0] if total[0] else 0.0
    return RunEstimate(shapes.run, epoch, total, evaluation, test, run_seconds, tokens, peak,
                       calibration.memory_kind, limit, calibration, extrapolated)


@dataclass
class SuiteEstimate:
    runs: list[RunEstimate]
    #: one line per calibration used: reused, probed (and how long that took), or carried
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0  # what estimating took, probes included

    @property
    def total_seconds(self) -> float:
        return sum(r.run_seconds for r in self.runs)


def groups_of(shapes: Sequence[RunShapes]) -> list[tuple[dict[str, Any], dict[str, Any], list[RunShapes]]]:
    """The runs by calibration key: (machine, configuration, their shapes), in suite order."""
    out: dict[str, tuple[dict[str, Any], dict[str, Any], list[RunShapes]]] = {}
    for s in shapes:
        machine, config = machine_key(s.run), config_key(s.run)
        out.setdefault(repr((machine, config)), (machine, config, []))[2].append(s)
    return list(out.values())


def _probe_group(members: Sequence[RunShapes]) -> Calibration:
    """Probe a group's configuration with its run of the longest MAX_LEN (the longest examples)."""
    contexts, evaluation = probe_grid(members)
    log.info(f"calibrating {len(members)} run{'s' if len(members) != 1 else ''} of {members[0].run.config.model} "
             f"({members[0].run.config.precision}): a probe of {sum(map(len, contexts))} training shapes in "
             f"{len(contexts)} context{'s' if len(contexts) != 1 else ''} and {len(evaluation)} evaluation shapes, "
             "a few warm steps each")
    return calibrate(max(members, key=lambda s: s.run.config.max_len).run, members)


def calibrate_runs(runs: Sequence[ResolvedRun]) -> list[Calibration]:
    """``harness calibrate SUITE``: one probe per configuration of the suite."""
    lengths = Lengths()
    return [_probe_group(members) for _, _, members in groups_of([run_shapes(r, lengths) for r in runs])]


def describe_calibration(c: Calibration) -> list[str]:
    """What a calibration says, a line per curve: its form, error and range."""
    head = f"{c.config['model']} {c.config['precision']} {c.config['head']['name']} head on {c.describe()}"
    probe = f", probed in {c.probe_seconds:.1f} s" if c.probe_seconds else ""
    lines = [f"{head} ({c.source}{probe}):"]
    fallback = "training step, runs no context holds" if c.contexts else "training step"
    curves = [*((f"training step, runs up to {b} x {l}", fit, "s") for (b, l), fit in c.contexts),
              (fallback, c.train, "s"), ("evaluation batch", c.eval, "s"), ("peak memory", c.memory, "B")]
    for name, fit, unit in curves:
        if fit is None:
            lines.append(f"  {name}: no curve (too few shapes)")
            continue
        terms = " + ".join(f"{v:.3g}·{t}" if t != "1" else f"{v:.3g}" for t, v in zip(fit.terms, fit.coef))
        lines.append(f"  {name} = {terms} {unit} (corrected at {fit.shapes} shapes; leave-one-out error "
                     f"{fit.systematic:.1%}, step noise {fit.noise:.1%}; B {fit.batch_sizes[0]}-{fit.batch_sizes[1]}, "
                     f"L {fit.lengths[0]}-{fit.lengths[1]})")
    lines.append(f"  a run's first epoch: {c.first_epoch_seconds:.2f} s beyond its steps' prices")
    return lines


def estimate_suite(
    runs: Sequence[ResolvedRun], *, calibration_file: Path | None = None, probe: bool = True,
    memory_limit_bytes: int | None = None, save: bool = True,
) -> SuiteEstimate:
    """Every run's estimate. A calibration of each run's configuration is taken from
    ``calibration_file`` (default: :func:`default_calibration_file`, this machine's only;
    a file named by the user may be another machine's, whose prices are then predicted);
    where none fits, the configuration is probed (``probe``) and the calibration added to
    the file (``save``), or the run refused in one line."""
    started = time.perf_counter()
    carried = calibration_file is not None
    path = Path(calibration_file) if carried else default_calibration_file()
    known = read_calibrations(path)
    lengths = Lengths()
    shapes = [run_shapes(r, lengths) for r in runs]
    out = SuiteEstimate(runs=[])
    chosen: dict[str, Calibration] = {}
    for machine, config, members in groups_of(shapes):
        found = find(known, machine, config, any_machine=carried)
        if found is None:
            if not probe:
                first = members[0].run
                raise HarnessError(f"{path}: no calibration for the runs of {first.where('model')} "
                                   f"({config['precision']}, {config['head']['name']} head): "
                                   f"{nearest_difference(known, machine, config, any_machine=carried)}; "
                                   "without --no-probe harness estimate measures one")
            found = _probe_group(members)
            out.notes.append(f"calibrated {len(members)} run{'s' if len(members) != 1 else ''} by a "
                             f"{found.probe_seconds:.1f} s probe on {found.describe()}"
                             + (f"; kept in {path}" if save else ""))
            if (found.other_cores or 0.0) >= BUSY_CORES:
                out.notes.append(f"warning: other processes kept {found.other_cores:.1f} cores busy during the probe: "
                                 "its prices are those of a busy machine")
            if save:
                write_calibration(path, found)
        else:
            where = "this machine" if found.machine == machine else "another machine: predicted for it"
            out.notes.append(f"calibration of {found.describe()} from {path} ({found.source}, "
                             f"{found.measured_at}; {where})")
        for s in members:
            chosen[s.run.run_id] = found
    for s in shapes:
        calibration = chosen[s.run.run_id]
        limit = memory_limit_bytes if memory_limit_bytes is not None else calibration.device_memory_bytes
        out.runs.append(estimate_run(s, calibration, limit))
    out.seconds = time.perf_counter() - started
    return out
