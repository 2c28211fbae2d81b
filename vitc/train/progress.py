"""A rich progress bar per epoch (loss, lr, img/s, ETA) and one line of metrics after each epoch."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn


class EpochProgress:
    """Shown on rank 0 only; disabled it costs nothing."""

    def __init__(self, enabled: bool = True, console: Console | None = None, show_top5: bool = True) -> None:
        """`show_top5` False with 5 classes or fewer, where top-5 is 100% by construction."""
        self.enabled = enabled
        self.show_top5 = show_top5
        self.console = console or Console()
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._batch = 0

    def start(self, epoch: int, epochs: int, steps: int, done: int = 0) -> None:
        if not self.enabled:
            return
        self._progress = Progress(
            TextColumn(f"epoch {epoch + 1}/{epochs}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}  lr {task.fields[lr]:.2e}  {task.fields[rate]:.0f} img/s"),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        )
        self._progress.start()
        self._task = self._progress.add_task("train", total=steps, completed=done, loss=0.0, lr=0.0, rate=0.0)

    def advance(self, loss: float | None, lr: float, images: int = 0) -> None:
        """One step done; `loss` None keeps the loss shown (on a GPU it is read every few steps: `show_loss`)."""
        if self._progress is None or self._task is None:
            return
        task = self._progress.tasks[0]
        rate = (task.completed + 1) / task.elapsed if task.elapsed else 0.0
        shown = {} if loss is None else {"loss": loss}
        self._progress.update(self._task, advance=1, lr=lr, rate=rate * max(images, 1), **shown)

    def show_loss(self, loss: float) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, loss=loss)

    def finish(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def epoch_summary(self, row: dict[str, Any]) -> None:
        if self.enabled:
            self.console.print(
                f"epoch {row['epoch']:>3}  train loss {row['train_loss']:.4f}  val loss {row['val_loss']:.4f}  "
                f"val top-1 {row['val_top1']:.2f}%" + (f"  top-5 {row['val_top5']:.2f}%" if self.show_top5 else ""),
                highlight=False,
            )
