"""Where dataset files come from, and reading them with errors that name file and line.

A dataset asks ``DataFiles.path("raw/in_domain_train.tsv", SOURCE)`` and gets a path from,
in order: the data directory (``data_dir`` in the suite, else ``HARNESS_DATA_DIR``), then
the cache (``HARNESS_CACHE_DIR``, default ``~/.cache/harness``). Both hold one folder per
dataset: ``<dir>/cola/raw/in_domain_train.tsv``.

When the file is in neither, the dataset's :class:`Source` (its official URL and sha256)
is downloaded into the cache: to a temporary folder inside the cache first, its sha256
checked, an archive unpacked (refusing members that would land outside the folder), and
only then renamed into place. A checksum mismatch or an interrupted download leaves
nothing in the dataset's cache folder.

Environment:

- ``HARNESS_DATA_MIRROR``: a base URL that replaces every official URL; the file is
  fetched from ``<mirror>/<dataset>/<file name>`` (the data directory's own layout, so a
  plain ``python -m http.server`` in a data directory is a mirror). The sha256 is checked
  all the same.
- ``HARNESS_OFFLINE=1``: never download; a missing file is an error at once.
- ``HARNESS_DOWNLOAD_TIMEOUT``: seconds to wait for a connection or for data (default 60).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import socket
import stat
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Iterator, Sequence
from urllib.parse import urlparse

from harness.errors import HarnessError

DATA_DIR_ENV = "HARNESS_DATA_DIR"
CACHE_DIR_ENV = "HARNESS_CACHE_DIR"
MIRROR_ENV = "HARNESS_DATA_MIRROR"
OFFLINE_ENV = "HARNESS_OFFLINE"
TIMEOUT_ENV = "HARNESS_DOWNLOAD_TIMEOUT"
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


def default_cache_dir() -> Path:
    env = os.environ.get(CACHE_DIR_ENV)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "harness"


@dataclass(frozen=True)
class Source:
    """Where a dataset's files come from: an official archive or file, and its sha256.

    Only give a sha256 you can point to a record for (the dataset's own checksum list, a
    well-known loader's table); a dataset without one cannot be downloaded.
    """

    url: str
    sha256: str
    #: for an archive: the member folder whose contents become the dataset folder
    #: (e.g. ``cola_public/`` for CoLA's zip); None keeps the archive's own layout
    strip_prefix: str | None = None
    #: the file name the download is saved under, and its name on a mirror
    #: (default: the last part of the URL)
    filename: str | None = None
    #: for an archive: keep only members under these prefixes (after ``strip_prefix``);
    #: empty keeps everything
    include: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.filename or PurePosixPath(urlparse(self.url).path).name

    @property
    def is_archive(self) -> bool:
        return self.name.lower().endswith(ARCHIVE_SUFFIXES)

    def describe(self) -> str:
        what = f"{self.url} (sha256 {self.sha256[:12]}…"
        if self.is_archive:
            inner = f"its {self.strip_prefix} folder" if self.strip_prefix else "it"
            what += f"; unpack {inner} into the dataset folder"
        return what + ")"


class DataFiles:
    """Finds one dataset's files in the data directory or the cache, downloading when missing."""

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

    def find(self, relative: str, directory: bool = False) -> Path | None:
        for root in self.roots():
            candidate = root / relative
            if candidate.is_dir() if directory else candidate.is_file():
                return candidate
        return None

    def path(self, relative: str, source: Source | None = None, directory: bool = False) -> Path:
        """The path of ``relative`` (a file, or a folder with ``directory=True``) inside this
        dataset's folder; downloaded from ``source`` when missing; a clear error otherwise."""
        found = self.find(relative, directory)
        if found is not None:
            self.used.append(found)
            return found
        if source is not None and not os.environ.get(OFFLINE_ENV):
            try:
                fetch(source, self.cache_dir, self.dataset)
            except HarnessError as exc:
                raise HarnessError(f"{self._missing(relative, source)}; the download failed: {exc}") from None
            found = self.find(relative, directory)
            if found is not None:
                return found
            raise HarnessError(f"{self._missing(relative, source)}; the download from {source.url} does not contain it")
        raise HarnessError(self._missing(relative, source))

    def _missing(self, relative: str, source: Source | None) -> str:
        where = " or ".join(str(r / relative) for r in self.roots())
        put = f"put it at {self.roots()[0] / relative}"
        if self.data_dir is None:
            put += f" (or set {DATA_DIR_ENV} to a folder holding {self.dataset}/{relative})"
        origin = f"; it comes from {source.describe()}" if source is not None else ""
        return f"dataset '{self.dataset}': missing {relative} (looked in {where}); {put}{origin}"


# -------------------------------------------------------------------------- download


def download_url(source: Source, dataset: str) -> str:
    """The official URL, or ``<HARNESS_DATA_MIRROR>/<dataset>/<file name>``."""
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    if mirror:
        return f"{mirror.rstrip('/')}/{dataset}/{source.name}"
    return source.url


def _timeout() -> float:
    raw = os.environ.get(TIMEOUT_ENV, "60")
    try:
        value = float(raw)
    except ValueError:
        raise HarnessError(f"{TIMEOUT_ENV}={raw!r}: expected a number of seconds") from None
    if value <= 0:
        raise HarnessError(f"{TIMEOUT_ENV}={raw!r}: expected a positive number of seconds")
    return value


def _download(url: str, target: Path, timeout: float) -> str:
    """Stream ``url`` into ``target``; return the sha256 of what was written."""
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(target, "wb") as out:  # noqa: S310
            for chunk in iter(lambda: response.read(1 << 20), b""):
                digest.update(chunk)
                out.write(chunk)
    except urllib.error.HTTPError as exc:
        raise HarnessError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, (TimeoutError, socket.timeout)):
            raise HarnessError(f"{url}: no answer within {timeout:g} s") from None
        raise HarnessError(f"{url}: cannot connect ({getattr(reason, 'strerror', None) or reason})") from None
    except (TimeoutError, socket.timeout):
        raise HarnessError(f"{url}: no data within {timeout:g} s (download interrupted)") from None
    except (OSError, ValueError) as exc:  # connection reset mid-way, a malformed URL
        raise HarnessError(f"{url}: {type(exc).__name__}: {exc}") from None
    return digest.hexdigest()


def fetch(source: Source, cache_dir: Path, dataset: str) -> Path:
    """Download ``source``, verify its sha256, unpack it, and move it into
    ``cache_dir/dataset``. Everything happens in a temporary folder inside the cache
    first, so a failure at any step leaves the dataset folder untouched."""
    from harness import report  # the only module that prints

    url = download_url(source, dataset)
    timeout = _timeout()
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dataset}-download-", dir=cache_dir))
    except OSError as exc:
        raise HarnessError(f"cache directory {cache_dir}: cannot write ({exc.strerror or exc}); set {CACHE_DIR_ENV}") from None
    try:
        report.print_note(f"dataset '{dataset}': downloading {url}")
        blob = tmp / source.name
        got = _download(url, blob, timeout)
        if got != source.sha256:
            raise HarnessError(
                f"{url}: sha256 mismatch (expected {source.sha256}, got {got}); the download is corrupted "
                "or the file changed upstream; nothing was cached"
            )
        target = cache_dir / dataset
        if source.is_archive:
            unpacked = tmp / "unpacked"
            unpack(blob, unpacked, source.strip_prefix, source.include)
            _move_tree(unpacked, target)
        else:
            target.mkdir(parents=True, exist_ok=True)
            os.replace(blob, target / source.name)
        return target
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _move_tree(src: Path, target: Path) -> None:
    """Rename ``src`` to ``target`` (one atomic rename when ``target`` does not exist yet),
    else move its files in one by one (each an atomic rename)."""
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, target)
        return
    for path in sorted(src.rglob("*")):
        if path.is_file():
            dest = target / path.relative_to(src)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, dest)


# ---------------------------------------------------------------------------- unpack


def _safe_member(archive: Path, name: str) -> PurePosixPath:
    """The member's relative path; an error for an absolute path or one that climbs out."""
    posix = PurePosixPath(name.replace("\\", "/"))
    if posix.is_absolute() or name.startswith(("/", "\\")) or (posix.parts and ":" in posix.parts[0]):
        raise HarnessError(f"{archive}: refusing to unpack: member {name!r} has an absolute path")
    if ".." in posix.parts:
        raise HarnessError(f"{archive}: refusing to unpack: member {name!r} points outside the target folder")
    return posix


def _link_stays_inside(member: PurePosixPath, target: str, hard: bool) -> bool:
    if target.startswith(("/", "\\")) or PurePosixPath(target).is_absolute():
        return False
    base = PurePosixPath() if hard else member.parent
    depth = 0
    for part in (base / target).parts:
        depth += -1 if part == ".." else (0 if part == "." else 1)
        if depth < 0:
            return False
    return True


def _kept(rel: PurePosixPath, strip_prefix: str | None, include: Sequence[str]) -> PurePosixPath | None:
    text = rel.as_posix()
    if strip_prefix:
        prefix = strip_prefix.rstrip("/") + "/"
        if not text.startswith(prefix) or text == prefix:
            return None
        text = text[len(prefix):]
    if include and not any(text.startswith(p) for p in include):
        return None
    return PurePosixPath(text) if text else None


def unpack(archive: Path, dest: Path, strip_prefix: str | None = None, include: Sequence[str] = ()) -> None:
    """Unpack a zip or tar archive into ``dest``. Every member is checked first: an
    absolute path, a ``..`` component, a link pointing outside, or a device file is an
    error and nothing is unpacked."""
    dest.mkdir(parents=True, exist_ok=True)
    name = archive.name.lower()
    try:
        if name.endswith(".zip"):
            _unzip(archive, dest, strip_prefix, include)
        else:
            _untar(archive, dest, strip_prefix, include)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as exc:
        raise HarnessError(f"{archive}: not a readable archive ({exc})") from None


def _unzip(archive: Path, dest: Path, strip_prefix: str | None, include: Sequence[str]) -> None:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        for info in infos:
            rel = _safe_member(archive, info.filename)
            if stat.S_ISLNK(info.external_attr >> 16):
                target = zf.read(info).decode("utf-8", "replace")
                if not _link_stays_inside(rel, target, hard=False):
                    raise HarnessError(f"{archive}: refusing to unpack: link {info.filename!r} points outside ({target!r})")
        for info in infos:
            kept = _kept(PurePosixPath(info.filename.replace("\\", "/")), strip_prefix, include)
            if kept is None or info.is_dir():
                continue
            out = dest.joinpath(*kept.parts)
            out.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)


def _untar(archive: Path, dest: Path, strip_prefix: str | None, include: Sequence[str]) -> None:
    with tarfile.open(archive) as tf:
        members = tf.getmembers()
        for m in members:
            rel = _safe_member(archive, m.name)
            if m.issym() or m.islnk():
                if not _link_stays_inside(rel, m.linkname, hard=m.islnk()):
                    raise HarnessError(f"{archive}: refusing to unpack: link {m.name!r} points outside ({m.linkname!r})")
            elif not (m.isfile() or m.isdir()):
                raise HarnessError(f"{archive}: refusing to unpack: member {m.name!r} is not a regular file or folder")
        for m in members:
            kept = _kept(PurePosixPath(m.name), strip_prefix, include)
            if kept is None or not m.isfile():  # links are checked above but not needed by any dataset
                continue
            out = dest.joinpath(*kept.parts)
            out.parent.mkdir(parents=True, exist_ok=True)
            src = tf.extractfile(m)
            assert src is not None
            with src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)


# ----------------------------------------------------------------------------- reading


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
