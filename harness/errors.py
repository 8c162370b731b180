"""The one user-error type, the documented exit codes, and the one-line messages.

User mistakes (a bad suite, an unknown plugin, a missing file or model) raise
``HarnessError``. The CLI catches it in one place, prints one red line without a
traceback and exits with ``ExitCode.USAGE``. Anything else is a bug and keeps its
traceback. ``HARNESS_TRACEBACK=1`` also prints, under the line, the traceback a
:class:`HarnessError` carries of the exception it stands for (a plugin's own).
"""

from __future__ import annotations

import difflib
import enum
import errno
from typing import Sequence

#: the distribution the harness and its extras install from (the import name is `harness`)
DISTRIBUTION = "seqcls-harness"
#: set to 1: a one-line error is followed by the traceback it stands for, where it has one
TRACEBACK_ENV = "HARNESS_TRACEBACK"


class ExitCode(enum.IntEnum):
    OK = 0
    RUN_FAILED = 1  # at least one run failed or diverged, or a comparison crossed a threshold
    USAGE = 2  # bad suite, option, plugin, data file, model or output directory
    INTERRUPTED = 130  # SIGINT/SIGTERM: finished runs are kept, run the same command to resume


class HarnessError(Exception):
    """A user mistake: one line, no traceback, exit code 2. ``detail``: the traceback of the
    exception it stands for (a plugin's), shown under the line with ``HARNESS_TRACEBACK=1``."""

    exit_code = ExitCode.USAGE

    def __init__(self, message: str, detail: str | None = None):
        super().__init__(one_line_text(message))
        self.detail = detail


#: what ``str.splitlines`` breaks a line at: in a message (a user's text quoted), written escaped
_BREAKS = {c: repr(c)[1:-1] for c in "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"}


def one_line_text(message: str) -> str:
    """``message`` as one line: the line breaks of a quoted input (``--set 'a\rb'``) escaped."""
    return message.translate(str.maketrans(_BREAKS)) if any(c in message for c in _BREAKS) else message


#: the errors of a write that room (or a writable filesystem) would fix: disk full, quota, read-only
NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})


class NoRoom(HarnessError):
    """A write that failed for want of room (:data:`NO_ROOM`): one line naming the file and the
    error; every write of the store is atomic, so what was stored before is intact."""


def no_room(exc: BaseException) -> NoRoom | None:
    """The one line for ``exc`` when it is a write that failed for want of room, else None."""
    if isinstance(exc, NoRoom):
        return exc
    if not isinstance(exc, OSError) or exc.errno not in NO_ROOM:
        return None
    where = exc.filename if exc.filename is not None else "a file"
    return NoRoom(f"{where}: cannot write it ({exc.strerror}); what was stored before is intact: make room (or "
                  "pick another --out) and run the same command again")


def one_line(exc: BaseException, keep: str = "all") -> str:
    """An exception's message as one line, else its type's name: ``keep`` ``all`` its lines
    joined with ``; ``, ``first`` the first (a CUDA out-of-memory message's), ``last`` the
    last (a scheduler command's error, after its own preamble)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    return {"all": "; ".join(lines), "first": lines[0], "last": lines[-1]}[keep]


def unknown_name_message(kind: str, name: object, available: Sequence[str], where: str = "") -> str:
    """``unknown head 'linaer'. Did you mean 'linear'? Available: ...``, ``where`` first."""
    at = f"{where}: " if where else ""
    close = difflib.get_close_matches(str(name), list(available), n=1, cutoff=0.6)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return f"{at}unknown {kind} {name!r}.{hint} Available: {', '.join(available) or '(none)'}"


def install_hint(extra: str) -> str:
    """How to install an extra: ``pip install 'seqcls-harness[hf]'``."""
    return f"pip install '{DISTRIBUTION}[{extra}]'"
