"""Top-1/top-5 evaluation over an in-memory image set, shared by training and `vitc eval`."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import nn

from vitc.data.datasets import ImageSet, batches
from vitc.data.transforms import eval_transform


@torch.no_grad()
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
    model.eval()
    device = torch.device(device)
    cast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else nullcontext()
    outputs = []
    for idx in batches(len(data), batch_size, shuffle=False):
        x = eval_transform(data.images[idx], mean, std).to(device, non_blocking=True)
        with cast:
            outputs.append(model(x).float().cpu())
    return torch.cat(outputs)


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
