"""Terminal output where every string is plain text.

Paths, class names and option values come from the user and may hold `[` and `]` (`out[/]` is a
valid folder): Rich would read them as markup, crash or restyle them. vitc's consoles therefore
never parse markup; its own styling goes through `Text` spans. Text from a file may also hold
control characters (a class name carrying an ANSI escape sequence would recolour or rewrite the
terminal): every string these consoles print shows them escaped (vitc._terminal), as error messages do.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.text import Text

from vitc._terminal import PlainConsole
from vitc._text import printable

__all__ = [
    "PlainConsole", "console", "labelled", "library_warnings_printed", "printable", "tolerate_narrow_encodings", "warn",
]  # fmt: skip


def console(stderr: bool = False) -> Console:
    return PlainConsole(stderr=stderr, markup=False, highlight=False)


def tolerate_narrow_encodings() -> None:
    """On Windows, output to a file or a pipe (`vitc export ... > log.txt`, CI) is in the ANSI code page,
    cp1252, which has no '→', 'Δ', '≥' or 'σ' of vitc's tables and help: each is written as '?' rather than
    stopping the command with UnicodeEncodeError (after the work, before its artifacts were all written)."""
    for stream in (sys.stdout, sys.stderr):
        if getattr(stream, "errors", None) == "strict" and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="replace")


def labelled(label: str, style: str, message: str) -> Text:
    """`label` in `style`, then the message as plain text: e.g. a yellow `warning:`."""
    return Text.assemble((label, style), " ", printable(message))


def warn(message: str, label: str = "warning:") -> None:
    """A yellow `warning:` (or `skipped:`) line on stderr, where Python, pip and Polygraphy put theirs: stdout
    keeps a command's results (its table, `--json -`), so `vitc predict ... --json - | jq` reads JSON alone."""
    console(stderr=True).print(labelled(label, "yellow", message), soft_wrap=True)


class _ConsoleLines(logging.Handler):
    """Each record's message as a line of its own, as the library printed it before it logged it: a warning
    on stderr, other lines on stdout."""

    def emit(self, record: logging.LogRecord) -> None:
        stderr = record.levelno >= logging.WARNING
        PlainConsole(stderr=stderr, markup=False, highlight=False, soft_wrap=True).print(record.getMessage())


@contextmanager
def library_warnings_printed(*info_from: str) -> Iterator[None]:
    """What vitc's library code logs as a warning (a quiet run's, which it no longer prints) printed by the CLI;
    and what the loggers named in `info_from` log at INFO (`vitc train -q`: the epoch lines)."""
    logger, handler = logging.getLogger("vitc"), _ConsoleLines(logging.WARNING)
    infos = [(logging.getLogger(name), _ConsoleLines(logging.INFO)) for name in info_from]
    levels = [named.level for named, _ in infos]
    logger.addHandler(handler)
    for named, lines in infos:
        lines.addFilter(lambda record: record.levelno < logging.WARNING)  # a warning is printed by `handler`
        named.addHandler(lines)
        named.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        for (named, lines), level in zip(infos, levels):
            named.removeHandler(lines)
            named.setLevel(level)
