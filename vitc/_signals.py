"""Ctrl-C (SIGINT) and SIGTERM, the signals that stop vitc, kept out of the moments that must not be cut.

SIGTERM is Slurm's preemption, `timeout`, `docker stop`, and the `--nproc` launcher stopping its ranks.
Both are taken over only in the main thread (Python delivers signals there alone) and only where Python
set the handler: a handler installed from C (getsignal gives None) cannot be put back, so it is left.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

# the signals that stop a run, each with the handler Python starts with (a program embedding vitc that set
# its own keeps it)
STOP_SIGNALS = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}


class SigtermAsCtrlC:
    """The handler `sigterm_as_ctrl_c` installs: the first SIGTERM raises KeyboardInterrupt, later ones wait
    (its sender's next word is SIGKILL, and a second KeyboardInterrupt would cut the clean-up short)."""

    def __init__(self) -> None:
        self.received: list[int] = []

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.received.append(signum)
        if len(self.received) == 1:
            raise KeyboardInterrupt


@contextmanager
def sigterm_as_ctrl_c() -> Iterator[SigtermAsCtrlC]:
    """SIGTERM (a CI runner's timeout, `docker stop`) taken as Ctrl-C by every command: Python's default ended
    the process at once, leaving `atomic_write`'s hidden temporaries (a partial ONNX file) that nothing removed.
    Only in the main thread and only over Python's default (an embedding program's handler is kept); a handler
    `vitc train` installs itself replaces this one while it runs (`replaceable`)."""
    handler = SigtermAsCtrlC()
    if threading.current_thread() is not threading.main_thread() or not replaceable(signal.SIGTERM):
        yield handler
        return
    signal.signal(signal.SIGTERM, handler)
    try:
        yield handler
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def replaceable(signum: int) -> bool:
    """The stop signal's handler is Python's default or vitc's own SIGTERM-as-Ctrl-C, not an embedding program's."""
    handler = signal.getsignal(signum)
    return handler is STOP_SIGNALS[signum] or isinstance(handler, SigtermAsCtrlC)


def stop_said(signum: int) -> str:
    """What stopped a command, as its line says: `interrupted` (Ctrl-C) or `stopped by SIGTERM`."""
    return "interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}"


@contextmanager
def stop_signals_ignored() -> Iterator[None]:
    """Further Ctrl-C presses and SIGTERMs ignored while an interrupted run saves its state: a second press
    killed the save half-way (the file is written atomically, so the previous state stayed, and the run
    said nothing)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = _take_over(signal.SIG_IGN)
    try:
        yield
    finally:
        _give_back(previous)


@contextmanager
def stop_signals_held() -> Iterator[None]:
    """Ctrl-C and SIGTERM inside wait for its end and then act as they would have (a KeyboardInterrupt, the
    end of the process, or the embedding program's handler): for steps that belong together, such as the
    renames that put an ONNX file and the manifest holding its hash in place, which a Ctrl-C between them
    left matching neither the old export nor the new. Inside must take moments, not seconds: a second
    press waits too. A signal received while an exception leaves is not acted on again: the error stops
    the command."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    previous = _take_over(hold)
    try:
        yield
    finally:
        _give_back(previous)
    for signum in dict.fromkeys(received):  # each once, in the order they came
        signal.raise_signal(signum)


def _take_over(handler: Any) -> dict[int, Any]:
    """`handler` for every stop signal whose handler Python set; {signal: the handler it had}."""
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    taken: dict[int, Any] = {signum: was for signum, was in previous.items() if was is not None}
    for signum in taken:
        signal.signal(signum, handler)
    return taken


def _give_back(previous: dict[int, Any]) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)
