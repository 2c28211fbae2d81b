"""What a run leaves for humans: metrics as JSON lines, loss/accuracy curves and confusion matrices as PNG."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vitc._io import atomic_write
from vitc._lazy import lazy_import


def write_metrics(history: list[dict[str, Any]], path: str | os.PathLike[str]) -> None:
    """Rewrite metrics.jsonl from the history (after a resume it matches the uninterrupted run)."""
    with atomic_write(path) as tmp:
        tmp.write_text("".join(json.dumps(row) + "\n" for row in history))


def pyplot() -> Any:
    matplotlib = lazy_import("matplotlib")
    matplotlib.use("Agg")
    return lazy_import("matplotlib.pyplot")


def plot_curves(history: list[dict[str, Any]], path: str | os.PathLike[str]) -> None:
    """Training loss and validation top-1 per epoch, side by side."""
    plt = pyplot()
    epochs = [row["epoch"] for row in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(epochs, [row["train_loss"] for row in history], label="train loss")
    left.plot(epochs, [row["val_loss"] for row in history], label="val loss")
    left.set_xlabel("epoch")
    left.legend()
    right.plot(epochs, [row["val_top1"] for row in history], label="val top-1 (%)")
    right.set_xlabel("epoch")
    right.legend()
    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def plot_confusion(matrix: Any, class_names: Sequence[str], path: str | os.PathLike[str], title: str = "") -> None:
    """A confusion matrix heat map with counts, true classes on rows."""
    plt = pyplot()
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(max(4, 0.5 * n + 2), max(4, 0.5 * n + 2)))
    ax.imshow(matrix, cmap="Blues")
    ticks = range(n)
    ax.set_xticks(ticks, class_names, rotation=90 if n > 10 else 0)
    ax.set_yticks(ticks, class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 20:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, int(matrix[i][j]), ha="center", va="center", fontsize=7)
    ax.set_title(title)
    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
