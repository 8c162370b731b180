"""Reading dataset files, with errors that name the file and the line.

The readers plugins (and :mod:`harness.records.store`) use: delimited rows, a header, plain
lines, JSON Lines, a whole text file, a label's class index, a label set inferred from
the values, and a check that a split is not empty. Every mistake in a file is one
:class:`~harness.errors.HarnessError` naming ``<file>:<line>``.

Every reader takes ``encoding`` (default UTF-8, a BOM dropped; any Python codec name:
``latin-1``, ``cp1252``, ``utf-16``...) and ``encoding_option``: the setting a user
changes to pick the encoding (``dataset.options.encoding``); when given, a decoding error
says to set it. Either way the error names the file, the line and the encoding.
"""

from __future__ import annotations

import codecs
import csv
import json
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from harness.errors import HarnessError

#: the default encoding of every reader: UTF-8, a byte-order mark at the start dropped
UTF8 = "utf-8"


def read_rows(
    path: Path,
    *,
    delimiter: str = "\t",
    quoting: int = csv.QUOTE_NONE,
    header: bool = False,
    columns: int | Sequence[int] | None = None,
    encoding: str = UTF8,
    encoding_option: str | None = None,
) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(line_number, fields)`` for each data row of a delimited text file.

    ``delimiter`` and ``quoting`` are the csv module's (``csv.QUOTE_NONE``: a ``"`` is
    text, as in the GLUE files; ``csv.QUOTE_MINIMAL``: RFC 4180 quoting, a field may span
    lines). ``header=True`` skips the first row (read it with :func:`read_header`).
    ``columns`` is the expected number of fields (or the accepted numbers); a row with
    another count, bytes that are not ``encoding`` or a broken quote is a
    :class:`HarnessError` naming the file and line (the line a row starts on). A UTF-8
    BOM is dropped; a missing final newline is fine. Blank lines are skipped. The file is
    split by the csv module, never with ``str.splitlines`` (which would break texts at
    U+0085 and other Unicode breaks).
    """
    accepted = {columns} if isinstance(columns, int) else (set(columns) if columns else None)
    codec = _codec(path, encoding)
    try:
        f = open(path, encoding=codec, newline="")
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
        except UnicodeDecodeError:
            raise _decode_error(path, path.read_bytes(), codec, encoding_option) from None


def read_header(
    path: Path, *, delimiter: str, quoting: int, encoding: str = UTF8, encoding_option: str | None = None
) -> list[str]:
    """The first row of a delimited file (its column names, stripped); an error when the
    file is empty. The arguments are :func:`read_rows`'s."""
    rows = read_rows(path, delimiter=delimiter, quoting=quoting, encoding=encoding, encoding_option=encoding_option)
    for _, row in rows:
        return [c.strip() for c in row]
    raise HarnessError(f"{path}:1: empty file (no header row)")


def read_lines(path: Path, encoding: str = UTF8, encoding_option: str | None = None) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, line)`` for each non-blank line of a text file (the line
    ending kept); a file that is missing, a directory or not ``encoding`` is an error
    naming it (and the line). Lines end at ``\\n``, ``\\r\\n`` or ``\\r`` only."""
    codec = _codec(path, encoding)
    try:
        with open(path, encoding=codec, newline="") as f:
            for line_no, line in enumerate(f, start=1):  # splits at \n, \r\n, \r only
                if line.strip():
                    yield line_no, line
    except UnicodeDecodeError:
        raise _decode_error(path, path.read_bytes(), codec, encoding_option) from None
    except FileNotFoundError:
        raise HarnessError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise HarnessError(f"{path}: is a directory, not a data file") from None


def read_jsonl(path: Path, encoding: str = UTF8, encoding_option: str | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for each non-blank line of a JSON Lines file; a line
    that is not a JSON object is an error naming the file and line."""
    for line_no, line in read_lines(path, encoding, encoding_option):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise HarnessError(f"{path}:{line_no}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(obj, dict):
            raise HarnessError(f"{path}:{line_no}: expected a JSON object, got {type(obj).__name__}")
        yield line_no, obj


def read_text(path: Path, encoding: str = UTF8, encoding_option: str | None = None) -> str:
    """A whole text file (a UTF-8 BOM dropped), line endings as they are; an error naming
    the file and line when it is not ``encoding``."""
    codec = _codec(path, encoding)
    data = path.read_bytes()
    try:
        return data.decode(codec)
    except UnicodeDecodeError:
        raise _decode_error(path, data, codec, encoding_option) from None


def _codec(path: Path, encoding: str) -> str:
    """The codec to read ``encoding`` with: UTF-8 reads as ``utf-8-sig`` (a BOM dropped)."""
    try:
        name = codecs.lookup(encoding).name
    except LookupError:
        raise HarnessError(f"{path}: unknown encoding {encoding!r} (e.g. utf-8, latin-1, cp1252)") from None
    return "utf-8-sig" if name == "utf-8" else encoding


def _decode_error(path: Path, data: bytes, codec: str, encoding_option: str | None) -> HarnessError:
    """The error for bytes that are not ``codec``, at the line of the first bad byte (a text
    stream's decoder reports offsets into the chunk it was reading: decode the whole file once
    more). It names the encoding and, given the setting that picks it, says to set it."""
    reason, offset = "undecodable bytes", 0
    try:
        data.decode(codec)
    except UnicodeDecodeError as exc:
        reason, offset = exc.reason, exc.start
    name = codecs.lookup(codec).name
    shown = "UTF-8" if name in ("utf-8", "utf-8-sig") else codec
    hint = ""
    if encoding_option:
        hint = f"; if the file is in another encoding, set {encoding_option} (e.g. latin-1, cp1252)"
    line = data.count(b"\n", 0, offset) + 1
    return HarnessError(f"{path}:{line}: not valid {shown} ({reason}){hint}")


def parse_label(value: str, labels: Sequence[str], path: Path, line: int) -> int:
    """The class index of a label string; an error naming file and line when unknown."""
    try:
        return labels.index(value.strip())
    except ValueError:
        raise HarnessError(
            f"{path}:{line}: label {value.strip()!r} is not in the label set {list(labels)}"
        ) from None


def infer_labels(values: Iterable[str], where: str) -> tuple[str, ...]:
    """A label set from the labels a split holds (strings, compared stripped): the distinct
    values sorted, numerically when all are integers (``2`` before ``10``). Fewer than two
    is an error naming ``where`` (a file, a dataset)."""
    found = {str(v).strip() for v in values}
    if len(found) < 2:
        raise HarnessError(
            f"{where}: found {len(found)} distinct label(s) {sorted(found)}; "
            "a classification dataset needs at least two (or give dataset.options.labels)"
        )
    if all(_is_int(x) for x in found):
        return tuple(sorted(found, key=int))
    return tuple(sorted(found))


def _is_int(value: str) -> bool:
    try:
        int(value)
    except ValueError:
        return False
    return True


def require_rows(examples: list, path: Path | str, split: str) -> list:
    """``examples`` unchanged; an error naming the file when a split has no rows."""
    if not examples:
        raise HarnessError(f"{path}:1: no data rows (the {split} split is empty)")
    return examples
