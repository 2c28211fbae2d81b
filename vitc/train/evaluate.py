"""Top-1/top-5 evaluation over an in-memory image set, shared by training and `vitc eval`."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import nn

from vitc.data.datasets import ImageSet, batches
from vitc.data.transforms import eval_transform
from vitc.errors import VitcError


def predict(
    model: nn.Module,
    data: ImageSet,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    amp_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Logits (N, classes) in float32, in the data set's order."""
    images = (data.images[idx] for idx in batches(len(data), batch_size, shuffle=False))
    return predict_batches(model, images, mean, std, device, amp_dtype)


@torch.no_grad()
def predict_batches(
    model: nn.Module,
    images: Iterable[torch.Tensor],
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device | str = "cpu",
    amp_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Logits in float32 for uint8 image batches at the model's input size, in order."""
    model.eval()
    device = torch.device(device)
    cast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else nullcontext()
    outputs = []
    for batch in images:
        x = eval_transform(batch, mean, std).to(device, non_blocking=True)
        with cast:
            outputs.append(model(x).float().cpu())
    return torch.cat(outputs) if outputs else torch.zeros(0, 0)


def evaluate_batches(
    model: nn.Module,
    data: Iterable[tuple[torch.Tensor, torch.Tensor, list[str]]],
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device | str = "cpu",
    amp_dtype: torch.dtype | None = None,
) -> dict[str, float]:
    """Top-1/top-5/loss over (images, labels, _) batches from a feed (vitc.data.feed), either path:
    training's val and the final test run through here with the same precision."""
    labels: list[torch.Tensor] = []

    def images() -> Iterable[torch.Tensor]:
        for x, y, _ in data:
            labels.append(y)
            if len(y):
                yield x

    logits = predict_batches(model, images(), mean, std, device, amp_dtype)
    if not len(logits):
        raise VitcError("no readable images to evaluate on")
    return accuracy(logits, torch.cat(labels))


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
