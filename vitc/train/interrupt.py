"""Ctrl-C during training, held while a step exchanges its gradients and records that it is done.

Under DDP the terminal's Ctrl-C reaches every process at once and each saves where it stands; a resume
continues each process from its own saved streams only where all stopped at the same step. Raised at
once, KeyboardInterrupt could stop one process just before its step is recorded and another just
after. Held from the backward pass (DDP's gradient all-reduce) until the step is recorded, it lets a
step whose gradients were exchanged finish in every process, and one whose exchange never completed
finish in none: that exchange fails once the peer that stopped has gone, and with Ctrl-C pressed the
failure is the interruption. One process gains too: no optimiser step is saved applied but uncounted.
A second Ctrl-C does not wait (a large model's step on a CPU takes seconds): the step is then cut short,
as every Ctrl-C cut it before. Under nccl the exchange is queued on the GPU and the backward returns
before it completes, so processes can still stop a step apart there: each then says so and draws fresh
random streams from the resumed step (vitc.train.setup), as every process above 0 did before.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


class CtrlC:
    """SIGINT while `installed`: KeyboardInterrupt at once, or at the end of a `held` section."""

    def __init__(self) -> None:
        self.holding = False
        self.pressed = False

    @contextmanager
    def installed(self) -> Iterator[None]:
        """Take SIGINT over from Python's default handler; elsewhere (not the main thread, or a handler
        the embedding program set) leave it, and `held` holds nothing."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
            yield
            return
        signal.signal(signal.SIGINT, self._on_sigint)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)

    @contextmanager
    def held(self) -> Iterator[None]:
        """A Ctrl-C inside waits for the end; an exception out of it leaves Ctrl-C held, so that a peer's
        failed exchange is seen as the interruption it is (`stopped`), not hidden by a KeyboardInterrupt."""
        self.holding = True
        yield
        self.holding = False
        if self.pressed:
            raise KeyboardInterrupt

    def stopped(self) -> bool:
        """Ctrl-C was pressed (a Python call: a signal that arrived during a blocking call is handled first)."""
        return self.pressed

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        if self.pressed and self.holding:  # pressed again while a long step finishes (a CPU's): stop now
            self.holding = False
            raise KeyboardInterrupt
        self.pressed = True
        if not self.holding:
            raise KeyboardInterrupt


@contextmanager
def sigint_ignored() -> Iterator[None]:
    """Further Ctrl-C presses ignored while an interrupted run saves its state: a second press killed the
    save half-way (the file is written atomically, so the previous state stayed, and the run said nothing)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
