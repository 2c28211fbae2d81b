"""Ctrl-C and SIGTERM during training, held while a step exchanges its gradients and records that it is
done, and while an epoch's end records the epoch.

SIGTERM (Slurm's preemption, `timeout`, `docker stop`, and the `--nproc` launcher stopping its ranks) is
taken as Ctrl-C: Python's default ends the process at once, saving nothing and saying nothing. Either
then saves the exact step and says how to continue, with exit code 128 + the signal.

Under DDP the terminal's Ctrl-C (or the launcher's SIGTERM) reaches every process at once and each saves
where it stands; a resume continues each process from its own saved streams only where all stopped at
the same step. Raised at once, KeyboardInterrupt could stop one process just before its step is recorded
and another just after. Held from the backward pass (DDP's gradient all-reduce) until the step is
recorded, it lets a step whose gradients were exchanged finish in every process, and one whose exchange
never completed finish in none: that exchange fails once the peer that stopped has gone, and with Ctrl-C
pressed the failure is the interruption. One process gains too: no optimiser step is saved applied but
uncounted. A second Ctrl-C does not wait (a large model's step on a CPU takes seconds): the step is then
cut short, as every Ctrl-C cut it before. A second SIGTERM does wait: it is no one insisting (Slurm
signals every process of a job and the launcher its ranks again), and its sender's next word is SIGKILL.
Under nccl the exchange is queued on the GPU and the backward returns before it completes, so processes
can still stop a step apart there: each then says so and draws fresh random streams from the resumed
step (vitc.train.setup), as every process above 0 did before.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from vitc._signals import STOP_SIGNALS, replaceable, stop_said


class CtrlC:
    """SIGINT or SIGTERM while `installed`: KeyboardInterrupt at once, or at the end of a `held` section."""

    def __init__(self) -> None:
        self.holding = False
        self.pressed = False
        self.signum: int = signal.SIGINT  # the stop signal received last

    @contextmanager
    def installed(self) -> Iterator[None]:
        """Take SIGINT and SIGTERM over from Python's defaults or the CLI's SIGTERM-as-Ctrl-C (vitc.cli.main);
        elsewhere (not the main thread, or a handler the embedding program set) leave them, and `held` holds
        nothing."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        taken = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS if replaceable(signum)}
        for signum in taken:
            signal.signal(signum, self._on_signal)
        try:
            yield
        finally:
            for signum, before in taken.items():
                signal.signal(signum, before)

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

    def said(self) -> str:
        """What stopped the run, as its message starts: `interrupted` (Ctrl-C) or `stopped by SIGTERM`."""
        return stop_said(self.signum)

    @property
    def exit_code(self) -> int:
        """128 + the signal, as a shell reports a process that the signal ended (130 for Ctrl-C)."""
        return 128 + self.signum

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        again = self.pressed and self.holding and signum == signal.SIGINT
        if again:  # pressed again while a long step finishes (a CPU's): stop now
            self.holding = False
            raise KeyboardInterrupt
        if not self.pressed:
            self.signum = signum
        self.pressed = True
        if not self.holding:
            raise KeyboardInterrupt
