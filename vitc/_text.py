"""Text from files and folders on a terminal: control characters escaped, never interpreted.

A class name, model name, metadata value or path can carry an ANSI escape sequence (recolour, clear
or rewrite the terminal) or a newline (a message that looks like two). Every console vitc prints
on, in the CLI and in the training loop alike, is a `PlainConsole` (vitc._terminal), which escapes them so.
No Rich here: vitc.export and vitc.pretrained read these helpers.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from collections.abc import Sequence


def printable(text: str) -> str:
    """Control characters (ESC, a newline in a file name) shown escaped, so text from a file stays one line
    and cannot drive the terminal."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def few_names(names: Sequence[str], shown: int = 5) -> str:
    """A list of names in a line: its first ones, and how many there are in all when some are left out."""
    more = f", … ({len(names)} in all)" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def shell_word(arg: str) -> str:
    """`arg` as one word of a command the user pastes: POSIX shell quoting, or on Windows double quotes where
    needed (cmd.exe keeps POSIX's single quotes as part of the word: 'C:\\runs\\my run' is no path there)."""
    return subprocess.list2cmdline([arg]) if sys.platform == "win32" else shlex.quote(arg)


def rate(per_second: float) -> str:
    """A rate (img/s) as vitc prints it: whole numbers from 10 up, one decimal below, so a slow run (a CPU, a
    big model) reads 0.4 img/s, not 0."""
    return f"{per_second:.1f}" if abs(per_second) < 10 else f"{per_second:.0f}"
