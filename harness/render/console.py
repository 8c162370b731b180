"""The console every printer writes to, and the lines that are not tables: errors, notes, text.

Rendering happens at the edge: only :mod:`harness.render` and :mod:`harness.cli` print.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.text import Text


class _Consoles:
    """Consoles made on first use, so they write to the sys.stdout/stderr of that moment.
    Piped output (a file, CI, a test) gets a wide console: tables are not squeezed to 80."""

    def _make(self, stderr: bool) -> Console:
        stream = sys.stderr if stderr else sys.stdout
        width = None if stream.isatty() else int(os.environ.get("COLUMNS", 200))
        return Console(stderr=stderr, width=width)

    @property
    def out(self) -> Console:
        return self._make(False)

    @property
    def err(self) -> Console:
        return self._make(True)


consoles = _Consoles()


def plain(value: Any) -> Text:
    """A cell as plain text: an error, a path or an option value may hold brackets
    (``[/path/pair.cc:553]``) that rich would read as markup."""
    return Text(str(value))


def print_text(text: str) -> None:
    """Plain text to stdout, as is (markdown, csv): no wrapping, no markup."""
    sys.stdout.write(text)
    sys.stdout.flush()


def print_error(message: str) -> None:
    # one line whatever the message holds; escaped: a user's `[bold]` is text, not markup
    message = "; ".join(line.strip() for line in message.splitlines() if line.strip())
    consoles.err.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)


def print_note(message: str) -> None:
    consoles.err.print(escape(message), highlight=False, soft_wrap=True)
