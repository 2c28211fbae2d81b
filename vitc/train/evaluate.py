"""Top-1/top-5 evaluation over batches of images from memory or streamed, shared by training and `vitc eval`."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vitc.data.feed import Batch
from vitc.data.files import list_images
from vitc.data.stream import FileIndex
from vitc.data.transforms import eval_transform, to_device
from vitc.errors import VitcError


@torch.no_grad()
def predict_batches(
    model: nn.Module,
    images: Iterable[torch.Tensor],
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device | str = "cpu",
    amp_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Logits in float32 for uint8 image batches at the model's input size, in order.

    The uint8 batch goes to the device (a quarter of the float bytes, asynchronously from pinned
    memory on a GPU) and is normalised there; the logits come back in one copy at the end, so the
    host queues batch after batch without waiting for the GPU.
    """
    model.eval()
    device = torch.device(device)
    cast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else nullcontext()
    outputs = []
    for batch in images:
        x = eval_transform(to_device(batch, device), mean, std)
        with cast:
            outputs.append(model(x).float())
    return torch.cat(outputs).cpu() if outputs else torch.zeros(0, 0)


def predict_labelled(
    model: nn.Module,
    data: Iterable[Batch],
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device | str = "cpu",
    amp_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (float32) and labels of the readable images of (uint8 images, labels, dropped) batches from a
    feed (vitc.data.feed), either path, in order."""
    labels: list[torch.Tensor] = []

    def images() -> Iterable[torch.Tensor]:
        for x, y, _ in data:
            labels.append(y)
            if len(y):
                yield x

    logits = predict_batches(model, images(), mean, std, device, amp_dtype)
    if not len(logits):
        raise VitcError("no readable images to evaluate on")
    return logits, torch.cat(labels)


def evaluate_batches(
    model: nn.Module,
    data: Iterable[Batch],
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device | str = "cpu",
    amp_dtype: torch.dtype | None = None,
) -> dict[str, float]:
    """Top-1/top-5/loss over a feed's batches: training's val and the final test run through here with the
    run's precision."""
    return accuracy(*predict_labelled(model, data, mean, std, device, amp_dtype))


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Top-1 and top-5 (top-k capped at the number of classes) in percent, and the mean cross-entropy."""
    k = min(5, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    hits = top == labels[:, None]
    return {
        "top1": 100.0 * hits[:, 0].float().mean().item(),
        "top5": 100.0 * hits.any(dim=1).float().mean().item(),
        "loss": F.cross_entropy(logits, labels).item(),
    }


def confusion_matrix(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(true, predicted) counts."""
    pred = logits.argmax(dim=1)
    return torch.bincount(labels * num_classes + pred, minlength=num_classes**2).reshape(num_classes, num_classes)


def per_class(matrix: torch.Tensor, classes: Sequence[int], class_names: Sequence[str]) -> list[dict[str, Any]]:
    """Precision, recall and support of each class in `classes` (model indices), from (true, predicted)
    counts over all the model's classes: precision counts every image predicted as the class."""
    rows = []
    for c in classes:
        hits, support, predicted = int(matrix[c, c]), int(matrix[c].sum()), int(matrix[:, c].sum())
        rows.append({
            "class": class_names[c],
            "precision": 100.0 * hits / predicted if predicted else None,
            "recall": 100.0 * hits / support if support else None,
            "support": support,
        })  # fmt: skip
    return rows


def shown_confusion(matrix: torch.Tensor, classes: Sequence[int]) -> tuple[list[list[int]], bool]:
    """The rows and columns of `classes`, plus an "other" column for predictions of any class outside
    them (a 1000-class model on a 5-class folder); (counts, whether the column was added)."""
    idx = torch.as_tensor(list(classes), dtype=torch.int64)
    kept = matrix[idx][:, idx]
    other = matrix[idx].sum(dim=1) - kept.sum(dim=1)
    if int(other.sum()) == 0:
        return kept.tolist(), False
    return torch.cat([kept, other[:, None]], dim=1).tolist(), True


def split_folder(folder: Path, split: str) -> Path:
    """The folder of class folders to measure on: `folder/<split>` (test falling back to val) when the
    folder is split, else the folder itself (a plain folder of class folders)."""
    if not folder.is_dir():
        raise VitcError(f"missing folder {folder}")
    splits = {p.name: p for p in folder.iterdir() if p.is_dir() and p.name in ("train", "val", "test")}
    if not splits:
        return folder
    for name in (split, "val") if split == "test" else (split,):
        if name in splits:
            return splits[name]
    present = ", ".join(f"{name}/" for name in sorted(splits))
    raise VitcError(f"{folder} has no {split}/ folder (it has {present}): choose one with --split")


def labelled_files(folder: Path, split: str, class_names: Sequence[str]) -> tuple[FileIndex, Path]:
    """The image files of any labelled folder (class folders, directly or under test/ or val/) whose class
    names the model knows, labelled with the model's index of each name; (index, the folder read).
    Nothing is decoded here: `vitc eval` streams them, so a folder of any size fits in memory."""
    root = split_folder(folder, split)
    dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not dirs:
        raise VitcError(f"no class folders in {root} (expected {root}/<class>/<images>)")
    index = {name: i for i, name in enumerate(class_names)}
    unknown = [d.name for d in dirs if d.name not in index]
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" (+{len(unknown) - 5} more)" if len(unknown) > 5 else "")
        raise VitcError(
            f"{root} has class folders the model does not know: {shown} "
            f"(its {len(class_names)} classes: {', '.join(class_names[:8])}{', …' if len(class_names) > 8 else ''})"
        )
    files, labels = [], []
    for d in dirs:
        for name in list_images(d):
            files.append(f"{d.name}/{name}")
            labels.append(index[d.name])
    if not files:
        raise VitcError(f"no images in the class folders of {root}")
    return FileIndex(root, files, np.asarray(labels, dtype=np.int64), list(class_names)), root
