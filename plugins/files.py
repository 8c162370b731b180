"""``files``: your own CSV, TSV or JSON Lines files as a dataset, with no code.

::

    dataset:
      name: files
      options:
        train: data/train.csv          # relative to the suite file
        validation: data/dev.csv
        text: review                   # column (or JSON key) with the text
        text_pair: null                # a second text column for sentence pairs
        label: stars                   # column with the label
        labels: [1, 2, 3, 4, 5]        # the label set (strings or integers); default: inferred
        metrics: [accuracy, macro_f1]
        encoding: latin-1              # default utf-8 (a BOM dropped)

The format follows the file name (``.csv``, ``.tsv``, ``.jsonl``/``.ndjson``) unless
``format`` says otherwise. CSV uses standard double-quote quoting; TSV none (bare
quotes are text, as in the GLUE files), unless ``quoting`` says otherwise. With
``header: false`` columns are 0-based numbers. Files are read as ``encoding`` (any Python
codec name). Every mistake in a file is an error naming the file and line.
"""

from __future__ import annotations

import codecs
import csv
import json
from pathlib import Path
from typing import Iterator, Literal

from pydantic import Field, field_validator
from pydantic_core import PydanticCustomError

from harness import hookimpl
from harness import metrics as metric_lib
from harness.base import Dataset, Example, LocalPath, Options
from harness.data import UTF8, infer_labels, parse_label, read_header, read_jsonl, read_rows, require_rows
from harness.errors import HarnessError

Column = str | int
#: the setting a decoding error tells the user to set
ENCODING_OPTION = "dataset.options.encoding"


class FilesOptions(Options):
    train: LocalPath = Field(description="training file (.csv, .tsv, .jsonl); relative to the suite file")
    validation: LocalPath | None = Field(None, description="validation file (what the loop evaluates each epoch)")
    test: LocalPath | None = Field(None, description="test file (eval_split: test)")
    format: Literal["auto", "csv", "tsv", "jsonl"] = Field("auto", description="auto: from the file name")
    header: bool = Field(True, description="CSV/TSV: the first row names the columns; false: columns are numbers")
    quoting: Literal["auto", "standard", "none"] = Field("auto", description="CSV/TSV quoting; auto: csv standard, tsv none")
    encoding: str = Field(
        UTF8, description="the files' text encoding, any Python codec name: utf-8 (a BOM dropped), latin-1, cp1252, ..."
    )
    text: Column = Field("text", description="column (or JSON key) holding the text")
    text_pair: Column | None = Field(None, description="column holding the second text of a pair")
    label: Column = Field("label", description="column holding the label")
    labels: list[str | int] | None = Field(
        None, description="the label set, in class-index order; default: the sorted distinct labels of train"
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


class Files(Dataset):
    name = "files"
    Options = FilesOptions
    description = "your own CSV / TSV / JSON Lines files: options name the columns, labels and metrics"

    def __init__(self, options: FilesOptions, files) -> None:
        super().__init__(options, files)
        self.metrics = tuple(options.metrics)
        self.splits = tuple(s for s in ("train", "validation", "test") if getattr(options, s))
        self._labels = tuple(str(x) for x in options.labels) if options.labels is not None else None

    @property
    def labels(self) -> tuple[str, ...]:  # type: ignore[override]
        if self._labels is None:
            self._labels = self._infer_labels()
        return self._labels

    # -- files -----------------------------------------------------------------------

    def _path(self, split: str) -> Path:
        return Path(getattr(self.options, split))  # made absolute when the run was resolved

    def _format(self, path: Path) -> str:
        if self.options.format != "auto":
            return self.options.format
        suffix = path.suffix.lower()
        formats = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
        if suffix not in formats:
            raise HarnessError(f"{path}: cannot tell the format from the name; set dataset.options.format (csv, tsv, jsonl)")
        return formats[suffix]

    def check(self) -> None:
        for split in self.splits:
            path = self._path(split)
            if not path.is_file():
                raise HarnessError(f"dataset 'files': {split} file {path} does not exist")
            if self._format(path) != "jsonl":
                self._columns(path)

    def _dialect(self, path: Path) -> tuple[str, int]:
        fmt = self._format(path)
        delimiter = "," if fmt == "csv" else "\t"
        quoting = self.options.quoting
        if quoting == "auto":
            quoting = "standard" if fmt == "csv" else "none"
        return delimiter, csv.QUOTE_MINIMAL if quoting == "standard" else csv.QUOTE_NONE

    def _columns(self, path: Path) -> tuple[int, int, int | None, int]:
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
        return len(header), index(opts.text), pair, index(opts.label)

    def _encoding(self) -> dict[str, str]:
        return {"encoding": self.options.encoding, "encoding_option": ENCODING_OPTION}

    def _raw(self, split: str) -> Iterator[tuple[Path, int, str, str | None, str]]:
        """(file, line, text, pair, label string) for each row of a split."""
        path = self._path(split)
        opts = self.options
        if self._format(path) == "jsonl":
            for line, obj in read_jsonl(path, **self._encoding()):
                def get(key: Column) -> str:
                    if str(key) not in obj:
                        raise HarnessError(f"{path}:{line}: no key {str(key)!r} (keys: {', '.join(obj)})")
                    value = obj[str(key)]
                    if value is None:
                        raise HarnessError(f"{path}:{line}: {str(key)!r} is null")
                    return value if isinstance(value, str) else json.dumps(value)

                pair = get(opts.text_pair) if opts.text_pair is not None else None
                yield path, line, get(opts.text), pair, get(opts.label)
            return
        width, ti, pi, li = self._columns(path)
        delimiter, quoting = self._dialect(path)
        rows = read_rows(path, delimiter=delimiter, quoting=quoting, header=opts.header, columns=width, **self._encoding())
        for line, row in rows:
            yield path, line, row[ti], (row[pi] if pi is not None else None), row[li]

    def _infer_labels(self) -> tuple[str, ...]:
        return infer_labels((label for *_, label in self._raw("train")), str(self._path("train")))

    def load(self, split: str) -> list[Example]:
        labels = self.labels
        out = [
            Example(text=text, text_pair=pair, label=parse_label(label, labels, path, line))
            for path, line, text, pair, label in self._raw(split)
        ]
        return require_rows(out, self._path(split), split)


@hookimpl
def harness_register_datasets(register):
    register(Files)
