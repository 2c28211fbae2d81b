"""The one exception type that the CLI turns into a one-line message and exit code 2."""

from __future__ import annotations


class VitcError(Exception):
    """A user-facing error: bad input, a missing file, an unsupported option.

    The message must be one line that says what is wrong and, where possible, what to do.
    Anything else that escapes is a bug in vitc and gets a traceback.
    """

    exit_code = 2
