"""Text from files and folders on a terminal: control characters escaped, never interpreted.

A class name, model name, metadata value or path can carry an ANSI escape sequence (recolour, clear
or rewrite the terminal) or a newline (a message that looks like two). Every console vitc prints
on, in the CLI and in the training loop alike, is a `PlainConsole`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.text import Text


def printable(text: str) -> str:
    """Control characters (ESC, a newline in a file name) shown escaped, so text from a file stays one line
    and cannot drive the terminal."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


LOG_WIDTH = 200  # columns of output that is not a terminal, unless COLUMNS says otherwise


class PlainConsole(Console):
    """A console that escapes the control characters of every string it renders (table cells, titles,
    printed text); the line breaks of vitc's own multi-line strings stay.

    Output that is not a terminal (a log file, `| tee`, CI) is LOG_WIDTH columns wide rather than Rich's
    80, so a table written there keeps its numbers instead of cutting them to "…"; a terminal keeps its
    own width, and COLUMNS (or `width=`) still wins.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if kwargs.get("width") is None and "COLUMNS" not in os.environ and not (self.is_terminal or self.is_jupyter):
            self.width = LOG_WIDTH

    def render_str(self, text: str, **kwargs: Any) -> Text:
        return super().render_str("\n".join(printable(line) for line in text.split("\n")), **kwargs)


def few_names(names: Sequence[str], shown: int = 5) -> str:
    """A list of names in a line: its first ones, and how many there are in all when some are left out."""
    more = f", … ({len(names)} in all)" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more
