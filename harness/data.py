"""Where dataset files come from, and reading them with errors that name file and line.

A dataset asks ``DataFiles.path("raw/in_domain_train.tsv")`` and gets a path from, in
order: the data directory (``data_dir`` in the suite, else ``HARNESS_DATA_DIR``), then
the cache (``HARNESS_CACHE_DIR``, default ``~/.cache/harness``). Both hold one folder per
dataset: ``<dir>/cola/raw/in_domain_train.tsv``.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from harness.errors import HarnessError

DATA_DIR_ENV = "HARNESS_DATA_DIR"
CACHE_DIR_ENV = "HARNESS_CACHE_DIR"


def default_cache_dir() -> Path:
    env = os.environ.get(CACHE_DIR_ENV)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "harness"


@dataclass(frozen=True)
class Source:
    """Where a dataset's files come from: an official archive or file, and its sha256."""

    url: str
    sha256: str
    #: for an archive: the member folder whose contents become the dataset folder
    #: (e.g. ``cola_public/`` for CoLA's zip); None for a single file
    strip_prefix: str | None = None
    #: the file name the download is saved under (default: the last part of the URL)
    filename: str | None = None


class DataFiles:
    """Finds one dataset's files in the data directory or the cache."""

    def __init__(self, dataset: str, data_dir: str | Path | None = None, cache_dir: str | Path | None = None):
        self.dataset = dataset
        env = os.environ.get(DATA_DIR_ENV)
        chosen = data_dir if data_dir is not None else (env or None)
        self.data_dir = Path(chosen).expanduser() if chosen else None
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        #: every file handed out by :meth:`path`, in order (errors about a split name them)
        self.used: list[Path] = []
        if self.data_dir is not None and not self.data_dir.is_dir():
            origin = "data_dir" if data_dir is not None else DATA_DIR_ENV
            raise HarnessError(f"{origin}={self.data_dir}: no such directory")

    def roots(self) -> list[Path]:
        roots = [self.data_dir / self.dataset] if self.data_dir is not None else []
        return roots + [self.cache_dir / self.dataset]

    def find(self, relative: str) -> Path | None:
        for root in self.roots():
            candidate = root / relative
            if candidate.is_file():
                return candidate
        return None

    def path(self, relative: str, source: Source | None = None) -> Path:
        """The path of ``relative`` inside this dataset's folder; a clear error if missing."""
        found = self.find(relative)
        if found is not None:
            self.used.append(found)
            return found
        where = " or ".join(str(r / relative) for r in self.roots())
        hint = f"; it comes from {source.url}" if source is not None else ""
        raise HarnessError(
            f"dataset '{self.dataset}': missing file {relative} (looked in {where}); "
            f"set {DATA_DIR_ENV} to a folder holding {self.dataset}/{relative}{hint}"
        )


def read_rows(
    path: Path,
    *,
    delimiter: str = "\t",
    quoting: int = csv.QUOTE_NONE,
    header: bool = False,
    columns: int | Sequence[int] | None = None,
    encoding: str = "utf-8-sig",
) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(line_number, fields)`` for each data row of a delimited text file.

    ``columns`` is the expected number of fields (or the accepted numbers); a row with
    another count, a file that is not UTF-8 or a broken quote is a :class:`HarnessError`
    naming the file and line. A BOM is dropped (``utf-8-sig``); a missing final newline
    is fine. Blank lines are skipped.
    """
    accepted = {columns} if isinstance(columns, int) else (set(columns) if columns else None)
    try:
        f = open(path, encoding=encoding, newline="")
    except OSError as exc:
        raise HarnessError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    with f:
        reader = csv.reader(f, delimiter=delimiter, quoting=quoting, strict=True)
        end = 0  # the last line of the previous row: a row starts on the line after it
        try:
            for row in reader:
                line, end = end + 1, reader.line_num
                if header and line == 1:
                    continue
                if not row or row == [""]:
                    continue
                if accepted is not None and len(row) not in accepted:
                    want = " or ".join(str(c) for c in sorted(accepted))
                    raise HarnessError(f"{path}:{line}: expected {want} columns, got {len(row)}")
                yield line, row
        except csv.Error as exc:
            if "unexpected end of data" in str(exc):
                raise HarnessError(
                    f"{path}:{end + 1}: unterminated quote: the row starting on this line runs to the end of the file"
                ) from None
            raise HarnessError(f"{path}:{end + 1}: malformed row: {exc}") from None
        except UnicodeDecodeError as exc:
            raise HarnessError(f"{path}:{_line_of_byte(path, exc.start)}: not valid UTF-8 ({exc.reason})") from None


def _line_of_byte(path: Path, offset: int) -> int:
    """1-based line number of the first byte that is not UTF-8 (the decoder's offsets are
    relative to the chunk it was reading, so decode the whole file once more)."""
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = exc.start
    return data.count(b"\n", 0, offset) + 1


def parse_label(value: str, labels: Sequence[str], path: Path, line: int) -> int:
    """The class index of a label string; an error naming file and line when unknown."""
    try:
        return labels.index(value.strip())
    except ValueError:
        raise HarnessError(
            f"{path}:{line}: label {value.strip()!r} is not in the label set {list(labels)}"
        ) from None
