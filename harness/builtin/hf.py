"""``hf``: a Hugging Face ``datasets`` dataset, with no code (the ``hf`` extra).

::

    dataset:
      name: hf
      options:
        path: nyu-mll/glue            # a Hub dataset (read from the local cache offline),
        name: cola                    # its configuration
        text: sentence                # the column with the text
        label: label                  # a ClassLabel column, or a small set of values

    dataset:                          # local files: a builder and data_files
      name: hf
      options:
        path: parquet                 # parquet, csv, json, arrow, text
        data_files: {train: data/train.parquet, validation: data/dev.parquet}
        text: review
        text_pair: null
        label: stars

``path`` is one of: a Hub dataset id (``datasets.load_dataset(path, name)``), a builder
with ``data_files`` (relative to the suite file), or a local folder: a ``save_to_disk``
folder (``datasets.load_from_disk``) or a folder of data files. Label names come from a
``ClassLabel`` feature, else from the values of train (sorted; the same for every split),
unless ``labels`` names them. The harness splits take the dataset's splits that
``splits`` names; only those that exist are offered. Offline (``HF_HUB_OFFLINE``,
``HF_DATASETS_OFFLINE``, ``HARNESS_OFFLINE``, or the Hub unreachable) a Hub dataset is
read from the local cache without a single retry; local folders and files never touch
the network. ``datasets`` is imported only when the data is first opened.
"""

from __future__ import annotations

import functools
import glob
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Iterator, Literal

from pydantic import AfterValidator, Field, PlainSerializer, TypeAdapter, ValidationInfo

from harness import hookimpl
from harness.base import SPLITS, Dataset, Example, LocalPath, Options
from harness.data import OFFLINE_ENV, infer_labels
from harness.data.download import hub_endpoint, hub_offline, hub_reachable
from harness.errors import HarnessError, install_hint, one_line
from harness.stats import metrics as metric_lib

INSTALL = install_hint("hf")
#: ``path`` values that are builders reading ``data_files`` (not Hub ids, not folders)
BUILDERS = ("parquet", "csv", "json", "arrow", "text", "pandas")
#: the dataset's split a harness ``validation`` takes when ``splits.validation`` is not given
VALIDATION_NAMES = ("validation", "valid", "dev", "val")
#: at most this many distinct values of a plain (not ClassLabel) label column become classes
MAX_INFERRED_LABELS = 100

MetricName = Literal[tuple(metric_lib.METRICS)]  # type: ignore[valid-type]
_LOCAL = TypeAdapter(LocalPath)


# ----------------------------------------------------------------------------- options


def _written(value: Any) -> Any:
    """A value as the suite wrote it (paths made absolute remember their written form)."""
    if isinstance(value, dict):
        return {k: _written(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_written(v) for v in value]
    return getattr(value, "written", value)


def _is_local(value: str, info: ValidationInfo) -> bool:
    """A folder or file rather than a Hub id (``name`` or ``owner/name``) or a builder."""
    if value in BUILDERS or "://" in value:
        return False
    if value.startswith((".", "/", "~")) or value.count("/") > 1 or (os.sep != "/" and os.sep in value):
        return True
    base = (info.context or {}).get("base_dir")
    return ((Path(base) if base else Path.cwd()) / value).exists()  # a folder beside the suite wins


def _path(value: str, info: ValidationInfo) -> str:
    return _LOCAL.validate_python(value, context=info.context) if _is_local(value, info) else value


def _data_files(value: Any, info: ValidationInfo) -> Any:
    """Files named relative to the suite file, unless ``path`` is a Hub id (then they name
    files of that repository, as ``datasets`` reads them)."""
    path = info.data.get("path")
    if value is None or (path not in BUILDERS and not hasattr(path, "written")):
        return value
    if isinstance(value, dict):
        return {k: _data_files(v, info) for k, v in value.items()}
    if isinstance(value, list):
        return [_data_files(v, info) for v in value]
    return value if "://" in value else _LOCAL.validate_python(value, context=info.context)


class SplitNames(Options):
    train: str = Field("train", description="the dataset's split the harness trains on")
    validation: str | None = Field(
        None, description="the split evaluated after each epoch; default: the first of "
        f"{', '.join(VALIDATION_NAMES)} that the dataset has"
    )
    test: str | None = Field(
        None, description="the split read with eval_split: test or test_split: test; default: test, when the "
        "dataset has it"
    )


class HfOptions(Options):
    path: Annotated[str, AfterValidator(_path), PlainSerializer(_written, return_type=str)] = Field(
        description="a Hub dataset id (nyu-mll/glue), a builder with data_files (parquet, csv, json, arrow, "
        "text), or a folder (save_to_disk, or data files); folders relative to the suite file"
    )
    name: str | None = Field(None, description="the dataset's configuration (load_dataset's name: cola of glue)")
    data_files: Annotated[
        str | list[str] | dict[str, str | list[str]] | None,
        AfterValidator(_data_files), PlainSerializer(_written),
    ] = Field(None, description="files per split ({train: a.parquet, validation: b.parquet}), or one file or a "
              "list (the train split); relative to the suite file; globs allowed")
    text: str = Field("text", description="the column holding the text")
    text_pair: str | None = Field(None, description="the column holding the second text of a pair")
    label: str = Field("label", description="the label column: a ClassLabel, or a small set of values")
    labels: list[str | int] | None = Field(
        None, min_length=2, description="the label set in class-index order (values compared as text); default: "
        "the ClassLabel's names, else the sorted distinct values of train"
    )
    splits: SplitNames = Field(default_factory=SplitNames, description="the dataset's split for each harness split")
    metrics: list[MetricName] | None = Field(  # type: ignore[valid-type]
        None, min_length=1, description="metric names, the first the main one; default: accuracy, f1 and mcc "
        "for two classes, accuracy and macro_f1 for more"
    )


# ----------------------------------------------------------------------------- loading


def _import_datasets() -> Any:
    try:
        import datasets
    except ImportError:
        raise HarnessError(f"dataset 'hf' needs the Hugging Face `datasets` package: {INSTALL}") from None
    return datasets


def _offline_reason() -> str | None:
    """Why a Hub dataset must come from the local cache; None when the Hub can be asked."""
    offline = hub_offline()
    if offline is None and os.environ.get(OFFLINE_ENV, "").strip().upper() in ("1", "ON", "YES", "TRUE"):
        offline = f"{OFFLINE_ENV}={os.environ[OFFLINE_ENV]}"
    if offline:
        return f"offline mode is on ({offline})"
    return None if hub_reachable() else f"the Hub ({hub_endpoint()}) cannot be reached"


def _cache_dir() -> str | None:
    """The datasets cache as the environment names it now (``datasets`` reads it once, at import)."""
    if os.environ.get("HF_DATASETS_CACHE"):
        return os.environ["HF_DATASETS_CACHE"]
    return str(Path(os.environ["HF_HOME"]) / "datasets") if os.environ.get("HF_HOME") else None


@contextmanager
def _library(datasets: Any, offline: bool) -> Iterator[None]:
    """``datasets`` quiet (no progress bars, no warnings) and, when ``offline``, in offline
    mode whatever the environment said at its import; restored afterwards."""
    import huggingface_hub.constants as hub

    saved = (datasets.config.HF_HUB_OFFLINE, getattr(datasets.config, "HF_DATASETS_OFFLINE", None), hub.HF_HUB_OFFLINE)
    bars_off, verbosity = datasets.utils.are_progress_bars_disabled(), datasets.logging.get_verbosity()
    if offline:
        datasets.config.HF_HUB_OFFLINE = datasets.config.HF_DATASETS_OFFLINE = hub.HF_HUB_OFFLINE = True
    datasets.utils.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, datasets.config.HF_DATASETS_OFFLINE, hub.HF_HUB_OFFLINE = saved
        if not bars_off:
            datasets.utils.enable_progress_bars()
        datasets.logging.set_verbosity(verbosity)


def _flat(data_files: Any) -> list[str]:
    """Every file (or glob) ``data_files`` names."""
    if data_files is None:
        return []
    if isinstance(data_files, str):
        return [data_files]
    values = data_files.values() if isinstance(data_files, dict) else data_files
    return [f for v in values for f in _flat(v)]


def _stamp(paths: list[str]) -> tuple:
    """(file, mtime, size) of every local file behind ``paths`` (files, folders, globs): a
    file rewritten in place is opened anew, not taken from the per-process cache."""
    out = []
    for p in paths:
        if os.path.isdir(p):
            files = glob.glob(os.path.join(glob.escape(p), "**", "*"), recursive=True)
        else:
            files = glob.glob(p) if any(c in p for c in "*?[") else [p]
        for f in sorted(files):
            if os.path.isfile(f):
                st = os.stat(f)
                out.append((f, st.st_mtime_ns, st.st_size))
    return tuple(out)


def _frozen(data_files: Any) -> Any:
    if isinstance(data_files, dict):
        return tuple((k, _frozen(v)) for k, v in data_files.items())
    return tuple(data_files) if isinstance(data_files, list) else data_files


def _thawed(data_files: Any) -> Any:
    if isinstance(data_files, tuple) and data_files and isinstance(data_files[0], tuple):
        return {k: _thawed(v) for k, v in data_files}
    return list(data_files) if isinstance(data_files, tuple) else data_files


@functools.lru_cache(maxsize=8)
def _load(kind: str, path: str, name: str | None, data_files: Any, cache_dir: str | None,
          offline: bool, stamp: tuple) -> dict[str, Any]:
    """The dataset's splits by name, opened once per process for the same source (every run
    of a suite run in this process, and the preflight check, share them)."""
    datasets = _import_datasets()
    with _library(datasets, offline):
        if kind == "disk":
            opened = datasets.load_from_disk(path)
        else:
            opened = datasets.load_dataset(path, name, data_files=_thawed(data_files), cache_dir=cache_dir)
    if isinstance(opened, datasets.Dataset):  # a single Dataset saved to disk: the train split
        return {"train": opened}
    return dict(opened)


# ----------------------------------------------------------------------------- the dataset


@dataclass
class _Opened:
    where: str  # the source, as errors name it
    split_names: dict[str, str]  # harness split -> the dataset's split
    tables: dict[str, Any]  # the dataset's split -> datasets.Dataset
    splits: tuple[str, ...]
    labels: tuple[str, ...]
    metrics: tuple[str, ...]


class _FromData:
    """A member known once the data is open (its splits, label names, metrics); read on the
    class (``harness plugins``), the documented default."""

    def __init__(self, default: tuple[str, ...]) -> None:
        self.default = default

    def __set_name__(self, owner: type, name: str) -> None:
        self.attr = name

    def __get__(self, obj: Any, owner: type | None = None) -> tuple[str, ...]:
        return self.default if obj is None else getattr(obj.opened(), self.attr)


def _label_text(value: Any) -> str | None:
    """A plain label value as text: ``1.0`` (integers stored as floats) reads as ``1``."""
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


class HF(Dataset):
    name = "hf"
    Options = HfOptions
    description = (
        "a Hugging Face `datasets` dataset: the Hub (the local cache offline), parquet/csv/json files, a "
        "save_to_disk folder; more than two classes: accuracy, macro_f1"
    )
    splits = _FromData(SPLITS)  # type: ignore[assignment]
    labels = _FromData(("0", "1"))  # type: ignore[assignment]
    metrics = _FromData(("accuracy", "f1", "mcc"))  # type: ignore[assignment]

    def __init__(self, options: HfOptions, files) -> None:
        super().__init__(options, files)
        self._opened: _Opened | None = None

    def check(self) -> None:
        self.opened()

    # -- opening ---------------------------------------------------------------------

    def _where(self) -> str:
        opts = self.options
        if opts.path in BUILDERS:
            return f"{opts.path} data_files {_written(opts.data_files)}"
        if hasattr(opts.path, "written"):
            return str(opts.path)
        return f"'{opts.path}'" + (f" (config '{opts.name}')" if opts.name else "")

    def _source(self) -> tuple[str, bool]:
        """(kind, offline): disk (save_to_disk), local (files, a folder of files) or hub."""
        opts, where = self.options, self._where()
        if opts.path in BUILDERS:
            if opts.data_files is None:
                raise HarnessError(f"dataset 'hf': path '{opts.path}' reads data_files; give dataset.options.data_files")
            return "local", True
        if not hasattr(opts.path, "written"):
            reason = _offline_reason()
            return "hub", reason is not None
        path = Path(opts.path)
        if path.is_file():
            raise HarnessError(
                f"dataset 'hf': {path} is a file; give the builder and the files: path: {path.suffix.lstrip('.') or 'csv'}, "
                f"data_files: {{train: {opts.path.written}}}"
            )
        if not path.is_dir():
            raise HarnessError(f"dataset 'hf': {where}: no such folder")
        if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
            if opts.name or opts.data_files:
                raise HarnessError(
                    f"dataset 'hf': {where} is a save_to_disk folder: it has no configuration or data_files "
                    "(remove dataset.options.name and data_files)"
                )
            return "disk", True
        return "local", True

    def _tables(self) -> dict[str, Any]:
        opts, where = self.options, self._where()
        kind, offline = self._source()
        local = [str(opts.path)] if kind != "hub" and opts.path not in BUILDERS else []
        local += _flat(opts.data_files) if kind != "hub" else []
        try:
            return _load(kind, str(opts.path), opts.name, _frozen(opts.data_files), _cache_dir(), offline, _stamp(local))
        except HarnessError:
            raise
        except Exception as exc:
            if kind == "hub" and offline and isinstance(exc, (ConnectionError, FileNotFoundError, ValueError)):
                raise HarnessError(self._not_cached(exc)) from None
            raise HarnessError(f"dataset 'hf': cannot load {where}: {type(exc).__name__}: {one_line(exc)}") from None

    def _not_cached(self, exc: Exception) -> str:
        opts = self.options
        args = repr(str(opts.path)) + (f", {opts.name!r}" if opts.name else "")
        cache = _cache_dir() or "~/.cache/huggingface/datasets"
        said = f" (datasets: {one_line(exc)})" if isinstance(exc, ValueError) else ""
        return (
            f"dataset 'hf': {self._where()} is not in the local Hugging Face cache ({cache}) and "
            f"{_offline_reason() or 'offline mode is on'}{said}; get it on a machine with network: "
            f"python -c \"import datasets; datasets.load_dataset({args})\", then copy its HF_HOME "
            "(~/.cache/huggingface) here (or point HF_HOME at the copy), or .save_to_disk(folder) it there and "
            "give that folder as dataset.options.path"
        )

    def _split_names(self, tables: dict[str, Any]) -> dict[str, str]:
        """Harness split -> the dataset's split, for the splits that exist; a split named in
        the options that the dataset lacks, or a missing train split, is an error."""
        chosen, given = {}, self.options.splits
        have = ", ".join(tables) or "none"
        defaults = {"validation": VALIDATION_NAMES, "test": ("test",)}
        for split in SPLITS:
            want = getattr(given, split)
            candidates = [want] if want is not None else defaults[split]
            found = next((c for c in candidates if c in tables), None)
            if found is not None:
                chosen[split] = found
            elif want is not None:
                raise HarnessError(
                    f"dataset 'hf': {self._where()} has no split '{want}' (dataset.options.splits.{split}); "
                    f"its splits: {have}"
                )
        return chosen

    def _check_columns(self, split: str, table: Any) -> None:
        from datasets import ClassLabel, Value

        opts = self.options
        features = table.features
        wanted = {"text": opts.text, "text_pair": opts.text_pair, "label": opts.label}
        for option, column in wanted.items():
            if column is None:
                continue
            if column not in features:
                raise HarnessError(
                    f"dataset 'hf': {self._where()} split '{split}' has no column '{column}' "
                    f"(dataset.options.{option}); its columns: {', '.join(features)}"
                )
            feature = features[column]
            if option != "label" and not (isinstance(feature, Value) and feature.dtype in ("string", "large_string")):
                raise HarnessError(
                    f"dataset 'hf': {self._where()} split '{split}' column '{column}' (dataset.options.{option}) "
                    f"holds {feature}, not text"
                )
            if option == "label" and not isinstance(feature, (ClassLabel, Value)):
                raise HarnessError(
                    f"dataset 'hf': {self._where()} split '{split}' label column '{column}' holds {feature}: one "
                    "class per row is needed (a ClassLabel, or strings or integers)"
                )

    def _label_names(self, split: str, table: Any) -> tuple[str, ...]:
        from datasets import ClassLabel

        opts = self.options
        if opts.labels is not None:
            names = tuple(str(x) for x in opts.labels)
            if len(set(names)) != len(names):
                raise HarnessError(f"dataset 'hf': dataset.options.labels: {list(names)} names a label twice")
            return names
        feature = table.features[opts.label]
        if isinstance(feature, ClassLabel):
            return tuple(feature.names)
        values = {_label_text(v) for v in table.unique(opts.label)} - {None}
        if len(values) > MAX_INFERRED_LABELS:
            raise HarnessError(
                f"dataset 'hf': {self._where()} split '{split}' label column '{opts.label}' is neither a ClassLabel "
                f"nor a small set of values: {len(values):,} distinct values (at most {MAX_INFERRED_LABELS} are taken "
                "as classes; a regression target?); name the classes with dataset.options.labels"
            )
        return infer_labels(values, f"dataset 'hf': {self._where()} split '{split}' label column '{opts.label}'")

    def opened(self) -> _Opened:
        """The data, opened and checked once: splits mapped, columns there, labels named."""
        if self._opened is None:
            tables = self._tables()
            names = self._split_names(tables)
            for split, source in names.items():
                self._check_columns(source, tables[source])
            labels = self._label_names(names["train"], tables[names["train"]])
            default = ("accuracy", "f1", "mcc") if len(labels) == 2 else ("accuracy", "macro_f1")
            metrics = tuple(self.options.metrics) if self.options.metrics else default
            self._opened = _Opened(self._where(), names, tables, tuple(names), labels, metrics)
        return self._opened

    # -- reading ---------------------------------------------------------------------

    def load(self, split: str) -> list[Example]:
        from datasets import ClassLabel

        data, opts = self.opened(), self.options
        source = data.split_names[split]
        table = data.tables[source]
        feature = table.features[opts.label]
        columns = [c for c in (opts.text, opts.text_pair, opts.label) if c is not None]
        rows = table.select_columns(list(dict.fromkeys(columns))).to_dict()
        index = {name: i for i, name in enumerate(data.labels)}
        where = f"dataset 'hf': {data.where} split '{source}'"
        out = []
        pairs = rows[opts.text_pair] if opts.text_pair is not None else None
        for i, (text, raw) in enumerate(zip(rows[opts.text], rows[opts.label])):
            if isinstance(feature, ClassLabel):
                label = feature.names[raw] if raw is not None and 0 <= raw < len(feature.names) else None
                if label is None:
                    raise HarnessError(
                        f"{where} row {i}: label {raw} is no class of the ClassLabel {feature.names} "
                        "(an unlabelled split? GLUE's test splits hold -1)"
                    )
            else:
                label = _label_text(raw)
            if label not in index:
                raise HarnessError(f"{where} row {i}: label {label!r} is not in the label set {list(data.labels)}")
            pair = pairs[i] if pairs is not None else None
            if text is None or (pairs is not None and pair is None):
                column = opts.text if text is None else opts.text_pair
                raise HarnessError(f"{where} row {i}: column '{column}' is empty (null)")
            out.append(Example(text=text, label=index[label], text_pair=pair))
        if not out:
            raise HarnessError(f"{where}: no rows (the {split} split is empty)")
        return out


@hookimpl
def harness_register_datasets(register):
    register(HF)
