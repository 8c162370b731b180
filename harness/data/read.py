"""Reading dataset files, with errors that name the file and the line.

The readers plugins (and :mod:`harness.results`) use: delimited rows, a header, plain
lines, JSON Lines, a whole text file, a label's class index, and a check that a split is
not empty. Every mistake in a file is one :class:`~harness.errors.HarnessError` naming
``<file>:<line>``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Iterator, Sequence

from harness.errors import HarnessError


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
    is fine. Blank lines are skipped. The file is split by the csv module, never with
    ``str.splitlines`` (which would break texts at U+0085 and other Unicode breaks).
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
            hint = "; an unterminated quote?" if "expected after" in str(exc) else ""
            raise HarnessError(f"{path}:{end + 1}: malformed row: {exc}{hint}") from None
        except UnicodeDecodeError as exc:
            raise HarnessError(f"{path}:{_line_of_byte(path, exc.start)}: not valid UTF-8 ({exc.reason})") from None


def read_header(path: Path, *, delimiter: str, quoting: int, encoding: str = "utf-8-sig") -> list[str]:
    """The first row of a delimited file (its column names); an error when the file is empty."""
    for _, row in read_rows(path, delimiter=delimiter, quoting=quoting, encoding=encoding):
        return [c.strip() for c in row]
    raise HarnessError(f"{path}:1: empty file (no header row)")


def read_lines(path: Path, encoding: str = "utf-8-sig") -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, line)`` for each non-blank line of a text file; a file that is
    missing, a directory or not UTF-8 is an error naming it (and the line)."""
    try:
        with open(path, encoding=encoding, newline="") as f:
            for line_no, line in enumerate(f, start=1):  # splits at \n, \r\n, \r only
                if line.strip():
                    yield line_no, line
    except UnicodeDecodeError as exc:
        raise HarnessError(f"{path}:{_line_of_byte(path, exc.start)}: not valid UTF-8 ({exc.reason})") from None
    except FileNotFoundError:
        raise HarnessError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise HarnessError(f"{path}: is a directory, not a data file") from None


def read_jsonl(path: Path, encoding: str = "utf-8-sig") -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for each non-blank line of a JSON Lines file."""
    for line_no, line in read_lines(path, encoding):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise HarnessError(f"{path}:{line_no}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(obj, dict):
            raise HarnessError(f"{path}:{line_no}: expected a JSON object, got {type(obj).__name__}")
        yield line_no, obj


def read_text(path: Path) -> str:
    """A whole UTF-8 text file (a BOM dropped); an error naming file and line when it is not UTF-8."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise HarnessError(f"{path}:{line}: not valid UTF-8 ({exc.reason})") from None


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


def require_rows(examples: list, path: Path | str, split: str) -> list:
    """``examples`` unchanged; an error naming the file when a split has no rows."""
    if not examples:
        raise HarnessError(f"{path}:1: no data rows (the {split} split is empty)")
    return examples
