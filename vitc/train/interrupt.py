"""Ctrl-C and SIGTERM during training, held while a step exchanges its gradients and records that it is
done, and while an epoch's end records the epoch.

SIGTERM (Slurm's preemption, `timeout`, `docker stop`, and the `--nproc` launcher stopping its ranks) is
taken as Ctrl-C: Python's default ends the process at once, saving nothing and saying nothing. Either
then saves the exact step and says how to continue, with exit code 128 + the signal.

Under DDP the terminal's Ctrl-C (or the launcher's SIGTERM) reaches every process at once and each saves
where it stands; a resume continues each process from its own saved streams only where all stopped at the
same step. Raised at once, KeyboardInterrupt could stop one process just before its step is recorded and
another just after. Held from the backward pass (DDP's gradient all-reduce) until the step is recorded, it
lets a step whose gradients were exchanged finish in every process, and one whose exchange never completed
finish in none: that exchange fails once the peer that stopped has gone, and with Ctrl-C pressed the failure
is the interruption. One process gains too: no optimiser step is saved applied but uncounted, and no step's
loss is dropped between its read-back and the epoch's running sums. A second Ctrl-C does not wait (a large
model's step on a CPU takes seconds): the step is then cut short, as every Ctrl-C cut it before. A second
SIGTERM does wait: it is no one insisting (Slurm signals every process of a job and the launcher its ranks
again), and its sender's next word is SIGKILL. Under nccl the exchange is queued on the GPU and the backward
returns before it completes, so processes can still stop a step apart there: each then says so and draws
fresh random streams from the resumed step (vitc.train.setup), as every process above 0 did before.

What a stopped run then saves and the one line it ends with (`interrupted`, `TrainingInterrupted`) are
here too; the loop (vitc.train.loop) catches the KeyboardInterrupt and calls them.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING, NoReturn

import torch
from torch import nn

from vitc._run_layout import RunLayout
from vitc._signals import STOP_SIGNALS, replaceable, stop_said
from vitc.errors import VitcError
from vitc.train.agree import launched_by_nproc
from vitc.train.peers import said_once_per_machine
from vitc.train.run_folder import resume_command
from vitc.train.state import RankState, TrainState, save_state, set_rng_states

if TYPE_CHECKING:
    from vitc.train.setup import Run  # setup.py imports CtrlC from here


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


class TrainingInterrupted(VitcError):
    """Ctrl-C (exit code 130) or SIGTERM (143): a resumable checkpoint was written."""

    exit_code = 130


# -- a stopped run: what it saves and the line it ends with -------------------------------------------
def interrupted(run: Run) -> NoReturn:
    """Ctrl-C: undo a step cut short, save the resumable state, say how to continue. Under DDP every process
    is interrupted: rank 0 saves the state, and within an epoch each other process its own streams and
    running sums beside it, as it may not join a collective now (a peer can be waiting in the step's
    gradient all-reduce for a process that has stopped)."""
    cfg, state, dist, folder = run.cfg, run.state, run.dist, run.folder
    run.progress.finish()
    run.meter.settle(state.partial, state.epoch, run.progress, run.board, run.run_dir)  # the finished steps count
    if run.board:  # their scalars to disk now: the resumed session logs from the step after them
        run.board.close()
    if run.tick is not None:  # cut short within an epoch: its training time so far counts
        state.train_seconds += time.perf_counter() - run.tick
    state.seconds = run.earlier + time.perf_counter() - run.started
    if dist.is_main and folder.abandon():
        raise interruption(
            run,
            f" before the first epoch ended: {folder.final} is kept as it was (--force replaces a run once the new "
            "one has a checkpoint)",
        ) from None
    summed = run.ending is not None  # the epoch's running sums are all in rank 0's now
    if summed:  # cut short in an epoch's end, before its resume state: --resume runs that end again
        _undo_epoch_end(run)
    if state.epoch < cfg.optim.epochs:
        if run.unfinished is not None:  # a step was cut short: undo its random draws
            run.aug_gen.set_state(run.unfinished[0])
            set_rng_states(run.unfinished[1])
        if run.stats_before is not None:  # and the running statistics its forward took (CvT's, SP-ViT's BatchNorm)
            with torch.no_grad():
                for tensor, before in zip(running_stats(run.model), run.stats_before, strict=True):
                    tensor.copy_(before)
        if dist.is_main:
            resumable = (state, run.model, run.optimizer, run.ema and run.ema.module, {"aug": run.aug_gen})
            save_state(RunLayout(folder.path).resume, *resumable, run.run_info, run.scaler)
            if run.curves.lacks(state.history):  # epochs ended since it was drawn (report.CURVES_EVERY_S)
                run.curves.draw(state.history, folder.path, cfg, run.schedule)
            folder.commit()
        elif state.step_in_epoch and not summed and run.in_place:  # not into a --force copy rank 0 drops
            RankState(RunLayout(folder.final).resume, dist.rank, dist.world_size).save(state, {"aug": run.aug_gen})
    raise interruption(run, f"; continue with: {resume_command(cfg, dist.world_size, launched_by_nproc())}") from None


def _undo_epoch_end(run: Run) -> None:
    """Stopped in an epoch's end before its resume state was saved: the state as that end began, its row
    and best score taken back, so that --resume runs the end again (validation, checkpoints, every log)."""
    state = run.state
    state.epoch, state.step_in_epoch, run.ending = state.epoch - 1, run.ending, None
    if state.history and state.history[-1]["epoch"] > state.epoch:  # rank 0 had taken its row in
        state.history.pop()
        state.best_top1 = max((row["val_top1"] for row in state.history), default=TrainState.best_top1)
        state.stopped_early = False  # the loop ran: no earlier epoch had stopped it


def running_stats(model: nn.Module) -> list[torch.Tensor]:
    """BatchNorm's running statistics (CvT's projections, SP-ViT's stem): buffers a training forward updates in
    place, before the step is held, so that a stop landing in it would save one batch's statistics twice."""
    return [
        buffer
        for module in model.modules()
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats
        for buffer in (module.running_mean, module.running_var, module.num_batches_tracked)
        if buffer is not None
    ]


def interruption(run: Run, rest: str) -> TrainingInterrupted:
    """The one line a stopped run ends with: what stopped it (Ctrl-C or SIGTERM), then `rest`; exit 128 + the
    signal."""
    stopped = TrainingInterrupted(run.ctrl_c.said() + rest)
    stopped.exit_code = run.ctrl_c.exit_code
    return said_once_per_machine(stopped)  # under torchrun Ctrl-C stops every process alike: one line


def left_untested(run: Run) -> str:
    """After training, the final test cut short (Ctrl-C, another process's end): what is kept, and the command that
    scores it (--resume of a run whose epochs are done tests it and writes summary.json)."""
    command = resume_command(run.cfg, run.dist.world_size, launched_by_nproc())
    return f"{run.run_dir}'s checkpoints are complete; its test score and summary.json follow from: {command}"
