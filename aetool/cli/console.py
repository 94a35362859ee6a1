"""TODO docstring."""

from __future__ import annotations

import os

from rich.console import Console


def make_err_console(quiet: bool = False) -> Console:
    """The stderr console: honours NO_COLOR, and plain text when stderr is not a terminal."""
    console = Console(
        stderr=True,
        quiet=quiet,
        no_color=bool(os.environ.get("NO_COLOR")),
        highlight=False,
    )
    # In logs a message stays on one line (grep-able); tables keep their width.
    console.soft_wrap = not console.is_terminal
    return console
