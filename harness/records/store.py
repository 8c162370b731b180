"""Run records and the results store: ``<out>/results.jsonl``, one JSON object per run.

Every write replaces the whole file atomically (write a temporary file, fsync, rename,
fsync the directory), so a reader, or a ``kill -9`` at any moment, never sees a partial
line. The store keeps one record per ``run_id``: a run that is run again replaces its
earlier record. Each write holds an advisory lock on ``<out>/.results.lock`` and merges
with what is on disk, so two processes sharing an output directory never drop each
other's records. Reports, comparisons and resume read only this file.

:meth:`ResultsStore.add` is where a record is stored, whichever way its run was launched:
once the record is on disk it calls the store's ``on_stored`` (the exporters, the
``harness_record_stored`` hook: :func:`harness.records.export.notifier`) with it.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator

from harness.errors import NO_ROOM, HarnessError, NoRoom, no_room
from harness.records.record import RunRecord, now, version_problem

RESULTS_FILE = "results.jsonl"
LOCK_FILE = ".results.lock"
#: held by the ``harness run`` that owns the directory, for the whole command (:func:`claim`)
OWNER_FILE = ".run.lock"
TMP_PREFIX = ".results-"
#: statuses that count as finished: resume skips them (``--rerun`` forces them)
FINISHED = ("ok", "diverged")
#: what the store calls with each record it has just written, and the output directory
OnStored = Callable[[dict[str, Any], Path], None]


def check_out_dir(out: str | Path) -> Path:
    """The output directory, checked without creating anything: an error when it is a file,
    or when it (or the nearest folder above it that exists) is not writable."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise HarnessError(f"--out {out}: exists and is not a directory")
    existing = next((p for p in (out, *out.absolute().parents) if p.exists()), None)
    if existing is not None and existing.is_dir() and not os.access(existing, os.W_OK | os.X_OK):
        raise HarnessError(f"--out {out}: not writable" if existing == out else
                           f"--out {out}: cannot create it (Permission denied in {existing})")
    return out


def prepare_out_dir(out: str | Path) -> Path:
    """Create the output directory; a clear error when it is a file or not writable."""
    out = check_out_dir(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HarnessError(f"--out {out}: cannot create it ({exc.strerror})") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise HarnessError(f"--out {out}: not writable")
    return out


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """Every record of a results file (a directory holding one, or the file itself).

    A line that is not a run record (not UTF-8, not JSON, no ``run_id``: a crash mid-write,
    an edit by hand) is an error naming its file and line; so is a record of a newer major
    ``schema_version`` than this harness's, or one whose version is not ``major.minor``:
    its fields may mean something else now. (``harness run`` sets bad lines aside instead:
    :func:`repair`.)"""
    path = results_path(path)
    records = []
    for line_no, _, record, problem in _lines(path):
        problem = problem or version_problem(record.get("schema_version"))
        if problem:
            raise HarnessError(f"{path}:{line_no}: {problem}")
        records.append(record)
    return records


def results_path(path: str | Path) -> Path:
    """The results file of a results directory (or the file itself), which must exist."""
    path = Path(path)
    if not path.exists():
        raise HarnessError(f"{path}: no such results directory or file")
    if path.is_dir():
        if not (path / RESULTS_FILE).is_file():
            raise HarnessError(f"{path}: no {RESULTS_FILE} in it (is it the --out of a `harness run`?)")
        path = path / RESULTS_FILE
    return path


def _lines(path: Path) -> Iterator[tuple[int, bytes, dict[str, Any], str | None]]:
    """Each non-blank line of a results file: its number, its bytes, and its record, or
    what makes it no run record. Lines end at ``\n``, ``\r\n`` or ``\r``, as for
    :func:`harness.data.read.read_lines`; a BOM at the start is dropped."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise HarnessError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    for line_no, raw in enumerate(data.splitlines(keepends=True), start=1):
        try:
            text = raw.decode("utf-8-sig" if line_no == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            yield line_no, raw, {}, f"not valid UTF-8 ({exc.reason})"
            continue
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as exc:
            yield line_no, raw, {}, f"not a JSON record ({getattr(exc, 'msg', 'nested too deeply')})"
            continue
        if not isinstance(record, dict) or not isinstance(record.get("run_id"), str):
            yield line_no, raw, {}, "not a run record (no run_id)"
            continue
        problem = shape_problem(record)
        yield line_no, raw, record if problem is None else {}, problem and f"not a run record ({problem})"


_NUMBER = (int, float)
#: the fields of a record that the readers rely on, and the JSON types each may hold (absent is fine)
SHAPE: dict[str, tuple[type, ...]] = {
    "status": (str,), "error": (str, type(None)), "suite": (str, type(None)), "main_metric": (str, type(None)),
    "config": (dict,), "env": (dict, type(None)), "parallel": (dict, type(None)), "data": (dict, type(None)),
    "side_files": (dict, type(None)), "epochs": (list,), "metrics": (dict,), "test_metrics": (dict, type(None)),
    "estimate": (dict, type(None)), "started_at": (str, type(None)), "finished_at": (str, type(None)),
    "metrics_ci95": (dict, type(None)), "test_metrics_ci95": (dict, type(None)), "load": (dict, type(None)),
    "model_info": (dict, type(None)), "target": (dict, type(None)),
}
#: fields that hold a number or null: the record's, and (required) each epoch's that every table sums or averages
NUMBERS = ("compile_seconds", "warmup_seconds", "start_seconds", "train_samples_per_second", "train_steps_per_second",
           "world_size")
EPOCH_FIGURES = ("train_seconds", "real_tokens", "padded_tokens", "eval_seconds", "peak_memory_bytes")
EPOCH_NUMBERS = ("train_flops", "train_loss")


def shape_problem(record: dict[str, Any]) -> str | None:
    """What in a record's fields is not the type a record holds there (hand-edited, or
    damaged): one phrase naming the field; None when the readers can use it."""
    for key, types in SHAPE.items():
        if key in record and (not isinstance(record[key], types) or isinstance(record[key], bool) and bool not in types):
            return f"{key}: {type(record[key]).__name__} where a record holds {' or '.join(_name(t) for t in types)}"
    numbers = [(key, record.get(key)) for key in NUMBERS]
    numbers += [(f"estimate.{k}", v) for k, v in (record.get("estimate") or {}).items() if k.endswith("seconds")]
    numbers += [(f"{key}.{name}", value) for key in ("metrics", "test_metrics")
                for name, value in (record.get(key) or {}).items()]
    for key in ("metrics_ci95", "test_metrics_ci95"):
        for name, interval in (record.get(key) or {}).items():
            if interval is not None and not (isinstance(interval, list) and len(interval) == 2):
                return f"{key}.{name}: {type(interval).__name__} where a record holds an interval [low, high]"
            numbers += [(f"{key}.{name}", v) for v in interval or []]
    for i, epoch in enumerate(record.get("epochs") or []):
        if not isinstance(epoch, dict):
            return f"epochs[{i}]: {type(epoch).__name__} where a record holds an object"
        for name in EPOCH_FIGURES:
            if not _is_number(epoch.get(name)):
                return f"epochs[{i}].{name}: {type(epoch.get(name)).__name__} where a record holds a number"
        if not isinstance(epoch.get("metrics") or {}, dict):
            return f"epochs[{i}].metrics: {type(epoch['metrics']).__name__} where a record holds an object"
        numbers += [(f"epochs[{i}].{name}", epoch.get(name)) for name in EPOCH_NUMBERS]
        numbers += [(f"epochs[{i}].metrics.{k}", v) for k, v in _mapping(epoch.get("metrics")).items()]
    for where, value in numbers:
        if value is not None and not _is_number(value):
            return f"{where}: {type(value).__name__} where a record holds a number"
    if not isinstance((record.get("env") or {}).get("device_name") or "", str):
        return "env.device_name: not a string"
    return None


def _is_number(value: object) -> bool:
    return isinstance(value, _NUMBER) and not isinstance(value, bool)


def _mapping(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _name(kind: type) -> str:
    return {str: "a string", dict: "an object", list: "a list", type(None): "null"}.get(kind, kind.__name__)


def repair(out_dir: str | Path) -> str | None:
    """Before a resume: the lines of ``<out>/results.jsonl`` that are no run record (a last
    line cut short by a crash mid-write on a filesystem without atomic rename, garbage)
    moved, byte for byte, to ``results.jsonl.corrupt-<UTC time>`` beside it, and the store
    rewritten atomically with every valid record, as it was; what was done, in one line
    (None: nothing to repair). The bad lines are written (and fsynced) before the store is
    replaced, so a crash in between loses nothing. A record of a newer schema is no
    corruption: it stays an error (:func:`read_records`)."""
    out_dir = Path(out_dir)
    path = out_dir / RESULTS_FILE
    if not path.is_file():
        return None
    with locked(out_dir):
        lines = list(_lines(path))
        bad = [(n, raw, problem) for n, raw, _, problem in lines if problem]
        if not bad:
            return None
        for n, _, record, problem in lines:
            newer = None if problem else version_problem(record.get("schema_version"))
            if newer:
                raise HarnessError(f"{path}:{n}: {newer}")
        aside = path.with_name(f"{RESULTS_FILE}.corrupt-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
        while aside.exists():
            aside = aside.with_name(aside.name + "+")
        try:
            write_atomically(aside, lambda f: f.writelines(raw for _, raw, _ in bad), TMP_PREFIX)
            write_atomically(path, lambda f: f.writelines(
                raw if raw.endswith((b"\n", b"\r")) else raw + b"\n" for _, raw, _, problem in lines if not problem
            ), TMP_PREFIX)
        except OSError as exc:
            raise HarnessError(f"{path}: cannot set its bad lines aside ({exc.strerror or exc}); the file is as it "
                               "was") from None
    kept = len(lines) - len(bad)
    first = bad[0]
    return (f"{path}: {len(bad)} line{'s' if len(bad) != 1 else ''} that {'are' if len(bad) != 1 else 'is'} no "
            f"run record (line {first[0]}: {first[2]}{', ...' if len(bad) > 1 else ''}) set aside in {aside}; the "
            f"{kept} valid record{'s' if kept != 1 else ''} kept")


def hold(path: Path, *, wait: bool = True) -> IO[str] | None:
    """The one lock helper: ``path`` opened, holding an exclusive advisory lock, released when
    the file is closed or this process dies. ``wait=False``: None at once when another process
    holds it. Without fcntl (not POSIX) the file is returned unlocked."""
    f = open(path, "a")
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return f
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except OSError:
        f.close()
        if wait:
            raise
        return None
    return f


def claim(out_dir: str | Path, *, probe: bool = False) -> IO[str] | None:
    """``<out>/.run.lock`` held (:func:`hold`, no wait) by the ``harness run`` that owns the
    directory, for the whole command, and holding its pid, host and start time; the lock dies
    with the process, so a ``kill -9`` leaves no stale owner. Another owner alive: a
    :class:`HarnessError` naming it. ``probe``: only check (nothing created or written; None)."""
    path = Path(out_dir) / OWNER_FILE
    if probe and not path.is_file():
        return None
    owner = hold(path, wait=False)
    if owner is None:
        raise HarnessError(f"--out {out_dir}: another `harness run` owns this directory ({_owner(path)}); wait for it "
                           f"to end (`flock {path} true` waits) or pick another --out")
    if probe:
        owner.close()
        return None
    try:
        owner.truncate(0)
        owner.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": now()}) + "\n")
        owner.flush()
    except OSError as exc:
        owner.close()
        exc.filename = exc.filename or str(path)
        raise no_room(exc) or HarnessError(f"{path}: cannot write it ({exc.strerror or exc})") from None
    return owner


def _owner(path: Path) -> str:
    """Who holds ``<out>/.run.lock``, as its file says (it may not have written it yet)."""
    for _ in range(50):
        try:
            who = json.loads(path.read_text(encoding="utf-8"))
            return f"pid {who['pid']} on {who['host']}, since {who['since']}"
        except (OSError, ValueError, KeyError, TypeError):
            time.sleep(0.01)
    return "its pid not written yet"


@contextlib.contextmanager
def locked(out_dir: str | Path) -> Iterator[None]:
    """The results store's lock, ``<out>/.results.lock`` (:func:`hold`), held for one
    read-merge-write of ``results.jsonl`` (or of a file written beside it: the SLURM job list)."""
    out_dir = Path(out_dir)
    with hold(out_dir / LOCK_FILE):
        # temporary files left by a writer killed mid-write (no writer holds the lock now)
        for stale in out_dir.glob(f"{TMP_PREFIX}*.tmp"):
            with contextlib.suppress(OSError):
                stale.unlink()
        yield


class ResultsStore:
    """``<out>/results.jsonl``: one record per run id, each write whole and atomic under the lock."""

    def __init__(self, out_dir: str | Path, on_stored: OnStored | None = None):
        self.dir = Path(out_dir)
        self.on_stored = on_stored
        self.path = self.dir / RESULTS_FILE
        self.records: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            for record in read_records(self.path):
                self.records[record["run_id"]] = record

    def finished(self, run_id: str) -> bool:
        record = self.records.get(run_id)
        return record is not None and record.get("status") in FINISHED

    def add(self, record: RunRecord | dict[str, Any]) -> None:
        """Store a record (a run's, or the JSON object of one), replacing the run's earlier one."""
        if isinstance(record, RunRecord):
            record = record.to_dict()
        with locked(self.dir):
            # merge with the file as it is now: another process may have added or replaced runs
            if self.path.exists():
                self.records.update((r["run_id"], r) for r in read_records(self.path))
            self.records[record["run_id"]] = record
            self._write(self.records.values())
        if self.on_stored is not None:  # after the lock: a slow exporter holds up no other writer
            self.on_stored(record, self.dir)

    def _write(self, records: Iterable[dict[str, Any]]) -> None:
        try:
            self._replace(records)
        except OSError as exc:  # disk full, directory gone or read-only: the old file is intact
            message = f"{self.path}: cannot write the results ({exc.strerror or exc}); the runs recorded before are intact"
            if exc.errno in NO_ROOM:
                raise NoRoom(f"{message}: make room (or pick another --out) and run the same command again") from None
            raise HarnessError(message) from None

    def _replace(self, records: Iterable[dict[str, Any]]) -> None:
        def lines(f: IO[bytes]) -> None:
            for record in records:
                f.write((json.dumps(record, sort_keys=False, default=str) + "\n").encode("utf-8"))

        write_atomically(self.path, lines, TMP_PREFIX)


def write_atomically(path: Path, write: Callable[[IO[bytes]], None], prefix: str) -> None:
    """Replace ``path`` whole or not at all: ``write`` fills a temporary file beside it
    (``<prefix>*.tmp``), which is fsynced and renamed over it, and the directory fsynced so
    the rename survives a power cut; on any failure the temporary file is removed and the
    old file is as it was, and an OSError that names no file (a full disk fails at the fsync)
    names ``path``."""
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            exc.filename = exc.filename or str(path)
        raise


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some filesystems refuse
        pass
    finally:
        os.close(fd)
