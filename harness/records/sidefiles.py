"""A run's side files: what it measured per example and per step, beside ``results.jsonl``.

Two compact numpy archives per run, named by its id, written by the process that trained
it (rank 0) once its last evaluation is done, each atomically (a temporary file, then a
rename), before its record is stored; the record names them (``side_files``, relative to
the results directory):

- ``predictions/<run_id>.npz``: for each evaluated split (the ``eval_split`` after the last
  epoch; the ``test_split`` when there is one), per example in the split's order: its
  ``position``, ``label``, the ``predicted`` class and the class ``probabilities``
  (softmax of the logits, float32), and ``sha256``: 16 hex digits of the SHA-256 of the
  split's texts and labels (:func:`split_sha256`), so that two runs can be checked to have
  seen the same examples. Arrays are named ``<split>.<field>``; ``splits`` lists the splits.
- ``steps/<run_id>.npz``: one row per training step and per batch of each epoch's
  evaluation of the ``eval_split`` (forward only), columns ``kind`` (0 train, 1 eval), ``epoch``, ``step``, ``batch_size``,
  ``padded_len``, ``real_tokens``, ``seconds`` (rank 0's steps; on a GPU from the CUDA
  events read once per epoch, on a CPU ``time.perf_counter``).

A side file is rewritten when its run is run again, as its record is replaced. Readers
(:func:`read_predictions`, :func:`read_steps`) turn a missing or unreadable file into a
one-line :class:`~harness.errors.HarnessError` naming it. numpy only: ``harness report``
and ``harness compare`` read them without torch.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from harness.errors import HarnessError, no_room
from harness.records.store import write_atomically

PREDICTIONS, STEPS = "predictions", "steps"
#: the columns of a steps file, in order
STEP_COLUMNS = ("kind", "epoch", "step", "batch_size", "padded_len", "real_tokens", "seconds")
TRAIN, EVAL = 0, 1


def relative(kind: str, run_id: str) -> str:
    """Where a run's side file of ``kind`` lies, relative to its results directory."""
    return f"{kind}/{run_id}.npz"


def split_sha256(examples: Iterable[Any]) -> str:
    """16 hex digits of the SHA-256 of a split's examples in order: each example's text, its
    pair's text (empty without one) and its label, separated by control characters that no
    text of a split holds as such (unit and record separators)."""
    digest = hashlib.sha256()
    for ex in examples:
        pair = ex.text_pair if ex.text_pair is not None else ""
        digest.update(f"{ex.text}\x1f{pair}\x1f{ex.label}\x1e".encode("utf-8", "surrogatepass"))
    return digest.hexdigest()[:16]


@dataclass
class SplitPredictions:
    """One evaluated split of one run: labels, predicted classes and probabilities, per example."""

    split: str
    sha256: str
    labels: np.ndarray
    predicted: np.ndarray
    probabilities: np.ndarray
    path: Path | None = None  # the file it was read from

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class StepSamples:
    """Every step's shape and seconds, collected while a run trains (host integers and the
    clocks' readings once per epoch: nothing here syncs the device)."""

    rows: list[tuple[int, int, int, int, int, int, float]] = field(default_factory=list)

    def add(self, kind: int, epoch: int, shapes: list[tuple[int, int, int]], seconds: list[float]) -> None:
        """``shapes``: (batch size, padded length, real tokens) of each step, in order."""
        for step, ((size, length, real), s) in enumerate(zip(shapes, seconds)):
            self.rows.append((kind, epoch, step, size, length, real, float(s)))

    def table(self) -> np.ndarray:
        return np.asarray(self.rows, dtype=np.float64).reshape(-1, len(STEP_COLUMNS))


def _write(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """An ``.npz`` archive written whole or not at all (:func:`~harness.records.store.write_atomically`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda f: np.savez_compressed(f, **arrays), f".{path.stem}-")


def write_side_files(
    out_dir: Path, run_id: str, predictions: Iterable[SplitPredictions], steps: StepSamples,
) -> dict[str, str]:
    """Write both side files of a run into ``out_dir``; what its record's ``side_files`` says."""
    arrays: dict[str, np.ndarray] = {}
    names = []
    for sp in predictions:
        names.append(sp.split)
        arrays.update({
            f"{sp.split}.position": np.arange(len(sp), dtype=np.int32),
            f"{sp.split}.label": np.asarray(sp.labels, dtype=np.int32),
            f"{sp.split}.predicted": np.asarray(sp.predicted, dtype=np.int32),
            f"{sp.split}.probabilities": np.asarray(sp.probabilities, dtype=np.float32),
            f"{sp.split}.sha256": np.asarray(sp.sha256),
        })
    arrays["splits"] = np.asarray(names, dtype=str)
    arrays["run_id"] = np.asarray(run_id)
    for path, content in ((out_dir / relative(PREDICTIONS, run_id), arrays),
                          (out_dir / relative(STEPS, run_id), {"columns": np.asarray(STEP_COLUMNS),
                                                               "steps": steps.table(), "run_id": np.asarray(run_id)})):
        try:
            _write(path, content)
        except OSError as exc:  # the run's record is not stored: its run trains again on resume
            exc.filename = str(path)
            raise no_room(exc) or HarnessError(
                f"{path}: cannot write the side file of run {run_id} ({exc.strerror or exc})") from None
    return {PREDICTIONS: relative(PREDICTIONS, run_id), STEPS: relative(STEPS, run_id)}


# ---------------------------------------------------------------------------- reading back


def side_path(folder: Path, record: Mapping[str, Any], kind: str) -> Path | None:
    """The record's side file of ``kind`` in its results directory ``folder``; None when the
    record names none (a run recorded before side files existed, or one that failed)."""
    name = (record.get("side_files") or {}).get(kind)
    return folder / name if isinstance(name, str) else None


def _load(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise HarnessError(f"{path}: no such side file (the record names it; was it moved or deleted?)") from None
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, io.UnsupportedOperation, zlib.error,
            NotImplementedError, RuntimeError) as exc:  # a damaged archive: its data, its method, an "encrypted" flag
        raise HarnessError(f"{path}: not a side file of the harness ({type(exc).__name__}: {exc})") from None


def read_predictions(path: Path) -> dict[str, SplitPredictions]:
    """The evaluated splits of a predictions file, by split name."""
    data = _load(path)
    try:
        out = {}
        for split in (str(s) for s in data["splits"]):
            labels, predicted = data[f"{split}.label"], data[f"{split}.predicted"]
            probabilities = data[f"{split}.probabilities"]
            if not (len(labels) == len(predicted) == len(probabilities)):
                raise ValueError(f"{split}: {len(labels)} labels, {len(predicted)} predictions")
            out[split] = SplitPredictions(split, str(data[f"{split}.sha256"]), labels.astype(np.int64),
                                          predicted.astype(np.int64), probabilities, path)
        return out
    except (KeyError, ValueError, TypeError) as exc:
        raise HarnessError(f"{path}: not a predictions file of the harness ({exc})") from None


def read_steps(path: Path) -> np.ndarray:
    """The steps of a steps file: one row per step, :data:`STEP_COLUMNS`."""
    data = _load(path)
    steps = data.get("steps")
    columns = tuple(str(c) for c in data.get("columns", ()))
    if steps is None or columns != STEP_COLUMNS or steps.ndim != 2 or steps.shape[1] != len(STEP_COLUMNS):
        raise HarnessError(f"{path}: not a steps file of the harness (columns {list(columns)})")
    return steps


def record_predictions(folder: Path, record: Mapping[str, Any], split: str) -> SplitPredictions | None:
    """A record's predictions of ``split``; None when it has no predictions file or the file
    holds no such split."""
    path = side_path(folder, record, PREDICTIONS)
    return None if path is None else read_predictions(path).get(split)


def record_steps(folder: Path, record: Mapping[str, Any]) -> np.ndarray | None:
    path = side_path(folder, record, STEPS)
    return None if path is None else read_steps(path)
