"""Paired differences from the runs' side files: ``harness report DIR --vs KEY=VALUE`` and
the paired tests of ``harness compare``.

A row of ``--vs strategy=fixed`` is a configuration (its seeds together) whose ``strategy``
is not ``fixed``; its baseline is the configuration that differs from it in that key alone.
Both were evaluated on the same examples, which their predictions files prove (the split's
SHA-256 of texts and labels); the difference of the main metric and of accuracy, NEW - BASE
(the row minus its baseline), comes from :func:`harness.stats.paired.paired_difference`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from harness.config.suite import parse_set
from harness.errors import HarnessError
from harness.records.sidefiles import SplitPredictions, record_predictions
from harness.records.summary import column_label, config_group, find_key, flatten, main_metric, varied_keys
from harness.stats.paired import PairedDifference, paired_difference

#: the metric every paired table shows besides the main one
ACCURACY = "accuracy"


def folder_of(path: str | Path) -> Path:
    """The results directory of a ``harness report``/``compare`` argument (a directory or its file)."""
    path = Path(path)
    return path if path.is_dir() else path.parent


def eval_split(record: dict[str, Any]) -> str:
    return str((record.get("config") or {}).get("eval_split") or "validation")


def ok_runs(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r.get("status") == "ok"]


def predictions(folder: Path, records: Sequence[dict[str, Any]], split: str | None = None) -> list[SplitPredictions] | None:
    """The predictions of ``split`` (default: each record's ``eval_split``) of each record, in
    order; None when one has none."""
    out = []
    for r in records:
        found = record_predictions(folder, r, split or eval_split(r))
        if found is None:
            return None
        out.append(found)
    return out


def same_examples(named: Sequence[tuple[str, SplitPredictions]]) -> None:
    """Refuse, in one line, predictions of different examples: ``named`` is (who, predictions)."""
    first_who, first = named[0]
    for who, other in named[1:]:
        if other.sha256 != first.sha256 or len(other) != len(first) or other.split != first.split:
            raise HarnessError(
                f"{other.path}: {who} evaluated other examples than {first_who} ({other.split} {len(other)} examples, "
                f"split sha256 {other.sha256}; {first.path}: {first.split} {len(first)} examples, sha256 "
                f"{first.sha256}): their predictions cannot be paired"
            )


def paired(
    metrics: Sequence[str], folder_base: Path, base: Sequence[dict[str, Any]], folder_new: Path,
    new: Sequence[dict[str, Any]], who: tuple[str, str] = ("BASE", "NEW"), split: str | None = None,
) -> dict[str, PairedDifference] | None:
    """NEW - BASE of each of ``metrics`` from the ok runs' predictions of ``split`` (default:
    the ``eval_split``), each file read once; None when a side has no ok run or a run has no
    such predictions. Predictions of different examples are refused."""
    ok_b, ok_n = ok_runs(base), ok_runs(new)
    pb, pn = predictions(folder_base, ok_b, split), predictions(folder_new, ok_n, split)
    if not ok_b or not ok_n or pb is None or pn is None:
        return None
    same_examples([*((f"{who[0]} run {r['run_id']}", p) for r, p in zip(ok_b, pb)),
                   *((f"{who[1]} run {r['run_id']}", p) for r, p in zip(ok_n, pn))])
    return {metric: paired_difference(metric, pb[0].labels, [p.predicted for p in pb], [p.predicted for p in pn])
            for metric in metrics}


# ------------------------------------------------------------------------ report --vs


@dataclass
class VsRow:
    """One configuration against its baseline: the differences of the main metric and accuracy."""

    config: dict[str, Any]
    runs: tuple[int, int]  # (baseline's, the row's)
    differences: dict[str, PairedDifference] = field(default_factory=dict)
    missing: str | None = None  # why there is no difference


@dataclass
class Versus:
    key: str
    value: str
    keys: list[str]  # the columns: the keys that tell the rows apart
    metrics: list[str]
    rows: list[VsRow]
    alpha: float

    def row(self, config: dict[str, Any]) -> VsRow | None:
        """The row of a configuration (its values of :attr:`keys`); None for a baseline."""
        want = [config.get(k) for k in self.keys]
        return next((r for r in self.rows if [r.config.get(k) for k in self.keys] == want), None)


def parse_vs(text: str, records: Sequence[dict[str, Any]]) -> tuple[str, str]:
    """``strategy=fixed`` -> (``strategy.name``, ``fixed``): the flattened config key a table
    column names (:func:`~harness.records.summary.find_key`), and the baseline's value (a YAML
    scalar, as ``--set`` reads it), as its text."""
    ((typed, value),) = parse_set([text], option="--vs", example="strategy=fixed").items()
    key = find_key(typed, records, "--vs")
    values = sorted({str(flatten(r.get("config") or {}).get(key)) for r in records})
    if str(value) not in values:
        raise HarnessError(f"--vs {text}: no run has {typed}={value} (its values here: {', '.join(values)})")
    return key, str(value)


def _but(record: dict[str, Any], key: str) -> str:
    """The record's configuration but ``key`` and the seed; for a plugin's ``<kind>.name``, its
    options go with it (bucketed's ``chunk_batches`` against fixed, which has none)."""
    options = key[: -len("name")] + "options." if key.endswith(".name") else None
    plugin_options = [k for k in flatten(record.get("config") or {}) if options and k.startswith(options)]
    return config_group(record, without=("seed", key, *plugin_options))


def versus(
    records: Sequence[dict[str, Any]], folder: Path, vs: str, alpha: float = 0.05, split: str | None = None,
) -> Versus:
    """Every configuration whose ``KEY`` is not ``VALUE`` against the one that differs from it in
    that key alone (:class:`Versus`), on ``split`` (default: the ``eval_split``)."""
    key, value = parse_vs(vs, records)
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault(config_group(r), []).append(r)
    baselines: dict[str, list[dict[str, Any]]] = {}
    for members in groups.values():
        if str(flatten(members[0].get("config") or {}).get(key)) == value:
            baselines[_but(members[0], key)] = members
    keys = varied_keys(records, exclude=("seed",))
    metric_names = list(dict.fromkeys(m for m in (*(main_metric(r) for r in records), ACCURACY) if m))
    rows = []
    for members in groups.values():
        flat = flatten(members[0].get("config") or {})
        if str(flat.get(key)) == value:
            continue
        base = baselines.get(_but(members[0], key))
        row = VsRow({k: flat.get(k) for k in keys}, (len(base or []), len(members)))
        if base is None:
            row.missing = f"no run with {column_label(key)}={value} and otherwise the same configuration"
        else:
            differences = paired(metric_names, folder, base, folder, members, split=split,
                                 who=(f"{column_label(key)}={value}", f"{column_label(key)}={flat.get(key)}"))
            if differences is None:
                row.missing = "no predictions file for every ok run (recorded before they were kept?)"
            else:
                row.differences = differences
        rows.append(row)
    if not rows:
        raise HarnessError(f"--vs {vs}: every run has {column_label(key)}={value}; nothing to compare with it")
    return Versus(key, value, keys, metric_names, rows, alpha)
