"""Terminal output where every string is plain text.

Paths, class names and option values come from the user and may hold `[` and `]` (`out[/]` is a
valid folder): Rich would read them as markup, crash or restyle them. vitc's consoles therefore
never parse markup; its own styling goes through `Text` spans. Text from a file may also hold
control characters (a class name carrying an ANSI escape sequence would recolour or rewrite the
terminal): every string these consoles print shows them escaped, as error messages do.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.text import Text


def printable(text: str) -> str:
    """Control characters (ESC, a newline in a file name) shown escaped, so text from a file stays one line
    and cannot drive the terminal."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


class PlainConsole(Console):
    """A console that escapes the control characters of every string it renders (table cells, titles,
    printed text); the line breaks of vitc's own multi-line strings stay."""

    def render_str(self, text: str, **kwargs: Any) -> Text:
        return super().render_str("\n".join(printable(line) for line in text.split("\n")), **kwargs)


def console(stderr: bool = False) -> Console:
    return PlainConsole(stderr=stderr, markup=False, highlight=False)


def labelled(label: str, style: str, message: str) -> Text:
    """`label` in `style`, then the message as plain text: e.g. a yellow `warning:`."""
    return Text.assemble((label, style), " ", printable(message))
