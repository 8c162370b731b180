"""Where a dataset's files come from (:class:`Source`), and getting them into the cache.

When a file is in neither the data directory nor the cache, the dataset's :class:`Source`
(its official URL and sha256) is downloaded into the cache: to a temporary folder inside
the cache first, its sha256 checked, an archive unpacked (refusing members that would land
outside the folder), and only then renamed into place. A checksum mismatch or an
interrupted download leaves nothing in the dataset's cache folder.

Environment:

- ``HARNESS_DATA_MIRROR``: a base URL that replaces every official URL; the file is
  fetched from ``<mirror>/<dataset>/<file name>`` (the data directory's own layout, so a
  plain ``python -m http.server`` in a data directory is a mirror). The sha256 is checked
  all the same.
- ``HARNESS_DOWNLOAD_TIMEOUT``: seconds to wait for a connection or for data (default 60).
- ``HARNESS_CACHE_DIR``: the cache the download lands in (see :mod:`harness.data.files`).

:func:`hub_reachable` is the one probe of the Hugging Face Hub (models and ``hf`` datasets
alike): the hub client would otherwise retry for about 20 seconds before giving up.

A download is announced as an INFO record on this module's logger (``harness.data.download``);
the command line shows it as a note. Nothing here prints.
"""

from __future__ import annotations

import hashlib
import logging
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
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Sequence
from urllib.parse import urlparse

from harness.errors import HarnessError

CACHE_DIR_ENV = "HARNESS_CACHE_DIR"
MIRROR_ENV = "HARNESS_DATA_MIRROR"
TIMEOUT_ENV = "HARNESS_DOWNLOAD_TIMEOUT"
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")

log = logging.getLogger(__name__)

#: seconds a connection to the Hugging Face Hub may take before the Hub counts as unreachable
HUB_TIMEOUT = 3.0
#: environment variables of the Hugging Face libraries that say: never ask the Hub
HUB_OFFLINE_ENV = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


def hub_endpoint() -> str:
    """The Hugging Face Hub's address (``HF_ENDPOINT``, else https://huggingface.co)."""
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def hub_offline() -> str | None:
    """The variable that switches the Hugging Face libraries to offline mode (``HF_HUB_OFFLINE=1``), if any."""
    for var in HUB_OFFLINE_ENV:
        if os.environ.get(var, "").strip().upper() in ("1", "ON", "YES", "TRUE"):
            return f"{var}={os.environ[var]}"
    return None


def hub_reachable() -> bool:
    """Whether the Hub may be asked: no offline switch is on (:func:`hub_offline`) and a TCP
    connection to :func:`hub_endpoint` opens within :data:`HUB_TIMEOUT` (asked once per
    endpoint and process)."""
    return hub_offline() is None and _connects(hub_endpoint())


@lru_cache(maxsize=None)
def _connects(endpoint: str) -> bool:
    url = urlparse(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname or "", port), timeout=HUB_TIMEOUT).close()
    except OSError:
        return False
    return True


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
    url = download_url(source, dataset)
    timeout = _timeout()
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dataset}-download-", dir=cache_dir))
    except OSError as exc:
        raise HarnessError(f"cache directory {cache_dir}: cannot write ({exc.strerror or exc}); set {CACHE_DIR_ENV}") from None
    try:
        log.info("dataset '%s': downloading %s", dataset, url)
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
