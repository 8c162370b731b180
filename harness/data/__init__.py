"""Dataset files: finding them, fetching them, reading them.

- :mod:`harness.data.files`: where a dataset's files are (:class:`DataFiles`: the data
  directory, then the cache, then a download).
- :mod:`harness.data.download`: where they come from (:class:`Source`) and getting them into
  the cache: download, sha256 check, safe unpacking.
- :mod:`harness.data.read`: the readers plugins use, with errors that name file and line.
- :mod:`harness.data.splits`: a split as the loop uses it: loaded, checked, cut to a
  seeded, stratified subset.

Everything public is re-exported here: ``from harness.data import DataFiles, read_rows``.
"""

from harness.data.download import (
    ARCHIVE_SUFFIXES,
    CACHE_DIR_ENV,
    MIRROR_ENV,
    TIMEOUT_ENV,
    Source,
    download_url,
    fetch,
    unpack,
)
from harness.data.files import DATA_DIR_ENV, OFFLINE_ENV, DataFiles, default_cache_dir
from harness.data.read import (
    UTF8,
    infer_labels,
    parse_label,
    read_header,
    read_jsonl,
    read_lines,
    read_rows,
    read_text,
    require_rows,
)

__all__ = [
    "ARCHIVE_SUFFIXES",
    "CACHE_DIR_ENV",
    "DATA_DIR_ENV",
    "MIRROR_ENV",
    "OFFLINE_ENV",
    "TIMEOUT_ENV",
    "UTF8",
    "DataFiles",
    "Source",
    "default_cache_dir",
    "download_url",
    "fetch",
    "infer_labels",
    "parse_label",
    "read_header",
    "read_jsonl",
    "read_lines",
    "read_rows",
    "read_text",
    "require_rows",
    "unpack",
]
