"""``harness analyze``: the token-length profile of a dataset under a model's tokenizer.

Everything a user needs to pick MAX_LEN before training: percentiles of the length in
tokens (special tokens included, before truncation), a histogram, the MAX_LEN that covers
95%, 99% and 100% of the examples, and for each MAX_LEN and tokenizer strategy the tokens
an epoch computes on, the share of them that is padding, and the share of examples that
get truncated.

The strategies are not modelled here: every registered strategy (built-in or plugin, or
those named with ``--strategy``) is built with its default options, the tokenizer and the
MAX_LEN, and asked what it does with the truncated lengths, exactly as training asks it:
its own :meth:`~harness.base.TokenizerStrategy.order` with the per-epoch generator
``np.random.default_rng([seed, epoch])``, then its own
:meth:`~harness.base.TokenizerStrategy.pad_to` per batch. The cost is the mean over
:data:`EPOCHS` epochs, so a random order is costed fairly; a deterministic one costs the
same every epoch. A strategy whose options have no defaults cannot be built so and is
listed as skipped.

Computation only; :func:`harness.render.listings.print_analysis` renders the result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from pydantic import ValidationError

from harness.base import StrategyOptions, TokenizerStrategy
from harness.config.resolve import resolve_run
from harness.config.suite import dotted
from harness.data.splits import load_split
from harness.errors import HarnessError
from harness.loop.checkpoints import ARCHITECTURES, load_config, load_tokenizer, max_positions
from harness.loop.prepare import make_dataset
from harness.registry import Registry, load_registry

DEFAULT_MAX_LENS = (32, 64, 128, 256, 512)
PERCENTILES = (50, 90, 95, 99)
COVERAGE = (0.95, 0.99, 1.0)
#: epochs (seeded orders) a strategy's cost is averaged over
EPOCHS = 5
#: the baseline the table compares every strategy with, and shows first
BASELINE = "fixed"

#: builds a strategy, its options and the tokenizer already chosen, for one MAX_LEN
StrategyFactory = Callable[[int], "TokenizerStrategy"]


@dataclass
class StrategyCost:
    strategy: str
    max_len: int
    real_tokens: int  # after truncation, per epoch
    padded_tokens: int  # what the model computes on, per epoch
    truncated: float  # share of examples longer than MAX_LEN

    @property
    def waste(self) -> float:
        return 1.0 - self.real_tokens / self.padded_tokens if self.padded_tokens else 0.0


@dataclass
class Analysis:
    dataset: str
    split: str
    model: str
    batch_size: int
    lengths: np.ndarray  # tokens per example, special tokens included, not truncated
    of: int  # examples in the split before a subset
    max_positions: int | None
    costs: list[StrategyCost] = field(default_factory=list)
    #: the strategies costed, in the order to show them (the baseline first)
    strategies: list[str] = field(default_factory=list)
    #: strategies that could not be costed: name -> why
    skipped: dict[str, str] = field(default_factory=dict)
    #: the MAX_LENs costed (kept apart from ``costs``: with no strategy, still the truncation)
    costed_max_lens: list[int] = field(default_factory=list)

    @property
    def examples(self) -> int:
        return len(self.lengths)

    def percentiles(self) -> dict[str, float]:
        out: dict[str, float] = {"min": int(self.lengths.min())}
        for p in PERCENTILES:
            out[f"p{p}"] = int(np.percentile(self.lengths, p, method="inverted_cdf"))
        out["max"] = int(self.lengths.max())
        out["mean"] = float(self.lengths.mean())
        return out

    def coverage(self) -> dict[float, int]:
        """The smallest MAX_LEN that keeps each share of the examples whole."""
        ordered = np.sort(self.lengths)
        return {q: int(ordered[max(0, math.ceil(q * len(ordered)) - 1)]) for q in COVERAGE}

    def histogram(self, bins: int = 16) -> list[tuple[int, int, int]]:
        return histogram(self.lengths, bins)

    @property
    def baseline(self) -> str | None:
        """The strategy every other is compared with, when it was costed."""
        return BASELINE if BASELINE in self.strategies else None

    def truncated(self, max_len: int) -> float:
        """The share of examples longer than ``max_len``, whatever the strategy."""
        return float((self.lengths > max_len).mean())

    def cost(self, strategy: str, max_len: int) -> StrategyCost:
        return next(c for c in self.costs if c.strategy == strategy and c.max_len == max_len)

    def max_lens(self) -> list[int]:
        return sorted(set(self.costed_max_lens) | {c.max_len for c in self.costs})

    def same_cost_groups(self, strategy: str) -> list[list[int]]:
        """Runs of consecutive MAX_LENs at which ``strategy`` computes the same tokens."""
        groups: list[list[int]] = []
        for m in self.max_lens():
            tokens = self.cost(strategy, m).padded_tokens
            if groups and self.cost(strategy, groups[-1][-1]).padded_tokens == tokens:
                groups[-1].append(m)
            else:
                groups.append([m])
        return [g for g in groups if len(g) > 1]

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset, "split": self.split, "model": self.model, "examples": self.examples,
            "of": self.of, "batch_size": self.batch_size, "percentiles": self.percentiles(),
            "coverage": {f"{int(q * 100)}%": v for q, v in self.coverage().items()},
            "costs": [c.__dict__ | {"waste": c.waste} for c in self.costs], "skipped": dict(self.skipped),
        }


def histogram(lengths: np.ndarray, bins: int = 16) -> list[tuple[int, int, int]]:
    """(low, high, count) per bin of a round width (1, 2, 4, 5, 8, 10, 16, 20, 25, 32, 50, ...)."""
    top, low = int(lengths.max()) + 1, int(lengths.min())
    width = next(w for w in _round_widths() if math.ceil(top / w) - low // w <= bins)
    counts = np.bincount(lengths // width, minlength=math.ceil(top / width))
    first = int(lengths.min()) // width  # no empty bins below the shortest example
    return [(i * width, (i + 1) * width - 1, int(counts[i])) for i in range(first, len(counts))]


def _round_widths():
    scale = 1
    while True:
        for w in (1, 2, 4, 5, 8):
            yield w * scale
        scale *= 10


def padded_tokens(lengths: np.ndarray, strategy: "TokenizerStrategy", batch_size: int, seed: int = 0) -> int:
    """Tokens an epoch computes on (real + padding) when ``strategy`` batches these lengths:
    the mean over :data:`EPOCHS` epochs of the strategy's own order and padding, with the
    generator training gives it (:meth:`~harness.base.TokenizerStrategy.groups`, what
    :meth:`~harness.base.TokenizerStrategy.batches` collates)."""
    # what training hands the strategy: the lengths after truncation to its MAX_LEN
    kept = np.minimum(np.asarray(lengths, dtype=np.int64), strategy.max_len)
    totals = []
    for epoch in range(EPOCHS):
        groups = strategy.groups(kept, batch_size, seed=seed, epoch=epoch)
        totals.append(sum(len(g) * int(strategy.pad_to(kept[g])) for g in groups if len(g)))
    return int(round(float(np.mean(totals))))


def profile(
    lengths: np.ndarray,
    *,
    dataset: str,
    split: str,
    model: str,
    strategies: Mapping[str, StrategyFactory],
    max_lens: Sequence[int] = DEFAULT_MAX_LENS,
    batch_size: int = 32,
    max_positions: int | None = None,
    of: int | None = None,
    seed: int = 0,
    skipped: Mapping[str, str] | None = None,
) -> Analysis:
    """The profile of these lengths, each strategy of ``strategies`` (name -> factory, in
    the order to show them) costed at every MAX_LEN."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if len(lengths) == 0:
        raise HarnessError(f"dataset '{dataset}': the {split} split is empty")
    result = Analysis(
        dataset, split, model, batch_size, lengths, of or len(lengths), max_positions,
        strategies=list(strategies), skipped=dict(skipped or {}), costed_max_lens=sorted(set(max_lens)),
    )
    for max_len in result.costed_max_lens:
        real = int(np.minimum(lengths, max_len).sum())
        truncated = result.truncated(max_len)
        for name, make in strategies.items():
            padded = padded_tokens(lengths, make(max_len), batch_size, seed)
            result.costs.append(StrategyCost(name, max_len, real, padded, truncated))
    return result


def default_strategies(
    registry: "Registry", tokenizer: Any, names: Sequence[str] = ()
) -> tuple[dict[str, StrategyFactory], dict[str, str]]:
    """The registered strategies to cost (all, or ``names``), each with its default options.

    Returns (name -> factory of the strategy for a MAX_LEN), in registry order with the
    baseline first, and (name -> why) for those whose options have no defaults.
    An unknown name is an error with suggestions.
    """
    entries = registry.entries["strategy"]
    for name in names:
        registry.get("strategy", name, where="--strategy")
    chosen = [n for n in entries if not names or n in names]
    chosen.sort(key=lambda n: n != BASELINE)  # stable: the rest keep the registry's order
    factories: dict[str, StrategyFactory] = {}
    skipped: dict[str, str] = {}
    for name in chosen:
        cls = entries[name].cls
        try:
            options = cls.Options()
        except ValidationError as exc:
            required = [f for f, info in cls.Options.model_fields.items() if info.is_required()]
            skipped[name] = (f"options without a default: {', '.join(required)}" if required
                             else f"its default options are invalid: {exc.errors()[0]['msg']}")
            continue
        factories[name] = lambda max_len, _cls=cls, _options=options: _cls(_options, tokenizer, max_len)
    return factories, skipped


# ----------------------------------------------------------------- from a dataset name


def token_lengths(examples, tokenizer) -> np.ndarray:
    """Tokens per example with the special tokens, untruncated, exactly as the tokenizer
    strategies count them (one definition: :meth:`TokenizerStrategy.encode`)."""
    encoder = TokenizerStrategy(StrategyOptions(), tokenizer, max_len=1 << 30)
    return encoder.encode(examples).full_lengths


def analyze_dataset(
    name: str,
    *,
    model: str = "minilm",
    split: str = "train",
    options: dict[str, Any] | None = None,
    max_lens: Sequence[int] | None = None,
    batch_size: int = 32,
    subset: int | None = None,
    seed: int = 0,
    data_dir: str | None = None,
    plugins: Sequence[str] = (),
    strategies: Sequence[str] = (),
) -> Analysis:
    """The profile of a dataset's split; ``strategies``: the strategies to cost (default:
    every registered one)."""
    # an architecture name (bert-base, ...) means its uncased WordPiece tokenizer, the embedded one
    init = "random" if model in ARCHITECTURES else "pretrained"
    registry = load_registry(plugins, base_dir=Path.cwd())
    config: dict[str, Any] = {"model": model, "init": init, "dataset": {"name": name, "options": options or {}},
                              "data_dir": data_dir}
    if subset is not None and split in ("train", "validation", "test"):
        config["dataset"]["subset"] = {split: subset, "seed": seed}
    run = resolve_run(config, registry, Path.cwd(), where=_option_name)
    data = load_split(make_dataset(run), split, run.config.dataset.subset, name=name)
    examples, total = data.examples, data.info["of"]

    tokenizer = load_tokenizer(model, init, None)
    limit = max_positions(load_config(model, init))
    factories, skipped = default_strategies(registry, tokenizer, strategies)
    lengths = token_lengths(examples, tokenizer)
    chosen = list(max_lens) if max_lens else [m for m in DEFAULT_MAX_LENS if limit is None or m <= limit]
    if limit is not None:
        over = [m for m in chosen if m > limit]
        if over:
            raise HarnessError(f"--max-len {over[0]}: above the model's position limit ({limit}, max_position_embeddings of {model!r})")
    return profile(
        lengths, dataset=name, split=split, model=model, max_lens=chosen, batch_size=batch_size,
        max_positions=limit, of=total, seed=seed, strategies=factories, skipped=skipped,
    )


def _option_name(loc: Sequence[Any]) -> str:
    """Where ``harness analyze`` took a key from, for an error: ``--option train``, ``--model``."""
    parts = [str(p) for p in loc]
    if parts[:2] == ["dataset", "name"]:
        return "analyze"
    if parts[:2] == ["dataset", "options"]:
        return f"--option {dotted(parts[2:])}"
    return f"--{parts[0].replace('_', '-')}" if parts else "analyze"
