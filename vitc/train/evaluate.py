"""Top-1/top-5 evaluation over batches of images from memory or streamed, shared by training and `vitc eval`."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import nullcontext

import torch
from torch import nn

from vitc import metrics
from vitc.data.feed import Batch
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
    """Top-1, top-5 and loss of CPU logits (vitc.metrics.accuracy)."""
    return metrics.accuracy(logits.float().numpy(), labels.numpy())
