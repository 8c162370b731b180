"""The one user-error type and the documented exit codes.

User mistakes (a bad suite, an unknown plugin, a missing file or model) raise
``HarnessError``. The CLI catches it in one place, prints one red line without a
traceback and exits with ``ExitCode.USAGE``. Anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    OK = 0
    RUN_FAILED = 1  # at least one run failed or diverged, or a comparison crossed a threshold
    USAGE = 2  # bad suite, option, plugin, data file, model or output directory
    INTERRUPTED = 130  # SIGINT/SIGTERM: finished runs are kept, run the same command to resume


class HarnessError(Exception):
    """A user mistake: one line, no traceback, exit code 2."""

    exit_code = ExitCode.USAGE
