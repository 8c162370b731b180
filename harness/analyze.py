"""``harness analyze``: the token-length profile of a dataset under a model's tokenizer.

Everything a user needs to pick MAX_LEN before training: percentiles of the length in
tokens (special tokens included, before truncation), a histogram, the MAX_LEN that covers
95%, 99% and 100% of the examples, and for each MAX_LEN and padding strategy the tokens an
epoch computes on, the share of them that is padding, and the share of examples that get
truncated. The strategies are modelled here from the lengths alone, by name, so the
profile needs no strategy plugin:

- ``fixed``: every example padded to MAX_LEN (the tutorial);
- ``dynamic``: random batches of ``batch_size``, each padded to its longest example;
- ``bucketed``: examples sorted by length and cut into batches, each padded to its longest.

Computation only; :func:`harness.report.print_analysis` renders the result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from pydantic import ValidationError

from harness.errors import HarnessError

STRATEGIES = ("fixed", "dynamic", "bucketed")
DEFAULT_MAX_LENS = (32, 64, 128, 256, 512)
PERCENTILES = (50, 90, 95, 99)
COVERAGE = (0.95, 0.99, 1.0)
#: epochs (random orders) the dynamic strategy's cost is averaged over
DYNAMIC_EPOCHS = 5


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

    def cost(self, strategy: str, max_len: int) -> StrategyCost:
        return next(c for c in self.costs if c.strategy == strategy and c.max_len == max_len)

    def max_lens(self) -> list[int]:
        return sorted({c.max_len for c in self.costs})

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
            "costs": [c.__dict__ | {"waste": c.waste} for c in self.costs],
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


def padded_tokens(lengths: np.ndarray, max_len: int, strategy: str, batch_size: int, seed: int = 0) -> int:
    """Tokens an epoch computes on (real + padding) when ``strategy`` batches these lengths."""
    kept = np.minimum(lengths, max_len)
    n = len(kept)
    if strategy == "fixed":
        return n * max_len
    if strategy == "bucketed":
        return _batched(np.sort(kept), batch_size)
    if strategy == "dynamic":  # the mean over a few epochs' random orders
        totals = [_batched(kept[np.random.default_rng([seed, e]).permutation(n)], batch_size) for e in range(DYNAMIC_EPOCHS)]
        return int(round(float(np.mean(totals))))
    raise HarnessError(f"unknown strategy {strategy!r} for analyze; available: {', '.join(STRATEGIES)}")


def _batched(ordered: np.ndarray, batch_size: int) -> int:
    starts = np.arange(0, len(ordered), batch_size)
    widths = np.maximum.reduceat(ordered, starts)
    sizes = np.diff(np.append(starts, len(ordered)))
    return int((widths * sizes).sum())


def profile(
    lengths: np.ndarray,
    *,
    dataset: str,
    split: str,
    model: str,
    max_lens: Sequence[int] = DEFAULT_MAX_LENS,
    batch_size: int = 32,
    max_positions: int | None = None,
    of: int | None = None,
    seed: int = 0,
) -> Analysis:
    lengths = np.asarray(lengths, dtype=np.int64)
    if len(lengths) == 0:
        raise HarnessError(f"dataset '{dataset}': the {split} split is empty")
    result = Analysis(dataset, split, model, batch_size, lengths, of or len(lengths), max_positions)
    for max_len in sorted(set(max_lens)):
        real = int(np.minimum(lengths, max_len).sum())
        truncated = float((lengths > max_len).mean())
        for strategy in STRATEGIES:
            result.costs.append(
                StrategyCost(strategy, max_len, real, padded_tokens(lengths, max_len, strategy, batch_size, seed), truncated)
            )
    return result


# ----------------------------------------------------------------- from a dataset name


def token_lengths(examples, tokenizer) -> np.ndarray:
    """Tokens per example with the special tokens, untruncated, exactly as the tokenizer
    strategies count them (one definition: :meth:`TokenizerStrategy.encode`)."""
    from harness.base import StrategyOptions, TokenizerStrategy

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
) -> Analysis:
    from pathlib import Path

    from harness.data import DataFiles
    from harness.model import ARCHITECTURES, load_config, load_tokenizer, max_positions
    from harness.plugins import load_registry
    from harness.suite import describe_error
    from harness.train import stratified_subset

    registry = load_registry(plugins, base_dir=Path.cwd())
    entry = registry.get("dataset", name, where="analyze")
    try:
        opts = entry.cls.Options.model_validate(options or {}, context={"base_dir": str(Path.cwd())})
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        raise HarnessError(f"--option {key}: {describe_error(err, entry.cls.Options)}") from None
    dataset = entry.cls(opts, DataFiles(name, data_dir))
    if split not in dataset.splits:
        raise HarnessError(f"dataset '{name}' has no {split} split (it has {', '.join(dataset.splits)})")
    examples = dataset.load(split)
    total = len(examples)
    if subset is not None and subset < total:
        idx = stratified_subset(np.asarray([e.label for e in examples]), subset, seed)
        examples = [examples[i] for i in idx]

    # an architecture name (bert-base, ...) means its uncased WordPiece tokenizer, the embedded one
    init = "random" if model in ARCHITECTURES else "pretrained"
    tokenizer = load_tokenizer(model, init, None)
    limit = max_positions(load_config(model, init))
    lengths = token_lengths(examples, tokenizer)
    chosen = list(max_lens) if max_lens else [m for m in DEFAULT_MAX_LENS if limit is None or m <= limit]
    if limit is not None:
        over = [m for m in chosen if m > limit]
        if over:
            raise HarnessError(f"--max-len {over[0]}: above the model's position limit ({limit}, max_position_embeddings of {model!r})")
    return profile(
        lengths, dataset=name, split=split, model=model, max_lens=chosen, batch_size=batch_size,
        max_positions=limit, of=total, seed=seed,
    )
