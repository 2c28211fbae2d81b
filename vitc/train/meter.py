"""Each training step's loss and time, read back from the device only every few steps.

A `loss.item()` per step makes the host wait for the GPU to finish the step's forward before it may
queue the rest and prepare the next batch, so the GPU idles while Python runs. The meter keeps each
step's loss on the device and its start and end as CUDA events, and reads a group of them back in one
wait (`settle`), every `READ_EVERY` steps and at the end of an epoch: it checks finiteness, adds the
losses up and logs them then. On a CPU nothing runs ahead, so it reads every step (the loop
behaves and sums as it always did) and times with the host clock.

The timing answers where a step's time goes: per step, the device's wait between the previous step's
end and this one's start (the next batch, the host's Python between steps) against the step itself;
the session's first step (CUDA/cuBLAS set-up, or compiling with run.compile) apart as the warm-up.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vitc._run_layout import RunLayout
from vitc.errors import VitcError

READ_EVERY = {"cpu": 1}  # steps between reads by device type; elsewhere 25: one wait per 25 steps


@dataclass
class Step:
    """One finished step, until it is read: its loss (still on the device) and where it stands."""

    loss: torch.Tensor
    images: int
    step: int  # within the epoch, from 0
    global_step: int
    lr: float
    gap: tuple[Any, Any]  # (the previous step's end, this one's start): the wait for the batch
    run: tuple[Any, Any]  # (this step's start, its end)


class StepMeter:
    """Marks steps on the device's timeline; `read` returns their losses in order and adds up the time."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.read_every = READ_EVERY.get(device.type, 25)
        self.pending: list[Step] = []
        self.last: Any = None  # the end of the last step, or the start of the epoch
        self.wait_seconds = 0.0  # the device waiting before each step but the session's first (feed, host)
        self.step_seconds = 0.0  # the steps after the session's first
        self.step_images = 0
        self.steps = 0
        self.warmup_seconds: float | None = None  # the session's first step, from the start of its epoch
        self.eval_seconds = 0.0  # validation and the final test, timed by the loop

    def mark(self) -> Any:
        """Now, on the device's timeline: a CUDA event on the current stream, or the host clock."""
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def start_epoch(self) -> None:
        self.last = self.mark()

    def finish(self, loss: torch.Tensor, images: int, step: int, global_step: int, lr: float, start: Any) -> None:
        """Step `step` ended now; `start` was marked when its batch was ready."""
        end = self.mark()
        self.pending.append(Step(loss.detach(), images, step, global_step, lr, (self.last, start), (start, end)))
        self.last = end

    def due(self) -> bool:
        return len(self.pending) >= self.read_every

    def read(self) -> Iterator[tuple[float, Step]]:
        """(loss, step) of every pending step in order, after one wait for the device."""
        pending, self.pending = self.pending, []
        if not pending:
            return iter(())
        values = torch.stack([s.loss for s in pending]).tolist()
        if self.cuda:
            pending[-1].run[1].synchronize()  # every event has happened: their times can be read
        for s in pending:
            wait, took = self._seconds(*s.gap), self._seconds(*s.run)
            if self.warmup_seconds is None:
                self.warmup_seconds = wait + took
            else:
                self.wait_seconds += wait
                self.step_seconds += took
                self.step_images += s.images
            self.steps += 1
        return zip(values, pending, strict=True)

    def settle(self, partial: dict[str, float], epoch: int, progress: Any, board: Any, run_dir: Path) -> None:
        """Read the finished steps: the run stops at the first loss that is not finite, naming its epoch
        and step; the others add to the epoch's running sums (`partial`), the progress bar and TensorBoard."""
        for value, done in self.read():
            if not math.isfinite(value):
                raise VitcError(
                    f"the loss became {value} at epoch {epoch + 1}, step {done.step + 1}; stopped. "
                    f"The last good checkpoint is {RunLayout(run_dir).last} (lower optim.lr and --resume)"
                )
            partial["loss"] += value * done.images
            partial["count"] += done.images
            progress.show_loss(value, partial["loss"] / partial["count"])
            if board:
                board.step(done.global_step, loss=value, lr=done.lr)

    @contextmanager
    def evaluating(self) -> Iterator[None]:
        """Time validation or the final test (synchronous: it reads every batch's logits back)."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.eval_seconds += time.perf_counter() - started

    def _seconds(self, start: Any, end: Any) -> float:
        return start.elapsed_time(end) / 1000.0 if self.cuda else end - start

    def summary(self) -> dict[str, float | None]:
        """This session's figures for summary.json (their meaning: docs/benchmarks.md, "Where a step's time goes")."""
        busy = self.wait_seconds + self.step_seconds
        return {
            "train_step_images_per_s": self.step_images / self.step_seconds if self.step_seconds else None,
            "data_wait_seconds": self.wait_seconds,
            "data_wait_fraction": self.wait_seconds / busy if busy else None,
            "warmup_seconds": self.warmup_seconds,
            "eval_seconds": self.eval_seconds,
        }
