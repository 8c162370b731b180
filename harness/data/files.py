"""Where dataset files are: the data directory, then the cache, then a download.

A dataset asks ``DataFiles.path("raw/in_domain_train.tsv", SOURCE)`` and gets a path from,
in order: the data directory (``data_dir`` in the suite, else ``HARNESS_DATA_DIR``), then
the cache (``HARNESS_CACHE_DIR``, default ``~/.cache/harness``). Both hold one folder per
dataset: ``<dir>/cola/raw/in_domain_train.tsv``. When the file is in neither, the
dataset's :class:`~harness.data.download.Source` is downloaded into the cache
(:func:`harness.data.download.fetch`).

Environment:

- ``HARNESS_OFFLINE=1``: never download; a missing file is an error at once.
"""

from __future__ import annotations

import os
from pathlib import Path

from harness.data.download import CACHE_DIR_ENV, Source, fetch
from harness.errors import HarnessError

DATA_DIR_ENV = "HARNESS_DATA_DIR"
OFFLINE_ENV = "HARNESS_OFFLINE"


def default_cache_dir() -> Path:
    env = os.environ.get(CACHE_DIR_ENV)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "harness"


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
                self.used.append(found)
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
