"""Every console vitc prints on, in the CLI and in the training loop alike: a `PlainConsole`.

Apart from vitc._text (plain-text helpers that need no Rich) so that the library modules reading only those
(vitc.export, vitc.pretrained) do not import Rich, whose import draws from Python's `random` stream.
"""

from __future__ import annotations

import os
from typing import Any

from rich.console import Console
from rich.text import Text

from vitc._text import printable

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
