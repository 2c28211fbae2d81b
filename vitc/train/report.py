"""What a run leaves for humans: metrics as JSON lines, loss/accuracy curves and confusion matrices as PNG."""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from vitc._io import atomic_write
from vitc._lazy import lazy_import, pyplot
from vitc._text import printable


def write_metrics(history: list[dict[str, Any]], path: str | os.PathLike[str]) -> None:
    """Rewrite metrics.jsonl from the history (after a resume it matches the uninterrupted run)."""
    with atomic_write(path) as tmp:
        tmp.write_text("".join(json.dumps(row) + "\n" for row in history))


def write_history(
    history: list[dict[str, Any]], folder: str | os.PathLike[str], title: str, schedule: Sequence[tuple[float, float]]
) -> None:
    """metrics.jsonl and curves.png of the run folder, from the history: at every epoch's end, and from the
    saved history on --resume (a stop between an epoch's logs and its resume state left rows it is past)."""
    write_metrics(history, Path(folder) / "metrics.jsonl")
    plot_curves(history, Path(folder) / "curves.png", title, schedule)


def lr_schedule(
    total_steps: int, warmup_steps: int, base_lr: float, min_lr: float, steps_per_epoch: int, points: int = 200
) -> list[tuple[float, float]]:
    """The run's planned learning rate as (epoch, lr) pairs, for the curves figure."""
    from vitc.train.optim import lr_at

    every = max(1, total_steps // points)
    steps = [*range(0, total_steps, every), total_steps - 1]
    return [((s + 1) / steps_per_epoch, lr_at(s, total_steps, warmup_steps, base_lr, min_lr)) for s in steps]


def plot_curves(
    history: list[dict[str, Any]],
    path: str | os.PathLike[str],
    title: str = "",
    schedule: Sequence[tuple[float, float]] = (),
) -> None:
    """Loss, validation top-1 (best epoch marked) and the learning rate per epoch; markers so one epoch shows."""
    plt = pyplot()
    epochs = [row["epoch"] for row in history]
    dots = {"marker": "o", "ms": 3 if len(history) > 30 else 5}
    fig, (losses, top1, lr) = plt.subplots(1, 3, figsize=(13, 3.8))
    losses.plot(epochs, [row["train_loss"] for row in history], label="train loss", **dots)
    losses.plot(epochs, [row["val_loss"] for row in history], label="val loss", **dots)
    losses.set_title("loss")
    top1.plot(epochs, [row["val_top1"] for row in history], color="tab:green", label="val top-1", **dots)
    best = max(history, key=lambda row: row["val_top1"])
    top1.axvline(best["epoch"], color="0.5", ls=":", lw=1)
    top1.plot([best["epoch"]], [best["val_top1"]], marker="*", ms=14, color="tab:red", ls="none",
              label=f"best: {best['val_top1']:.2f}% (epoch {best['epoch']})")  # fmt: skip
    top1.set_title("validation top-1 (%)")
    if schedule:
        lr.plot([e for e, _ in schedule], [v for _, v in schedule], color="0.6", lw=1, label="schedule")
    lr.plot(epochs, [row["lr"] for row in history], color="tab:purple", ls="none", label="end of epoch", **dots)
    lr.set_title("learning rate")
    for ax in (losses, top1, lr):
        ax.set_xlabel("epoch")
        ax.set_xlim(0, max(max(epochs), schedule[-1][0] if schedule else 0) + 0.5)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def plot_confusion(
    matrix: Any,
    class_names: Sequence[str],
    path: str | os.PathLike[str],
    title: str = "",
    other_column: bool = False,
) -> None:
    """A confusion matrix heat map with counts, true classes on rows; `other_column`: the last column
    counts predictions of classes outside `class_names`. Counts are in type as large as the cells
    allow, white on dark cells. Names and title are drawn as `printable` shows them: a folder name that is
    not UTF-8 (Latin-1 bytes from an archive, held as surrogates) is refused by matplotlib's text."""
    plt = pyplot()
    class_names, title = [printable(name) for name in class_names], printable(title)
    rows = len(class_names)
    cols = rows + int(other_column)
    cell = 0.7 if rows <= 10 else 0.45  # inches
    fig, ax = plt.subplots(figsize=(max(4.5, cell * cols + 2.5), max(4, cell * rows + 2)))
    peak = max((max(r) for r in matrix), default=0) or 1
    ax.imshow(matrix, cmap="Blues", vmin=0, vmax=peak, aspect="auto")
    ax.set_xticks(range(cols), [*class_names, "other"][:cols], rotation=90 if cols > 10 else 0)
    ax.set_yticks(range(rows), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if rows <= 30:
        size = 13 if rows <= 10 else 9 if rows <= 20 else 7
        for i in range(rows):
            for j in range(cols):
                value = int(matrix[i][j])
                colour = "white" if value > 0.55 * peak else "black"
                ax.text(j, i, value, ha="center", va="center", fontsize=size, color=colour)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


class TensorBoardLog:
    """Scalars per step and per epoch and the run's figures as images, for `tensorboard --logdir RUN`."""

    SAMPLE = 16  # validation images the locality figures are measured on

    def __init__(self, folder: str | os.PathLike[str], purge_step: int | None = None) -> None:
        """`purge_step`: TensorBoard hides every record of the folder, of every tag, at that step or later that
        was written before this writer (a stopped run's records past its resume point)."""
        lazy_import("tensorboard")  # SummaryWriter needs it: a VitcError naming the extra when missing
        writer = lazy_import("torch.utils.tensorboard").SummaryWriter
        self.writer = writer(log_dir=str(folder), purge_step=purge_step)
        self.sample: Any = None  # the first validation images, kept by tap()
        self._layout_written = False

    def tap(self, batches: Iterable[tuple[Any, Any, Any]]) -> Iterator[tuple[Any, Any, Any]]:
        """Pass (images, labels, notes) batches through, keeping the first SAMPLE images once."""
        for batch in batches:
            if self.sample is None and len(batch[0]):
                self.sample = batch[0][: self.SAMPLE].clone()
            yield batch

    def step(self, step: int, **scalars: float) -> None:
        for name, value in scalars.items():
            self.writer.add_scalar(f"step/{name}", value, step)

    def epoch(self, row: dict[str, Any], figures: Sequence[str | os.PathLike[str]] = ()) -> None:
        """The epoch's metrics row as scalars, each PNG in `figures` as an image; flushed (a kill loses nothing)."""
        for name, value in row.items():
            if name != "epoch" and isinstance(value, (int, float)):
                self.writer.add_scalar(f"epoch/{name}", value, row["epoch"])
        self.images(figures, row["epoch"])

    def images(self, figures: Sequence[str | os.PathLike[str]], step: int, prefix: str = "") -> None:
        """Each PNG as an image named after its file, at `step`; flushed."""
        numpy, image = lazy_import("numpy"), lazy_import("PIL.Image")
        for path in figures:
            with image.open(path) as png:
                pixels = numpy.asarray(png.convert("RGB"))
            self.writer.add_image(prefix + Path(path).stem, pixels, step, dataformats="HWC")
        self.writer.flush()

    def locality(self, model: Any, images: Any, step: int, figures: bool = True) -> None:
        """`vitc inspect`'s measures of `model` on `images` as scalars (each layer's mean attention distance, each
        GPSA head's gate: ConViT's figure of the gates through training) and, with `figures`, its figures as
        images. Measured where the model is, in full precision and with every training flag given back: a CPU
        copy kept the GPU waiting on the CPU's forward pass of the whole model every epoch."""
        from vitc._modules import eval_mode
        from vitc.analysis.locality import analyse

        torch = lazy_import("torch")
        weight = next(model.parameters())
        with eval_mode(model), torch.autocast(weight.device.type, enabled=False):
            report = analyse(model, images.to(weight.device, weight.dtype))
        self._locality_scalars(report, step)
        if figures:
            self._locality_figures(report, model, images.shape[-1], step)
        self.writer.flush()

    def _locality_scalars(self, report: Any, step: int) -> None:
        """One chart per GPSA layer with a line per head (TensorBoard's custom scalars), written once."""
        gate_tags = {name: [f"locality/gate/{name}/h{h}" for h in range(len(g))] for name, g in report.gates.items()}
        if gate_tags and not self._layout_written:
            charts = {name: ["Multiline", [f"^locality/gate/{re.escape(name)}/h"]] for name in gate_tags}
            self.writer.add_custom_scalars({"GPSA gates σ(λ) per head": charts})
            self._layout_written = True
        for name, row in zip(report.layers, report.distance):
            self.writer.add_scalar(f"locality/distance/{name}", sum(row) / len(row), step)
        for name, tags in gate_tags.items():
            for tag, value in zip(tags, report.gates[name]):
                self.writer.add_scalar(tag, value, step)

    def _locality_figures(self, report: Any, model: Any, image_side: int, step: int) -> None:
        import tempfile

        from vitc.analysis import figures

        grid, stride = figures.token_grid(model, image_side)
        with tempfile.TemporaryDirectory() as folder:
            self.images(figures.write_all(report, Path(folder), grid, stride), step, prefix="locality/")

    def close(self) -> None:
        self.writer.close()

    @contextlib.contextmanager
    def moving(self, folder: str | os.PathLike[str]) -> Iterator[None]:
        """The run folder renamed in the block (a --force run's `.NAME.new/` becoming NAME): the writer, which
        appends by path, is closed before and goes on in `folder` after, in a new event file there."""
        self.writer.close()
        yield
        self.writer = lazy_import("torch.utils.tensorboard").SummaryWriter(log_dir=str(folder))
