"""``files``: your own data as it comes, with no code: tables, plain lines, one file per class.

Three layouts, each read as ``encoding`` (any Python codec name; UTF-8 with a BOM dropped)::

    dataset:                               # a table per split: columns name the text and the label
      name: files
      options: {train: data/train.csv, validation: data/dev.csv, text: review, label: stars}

    dataset:                               # the label inside the line: `DESC:manner How did ...`
      name: files
      options:
        train: trec/train_5500.label
        test: trec/TREC_10.label
        label_in_line: {separator: " ", position: first}   # or {pattern: '(?P<label>...) (?P<text>...)'}
        label_fold: ":"                    # DESC:manner -> DESC (or a mapping, fine label -> coarse)
        encoding: latin-1

    dataset:                               # one file (or folder of files) per class, no splits
      name: files
      validation_from_train: {size: 0.1, seed: 1, by: stratified}
      options:
        classes: {pos: rt-polarity.pos, neg: rt-polarity.neg}   # or a folder: sub-folders or file names
        encoding: cp1252

A split's file is a table (``.csv``, ``.tsv``, ``.jsonl``: ``format`` says otherwise), plain
lines (``format: lines``: one example per line, no quoting rules) or, with ``format: text``,
one example per file. ``train``, ``validation`` and ``test`` may each be one file per class
too (a mapping or a folder), when the data has splits; ``classes`` is the pool of data that
has none, the ``train`` split, from which ``dataset.validation_from_train`` carves. Every
mistake in a file is an error naming the file and line.
"""

from __future__ import annotations

import codecs
import csv
import json
import re
from pathlib import Path
from typing import Iterator, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from harness import hookimpl
from harness.base import SPLITS, Dataset, Example, LocalPath, Options
from harness.data import (
    UTF8, infer_labels, parse_label, read_header, read_jsonl, read_lines, read_rows, read_text, require_rows,
)
from harness.errors import HarnessError
from harness.stats import metrics as metric_lib

Column = str | int
#: the setting a decoding error tells the user to set
ENCODING_OPTION = "dataset.options.encoding"
#: where a split's data is: one file, a folder of class files, or a file (or folder) per class
Source = LocalPath | dict[str, LocalPath]
TABLES = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


class LabelInLine(Options):
    """Where a plain line's label is: split once at ``separator`` (the label first or last), or
    a regular expression with the named groups ``label`` and ``text``."""

    separator: str | None = Field(None, description="split each line once at this (default: a space)")
    position: Literal["first", "last"] = Field(
        "first", description="first: `LABEL text` (split at the first separator); last: `text LABEL` (at the last)"
    )
    pattern: str | None = Field(
        None, description="a regular expression matched against the whole line, with groups (?P<label>...) and "
        "(?P<text>...); instead of separator"
    )

    @field_validator("pattern")
    @classmethod
    def _groups(cls, pattern: str | None) -> str | None:
        if pattern is None:
            return None
        try:
            groups = re.compile(pattern).groupindex
        except re.error as exc:
            raise PydanticCustomError("pattern", "not a regular expression ({why})", {"why": str(exc)}) from None
        missing = [g for g in ("label", "text") if g not in groups]
        if missing:
            raise PydanticCustomError("pattern", "the pattern needs the named group(s) {groups}",
                                      {"groups": ", ".join(f"(?P<{g}>...)" for g in missing)})
        return pattern

    @model_validator(mode="after")
    def _one_rule(self) -> "LabelInLine":
        if self.pattern is not None and self.separator is not None:
            raise PydanticCustomError("rule", "give a separator or a pattern, not both")
        if self.separator == "":
            raise PydanticCustomError("rule", "the separator is empty")
        return self

    def describe(self) -> str:
        if self.pattern is not None:
            return f"pattern {self.pattern!r}"
        sep = repr(self.separator or " ")
        return f"the label, then {sep}, then the text" if self.position == "first" else f"the text, then {sep}, then the label"

    def split(self, line: str) -> tuple[str, str] | None:
        """(label, text) of a line, or None when it does not match."""
        if self.pattern is not None:
            m = re.fullmatch(self.pattern, line)
            return (m.group("label"), m.group("text")) if m else None
        sep = self.separator or " "
        if sep not in line:
            return None
        if self.position == "first":
            label, _, text = line.partition(sep)
        else:
            text, _, label = line.rpartition(sep)
        return (label, text) if label.strip() and text.strip() else None


class FilesOptions(Options):
    train: Source | None = Field(
        None, description="the training data: a file (.csv, .tsv, .jsonl; plain lines with `format: lines` or "
        "`label_in_line`), or one file per class (a mapping class: file, or a folder); relative to the suite "
        "file. Required unless `classes` is given",
    )
    validation: Source | None = Field(None, description="the validation data, as `train` (what the loop evaluates each epoch)")
    test: Source | None = Field(None, description="the test data, as `train` (eval_split or test_split: test)")
    classes: Source | None = Field(
        None, validate_default=True, description="data without splits, one file (or folder of files) per class: a mapping class: file, or "
        "a folder whose sub-folders (or file names) are the classes; it is the train split, and "
        "`dataset.validation_from_train` carves the validation split out of it",
    )
    format: Literal["auto", "csv", "tsv", "jsonl", "lines", "text"] = Field(
        "auto", description="auto: from the file name (plain lines with `label_in_line`, and a class file "
        "whose name is no table's); lines: one example per line, no quoting; text: one example per file"
    )
    header: bool = Field(True, description="CSV/TSV: the first row names the columns; false: columns are numbers")
    quoting: Literal["auto", "standard", "none"] = Field("auto", description="CSV/TSV quoting; auto: csv standard, tsv none")
    encoding: str = Field(
        UTF8, description="the files' text encoding, any Python codec name: utf-8 (a BOM dropped), latin-1, cp1252, ..."
    )
    text: Column = Field("text", description="column (or JSON key) holding the text")
    text_pair: Column | None = Field(None, description="column holding the second text of a pair")
    label: Column = Field("label", description="column holding the label (not read from class files)")
    label_in_line: LabelInLine | None = Field(
        None, description="plain lines holding their label: {separator: ' ', position: first} (`LABEL text`), "
        "{position: last} (`text LABEL`), or {pattern: '(?P<label>...)...(?P<text>...)'}"
    )
    label_fold: str | dict[str, str] | None = Field(
        None, description="fold fine labels into coarse ones: a separator (`:`: `DESC:manner` -> `DESC`, the part "
        "before it), or a mapping fine label: coarse label (labels not in it are kept)"
    )
    labels: list[str | int] | None = Field(
        None, description="the label set, in class-index order; default: the class names (one file per class), "
        "else the sorted distinct labels of train"
    )
    metrics: list[str] = Field(["accuracy"], min_length=1, description="metric names; the first is the main one")

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, names: list[str]) -> list[str]:
        unknown = [n for n in names if n not in metric_lib.METRICS]
        if unknown:
            available = ", ".join(metric_lib.METRICS)
            raise PydanticCustomError("unknown_metric", f"unknown metric {unknown[0]!r}; available: {available}")
        return names

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, encoding: str) -> str:
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise PydanticCustomError("encoding", "unknown encoding (e.g. utf-8, latin-1, cp1252)") from None
        return encoding

    @field_validator("labels")
    @classmethod
    def _distinct_labels(cls, labels: list[str | int] | None) -> list[str | int] | None:
        if labels is not None:
            names = [str(x) for x in labels]
            if len(names) < 2 or len(set(names)) != len(names):
                raise PydanticCustomError("labels", "give at least two distinct labels")
        return labels

    @field_validator("train", "validation", "test", "classes")
    @classmethod
    def _classes_named(cls, source: Source | None) -> Source | None:
        if isinstance(source, dict) and len(source) < 2:
            raise PydanticCustomError("classes", "one file per class needs at least two classes")
        return source

    @field_validator("classes")
    @classmethod
    def _pool_or_splits(cls, classes: Source | None, info: ValidationInfo) -> Source | None:
        given = [s for s in SPLITS if info.data.get(s) is not None]
        if classes is not None and given:
            raise PydanticCustomError("classes", "`classes` is data without splits (the train split); give it or "
                                      "train/validation/test, not both")
        if classes is None and "train" in info.data and info.data["train"] is None:  # (a bad train: its own error)
            raise PydanticCustomError("no_data", "give `train` (a file, or one file per class) or `classes` (data "
                                      "without splits)")
        return classes

    @field_validator("label_in_line")
    @classmethod
    def _lines_only(cls, rule: LabelInLine | None, info: ValidationInfo) -> LabelInLine | None:
        if rule is not None and info.data.get("format", "auto") not in ("auto", "lines"):
            raise PydanticCustomError("format", "label_in_line reads plain lines (format auto or lines), and the "
                                      "format is {format}", {"format": info.data["format"]})
        return rule


class Files(Dataset):
    name = "files"
    Options = FilesOptions
    description = ("your own files with no code: CSV / TSV / JSON Lines tables, plain lines with the label in "
                   "the line, or one file per class")

    def __init__(self, options: FilesOptions, files) -> None:
        super().__init__(options, files)
        self.metrics = tuple(options.metrics)
        self.splits = ("train",) if options.classes is not None else tuple(s for s in SPLITS if getattr(options, s))
        self._labels = tuple(str(x) for x in options.labels) if options.labels is not None else None

    @property
    def labels(self) -> tuple[str, ...]:  # type: ignore[override]
        if self._labels is None:
            self._labels = self._infer_labels()
        return self._labels

    # -- where each split's data is ---------------------------------------------------

    def _key(self, split: str) -> str:
        return "classes" if self.options.classes is not None and split == "train" else split

    def _source(self, split: str) -> Path | dict[str, Path]:
        source = getattr(self.options, self._key(split))  # made absolute when the run was resolved
        return {k: Path(v) for k, v in source.items()} if isinstance(source, dict) else Path(source)

    def _class_files(self, split: str) -> list[tuple[str, list[Path]]] | None:
        """(class, its files) of a split laid out one file (or folder) per class; None for one file."""
        source, key = self._source(split), f"dataset.options.{self._key(split)}"
        if isinstance(source, Path):
            if not source.is_dir():
                return None
            return _folder_classes(source, key)
        out = []
        for name, path in source.items():
            if not path.exists():
                raise HarnessError(f"{key}.{name}: {path}: no such file or folder (the files of class {name!r})")
            out.append((name, _files_in(path, key, name) if path.is_dir() else [path]))
        return out

    def _format(self, path: Path, *, per_class: bool = False) -> str:
        if self.options.format != "auto":
            return self.options.format
        fmt = TABLES.get(path.suffix.lower())
        if self.options.label_in_line is not None or (per_class and fmt is None):
            return "lines"
        if fmt is None:
            raise HarnessError(f"{path}: cannot tell the format from the name; set dataset.options.format "
                               "(csv, tsv, jsonl, lines, text)")
        return fmt

    def check(self) -> None:
        for split in self.splits:
            classes = self._class_files(split)
            if classes is not None:
                for _, paths in classes:
                    for path in paths:
                        if self._format(path, per_class=True) in ("csv", "tsv"):
                            self._columns(path, label=False)
                continue
            path = self._source(split)
            if not path.is_file():
                raise HarnessError(f"dataset 'files': {split} file {path} does not exist")
            fmt = self._format(path)
            if fmt == "lines" and self.options.label_in_line is None:
                raise HarnessError(f"dataset.options.{split}: {path}: plain lines carry no label column; say where "
                                   "the label is (dataset.options.label_in_line) or give one file per class")
            if fmt == "text":
                raise HarnessError(f"dataset.options.{split}: {path}: format text is one example per file, with its "
                                   "class from its folder: give a folder of class folders")
            if fmt in ("csv", "tsv"):
                self._columns(path)

    # -- reading ---------------------------------------------------------------------

    def _dialect(self, path: Path) -> tuple[str, int]:
        fmt = self._format(path, per_class=True)
        delimiter = "," if fmt == "csv" else "\t"
        quoting = self.options.quoting
        if quoting == "auto":
            quoting = "standard" if fmt == "csv" else "none"
        return delimiter, csv.QUOTE_MINIMAL if quoting == "standard" else csv.QUOTE_NONE

    def _columns(self, path: Path, label: bool = True) -> tuple[int, int, int | None, int | None]:
        """(number of columns, text index, pair index, label index) of a CSV/TSV file."""
        delimiter, quoting = self._dialect(path)
        header = read_header(path, delimiter=delimiter, quoting=quoting, **self._encoding())
        opts = self.options

        def index(column: Column) -> int:
            if opts.header:
                if str(column) not in header:
                    raise HarnessError(f"{path}:1: no column {str(column)!r} (columns: {', '.join(header)})")
                return header.index(str(column))
            if not isinstance(column, int) or not 0 <= column < len(header):
                raise HarnessError(
                    f"{path}:1: no column {column!r} (header: false: columns are numbered 0..{len(header) - 1})"
                )
            return column

        pair = index(opts.text_pair) if opts.text_pair is not None else None
        return len(header), index(opts.text), pair, index(opts.label) if label else None

    def _encoding(self) -> dict[str, str]:
        return {"encoding": self.options.encoding, "encoding_option": ENCODING_OPTION}

    def _rows(self, path: Path, fmt: str, label: str | None) -> Iterator[tuple[Path, int, str, str | None, str]]:
        """(file, line, text, pair, label string) of each example in one file; ``label``: the
        class of a class file (no label column read), None to read it from the file."""
        opts = self.options
        if fmt == "text":
            text = read_text(path, **self._encoding()).strip()
            if text:  # an empty file is no example
                yield path, 1, text, None, label or ""
        elif fmt == "lines":
            for line, raw in read_lines(path, **self._encoding()):
                text = raw.rstrip("\r\n")
                if label is None:
                    found = opts.label_in_line.split(text)
                    if found is None:
                        raise HarnessError(f"{path}:{line}: the line does not match dataset.options.label_in_line "
                                           f"({opts.label_in_line.describe()}): {_excerpt(text)}")
                    yield path, line, found[1].strip(), None, found[0]
                else:
                    yield path, line, text.strip(), None, label
        elif fmt == "jsonl":
            for line, obj in read_jsonl(path, **self._encoding()):
                def get(key: Column) -> str:
                    if str(key) not in obj:
                        raise HarnessError(f"{path}:{line}: no key {str(key)!r} (keys: {', '.join(obj)})")
                    value = obj[str(key)]
                    if value is None:
                        raise HarnessError(f"{path}:{line}: {str(key)!r} is null")
                    return value if isinstance(value, str) else json.dumps(value)

                pair = get(opts.text_pair) if opts.text_pair is not None else None
                yield path, line, get(opts.text), pair, label if label is not None else get(opts.label)
        else:
            width, ti, pi, li = self._columns(path, label=label is None)
            delimiter, quoting = self._dialect(path)
            rows = read_rows(path, delimiter=delimiter, quoting=quoting, header=opts.header, columns=width,
                             **self._encoding())
            for line, row in rows:
                yield path, line, row[ti], (row[pi] if pi is not None else None), label if li is None else row[li]

    def _raw(self, split: str) -> Iterator[tuple[Path, int, str, str | None, str]]:
        """(file, line, text, pair, label string, folded by ``label_fold``) of each example of a split."""
        classes = self._class_files(split)
        if classes is None:
            path = self._source(split)
            for where, line, text, pair, label in self._rows(path, self._format(path), None):
                yield where, line, text, pair, self._fold(label)
            return
        for name, paths in classes:
            before = None
            for path in paths:
                for before in self._rows(path, self._format(path, per_class=True), name):
                    yield before[:4] + (self._fold(name),)
            if before is None:
                shown = paths[0] if len(paths) == 1 else paths[0].parent
                raise HarnessError(f"{shown}:1: class {name!r} has no examples (an empty file)" if len(paths) == 1
                                   else f"{shown}: class {name!r} has no examples (its files are empty)")

    def _fold(self, label: str) -> str:
        fold, label = self.options.label_fold, label.strip()
        if fold is None:
            return label
        if isinstance(fold, str):
            return label.split(fold, 1)[0].strip()
        return fold.get(label, label).strip()

    def _infer_labels(self) -> tuple[str, ...]:
        classes = self._class_files("train")
        if classes is not None:
            return tuple(dict.fromkeys(self._fold(name) for name, _ in classes))
        return infer_labels((label for *_, label in self._raw("train")), str(self._source("train")))

    def load(self, split: str) -> list[Example]:
        labels = self.labels
        out = [
            Example(text=text, text_pair=pair, label=parse_label(label, labels, path, line))
            for path, line, text, pair, label in self._raw(split)
        ]
        return require_rows(out, self._source(split), split)  # (a class without examples fails before this)


def _excerpt(text: str, width: int = 60) -> str:
    return repr(text if len(text) <= width else text[:width] + "...")


def _files_in(folder: Path, key: str, name: str) -> list[Path]:
    """The files of one class's folder, sorted (hidden ones left out); an error when there are none."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise HarnessError(f"{key}: {folder}: class {name!r} has no files")
    return files


def _folder_classes(folder: Path, key: str) -> list[tuple[str, list[Path]]]:
    """A folder of classes, sorted by name: its sub-folders (each a class of files), else its
    files, named by their stem (``pos.txt``) or, where the stems are all one (``rt-polarity.pos``,
    ``rt-polarity.neg``), by their suffix."""
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    folders = [p for p in entries if p.is_dir()]
    if folders:
        return [(p.name, _files_in(p, key, p.name)) for p in folders]
    files = [p for p in entries if p.is_file()]
    names = [p.stem for p in files]
    if len(set(names)) != len(names) and len({p.suffix for p in files}) == len(files):
        names = [p.suffix.lstrip(".") for p in files]
    if len(set(names)) != len(names) or len(files) < 2:
        raise HarnessError(f"{key}: {folder}: expected a sub-folder or a file per class (at least two, with "
                           f"distinct names), found {', '.join(p.name for p in entries) or 'nothing'}")
    return sorted(zip(names, ([p] for p in files)))


@hookimpl
def harness_register_datasets(register):
    register(Files)
