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
