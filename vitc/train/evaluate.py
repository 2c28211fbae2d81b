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
from vitc.train.distributed import DistInfo, all_reduce_sum

NO_IMAGES = "no readable images to evaluate on"


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
    allow_none: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (float32) and labels of the readable images of (uint8 images, labels, dropped) batches from a
    feed (vitc.data.feed), either path, in order; none at all is an error unless `allow_none`."""
    labels: list[torch.Tensor] = []

    def images() -> Iterable[torch.Tensor]:
        for x, y, _ in data:
            labels.append(y)
            if len(y):
                yield x

    logits = predict_batches(model, images(), mean, std, device, amp_dtype)
    if not len(logits) and not allow_none:
        raise VitcError(NO_IMAGES)
    return logits, torch.cat(labels) if labels else torch.zeros(0, dtype=torch.int64)


def evaluate_batches(
    model: nn.Module,
    data: Iterable[Batch],
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device | str = "cpu",
    amp_dtype: torch.dtype | None = None,
    dist: DistInfo | None = None,
) -> dict[str, float]:
    """Top-1/top-5/loss over a feed's batches: training's val and the final test run through here with the
    run's precision. Under DDP (`dist`) the batches are this process's share (`feed.eval_batches(split,
    rank, world_size)`): the processes add up their sums, and each gets the whole split's figures."""
    logits, labels = predict_labelled(model, data, mean, std, device, amp_dtype, allow_none=True)
    sums = metrics.accuracy_sums(logits.numpy(), labels.numpy())  # a share may be empty: a set smaller than N
    if dist is not None:
        all_reduce_sum(dist, sums)
    if not sums["count"]:
        raise VitcError(NO_IMAGES)
    return metrics.rates(sums)


def broadcast_state(dist: DistInfo, model: nn.Module, buffers_only: bool = False) -> None:
    """Rank 0's weights and buffers on every process, or its buffers only: each process's BatchNorm statistics
    (CvT's, SP-ViT's stem) took its own last batch in, and its EMA averaged them, but rank 0's are the ones
    checkpointed."""
    if dist.enabled:
        import torch.distributed

        with torch.no_grad():
            for tensor in model.buffers() if buffers_only else model.state_dict().values():
                torch.distributed.broadcast(tensor, src=0)
