"""Why a run did not finish, in one line: the one place failures are classified.

- :func:`exception_reason`: a run that raised (``out of memory: ...``, ``ValueError: ...``),
  in the worker or in the ``harness run`` process (``--isolation none``);
- :func:`process_reason`: a run whose process ended without a record: its own error file
  (:class:`RankError`, written by the worker that raised), the signal that killed it, the
  kernel's OOM killer, or for a data-parallel run the first of torchrun's workers that
  failed (torchrun's summary read; a rank that only lost its peer is not the cause);
- :func:`exit_reason`: how a process ended, from its exit code.
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

from pydantic import BaseModel

from harness.errors import one_line

#: the error file of the worker of rank N, in the run's work directory
ERROR_GLOB = "error-rank*.json"


class RankError(BaseModel):
    """What a worker that raised tells its parent: its rank, whether it was a user mistake
    (a :class:`~harness.errors.HarnessError`: the suite stops), the one line, and when."""

    rank: int
    usage: bool
    message: str
    time: float

    def write(self, workdir: Path) -> None:
        path = workdir / ERROR_GLOB.replace("*", str(self.rank))
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.model_dump_json(), encoding="utf-8")
        os.replace(tmp, path)  # the parent never reads half a file

    @classmethod
    def of(cls, rank: int, exc: BaseException, usage: bool) -> "RankError":
        return cls(rank=rank, usage=usage, message=str(exc) if usage else exception_reason(exc), time=time.time())

    @classmethod
    def read_all(cls, workdir: Path) -> dict[int, "RankError"]:
        """Every rank's error file in ``workdir`` (an unreadable one skipped), by rank."""
        out = {}
        for path in workdir.glob(ERROR_GLOB):
            try:
                error = cls.model_validate_json(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            out[error.rank] = error
        return out


def is_oom(exc: BaseException) -> bool:
    import torch  # only once a run has failed: the classification needs torch's exception type

    return isinstance(exc, (torch.OutOfMemoryError, MemoryError)) or "out of memory" in str(exc).lower()


def exception_reason(exc: BaseException) -> str:
    """One line for a run that raised: ``out of memory: ...`` or ``ValueError: ...``."""
    if is_oom(exc):
        return f"out of memory: {one_line(exc, 'first')}"
    return f"{type(exc).__name__}: {one_line(exc, 'first')}"


def exit_reason(code: int) -> str:
    """How a process ended, from its exit code (negative: the signal that killed it)."""
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


#: torchrun's summary of the first failure: its rank and exit code
_ROOT_CAUSE = re.compile(r"Root Cause.*?rank\s*:\s*(\d+).*?exitcode\s*:\s*(-?\d+)", re.S)
#: every failed rank torchrun lists (the root cause and the "Other Failures")
_FAILURE = re.compile(r"rank\s*:\s*(\d+)\s*\(local_rank[^)]*\)\s*exitcode\s*:\s*(-?\d+)")
#: what a rank raises when another rank died under it: a consequence, not the cause
_PEER_LOST = ("remote worker crashing", "Connection closed by peer", "Connection reset by peer")


def process_reason(
    workdir: Path, log_text: str, code: int, *, single: bool = False, oom_killed: bool = False
) -> tuple[bool, str]:
    """(is a user mistake, one line): why the run's process (``single``) or the first of its
    torchrun workers that failed did not finish."""
    errors = RankError.read_all(workdir)
    if single:
        if 0 in errors:  # a Python error, classified by the worker as the runner would in-process
            return errors[0].usage, errors[0].message
        cause = "out of memory: the kernel's OOM killer stopped it" if oom_killed else "no Python error"
        return False, f"the run's process {exit_reason(code)} ({cause})"
    root = _ROOT_CAUSE.search(log_text)
    if root is not None:
        rank, exitcode = int(root.group(1)), int(root.group(2))
    elif errors:
        rank, exitcode = min(errors, key=lambda r: errors[r].time), code
    else:
        return False, f"worker failed: torchrun exited with code {code} (see its log)"
    if rank in errors and any(lost in errors[rank].message for lost in _PEER_LOST):
        # torchrun saw two ranks end in one look and named the one that lost its peer: the
        # rank that died without a Python error is the cause
        died = [(int(r), int(c)) for r, c in _FAILURE.findall(log_text) if int(r) not in errors]
        if died:
            rank, exitcode = died[0]
    if rank in errors:
        e = errors[rank]
        return e.usage, (e.message if e.usage else f"worker failed: rank {rank}: {e.message}")
    how = f"{exit_reason(exitcode)} without a Python error" + (" (the kernel's OOM killer)" if oom_killed else "")
    return False, f"worker died: rank {rank} {how}; the other ranks were stopped"
