"""A rich progress bar per epoch (loss, lr, img/s, ETA) and one line of metrics after each epoch.

Output that is not a terminal (a log file, `| tee`, CI) has no bar, which Rich would draw as nothing but a
blank line: it gets a plain line of the same figures at most every `every_s` seconds instead, as timm's
train.py logs every `log_interval` steps, so that a CI runner's no-output timeout does not stop a long epoch.
"""

from __future__ import annotations

import datetime
import logging
import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from vitc._terminal import PlainConsole
from vitc._text import rate

# a quiet run's epoch lines (show_progress=False): logged at INFO, not printed (`vitc train -q` prints them)
_log = logging.getLogger(__name__)


class EpochProgress:
    """Shown on rank 0 only; disabled it costs nothing."""

    def __init__(
        self,
        enabled: bool = True,
        console: Console | None = None,
        show_top5: bool = True,
        every_s: float = 30.0,
        logged: bool = False,
    ) -> None:
        """`show_top5` False with 5 classes or fewer, where top-5 is 100% by construction. `every_s`: seconds
        between the lines that stand in for the bar where the output is not a terminal (0: none). `logged`: a
        disabled progress (a quiet run's rank 0) still logs each epoch's line to this module's logger."""
        self.enabled = enabled
        self.show_top5 = show_top5
        self.every_s = every_s
        self.logged = logged
        self.console = console or PlainConsole(markup=False, highlight=False)
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._lines: _Lines | None = None

    def start(self, epoch: int, epochs: int, steps: int, done: int = 0) -> None:
        if not self.enabled:
            return
        if not (self.console.is_terminal or self.console.is_jupyter):
            self._lines = _Lines(epoch, epochs, steps, done, self.every_s) if self.every_s > 0 else None
            return
        self._progress = Progress(
            TextColumn(f"epoch {epoch + 1}/{epochs}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}  lr {task.fields[lr]:.2e}  {task.fields[rate]} img/s"),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        )
        self._progress.start()
        self._task = self._progress.add_task("train", total=steps, completed=done, loss=0.0, lr=0.0, rate=rate(0.0))

    def advance(self, loss: float | None, lr: float, images: int = 0) -> None:
        """One step done; `loss` None keeps the loss shown (on a GPU it is read every few steps: `show_loss`)."""
        if self._lines is not None:
            line = self._lines.advance(lr, images)
            if line:
                self.console.print(line, soft_wrap=True)
        if self._progress is None or self._task is None:
            return
        task = self._progress.tasks[0]
        steps_per_s = (task.completed + 1) / task.elapsed if task.elapsed else 0.0
        shown = {} if loss is None else {"loss": loss}
        self._progress.update(self._task, advance=1, lr=lr, rate=rate(steps_per_s * max(images, 1)), **shown)

    def show_loss(self, loss: float, mean: float | None = None) -> None:
        """The last step's loss read back; `mean`: the epoch's running train loss so far."""
        if self._lines is not None:
            self._lines.loss, self._lines.mean = loss, mean
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, loss=loss)

    def finish(self) -> None:
        self._lines = None
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def epoch_summary(self, row: dict[str, Any]) -> None:
        if not (self.enabled or self.logged):
            return
        line = (
            f"epoch {row['epoch']:>3}  train loss {row['train_loss']:.4f}  val loss {row['val_loss']:.4f}  "
            f"val top-1 {row['val_top1']:.2f}%" + (f"  top-5 {row['val_top5']:.2f}%" if self.show_top5 else "")
        )
        if self.enabled:
            self.console.print(line, soft_wrap=True)
        else:
            _log.info(line)


class _Lines:
    """The bar's figures as a line of text, at most every `every_s` seconds of an epoch."""

    def __init__(self, epoch: int, epochs: int, steps: int, done: int, every_s: float) -> None:
        self.where, self.steps, self.done, self.every_s = f"epoch {epoch + 1}/{epochs}", steps, done, every_s
        self.started = self.last = time.monotonic()
        self.stepped = self.images = 0  # this session's steps and images of the epoch (a resume starts within it)
        self.loss: float | None = None
        self.mean: float | None = None

    def advance(self, lr: float, images: int) -> str | None:
        """Count a step; the line to print when `every_s` has passed since the last (or the epoch's start)."""
        self.done, self.stepped, self.images = self.done + 1, self.stepped + 1, self.images + images
        now = time.monotonic()
        if now - self.last < self.every_s:
            return None
        self.last = now
        elapsed = now - self.started
        eta = datetime.timedelta(seconds=round(elapsed / self.stepped * max(0, self.steps - self.done)))
        loss = "" if self.loss is None else f"  loss {self.loss:.4f}"
        mean = "" if self.mean is None else f" (mean {self.mean:.4f})"
        return (
            f"{self.where}  step {self.done}/{self.steps} ({100 * self.done / self.steps:.0f}%){loss}{mean}  "
            f"lr {lr:.2e}  {rate(self.images / elapsed)} img/s  eta {eta}"
        )
