"""Training batches augmented on the device one step ahead, so that the GPU never waits for the feed.

timm's PrefetchLoader in vitc's terms: while the GPU runs step i, batch i+1 is already indexed (into
pinned memory), copied as uint8 and augmented on the device, on a side CUDA stream; step i+1 waits
for that batch's event only. The augmentation's random draws still come from the run's generator in
batch order, so the values do not depend on how far ahead the feed runs: a CPU run (`ahead=0`, no
streams) is exactly the loop it replaces, and each batch carries the generator state before its
draws, which Ctrl-C restores (`rewind_state`) so that `--resume` replays the batches drawn ahead.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch

Augment = Callable[..., tuple[torch.Tensor, torch.Tensor]]  # TrainAugment: (images, labels, generator, device)


@dataclass
class Ready:
    """One step's batch on the device: augmented images, soft targets, how many, what was dropped."""

    x: torch.Tensor | None  # None when every sample of the batch was unreadable (nothing to train on)
    targets: torch.Tensor | None
    count: int
    bad: list[str]
    aug_state: torch.Tensor  # the generator's state before this batch's draws
    event: Any = None  # CUDA: recorded on the side stream once the batch is ready


class Prefetcher:
    """Iterate `Ready` batches from `batches` ((uint8 images, labels, bad[, sizes]) as vitc.data.feed yields),
    prepared `ahead` batches early; on CUDA the copy and augmentation run on their own stream."""

    def __init__(
        self,
        batches: Iterator[tuple[Any, ...]],
        augment: Augment,
        generator: torch.Generator,
        device: torch.device,
        ahead: int = 0,
        hand_over: bool = True,
    ) -> None:
        """`hand_over=False`: the batches come out unclaimed and their consumer calls `hand_over` (a feed
        iterated in another thread: the stream waits must be queued where the steps are, in their order)."""
        self.batches, self.augment, self.generator, self.device, self.ahead = batches, augment, generator, device, ahead
        self.claims = hand_over
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self.queue: deque[Ready] = deque()

    def __iter__(self) -> Prefetcher:
        return self

    def __next__(self) -> Ready:
        while len(self.queue) <= self.ahead:
            batch = next(self.batches, None)
            if batch is None:
                break
            self.queue.append(self._prepare(*batch))
        if not self.queue:
            raise StopIteration
        ready = self.queue.popleft()
        return self.hand_over(ready) if self.claims else ready

    def hand_over(self, ready: Ready) -> Ready:
        """The current stream (the step's) waits for this batch's event only, and keeps its tensors."""
        if self.stream is not None and ready.event is not None:
            main = torch.cuda.current_stream(self.device)
            main.wait_event(ready.event)
            for t in (ready.x, ready.targets):  # allocated on the side stream, used (and freed) on main
                t.record_stream(main)  # type: ignore[union-attr]
        return ready

    def rewind_state(self) -> torch.Tensor:
        """The generator state to save if the run stops now: before the first batch drawn ahead."""
        return self.queue[0].aug_state if self.queue else self.generator.get_state()

    def _prepare(
        self, images: torch.Tensor, labels: torch.Tensor, bad: list[str], sizes: torch.Tensor | None = None
    ) -> Ready:
        state = self.generator.get_state()
        if not len(labels):
            return Ready(None, None, 0, bad, state)
        whole = {} if sizes is None else {"sizes": sizes}  # whole photos (an in-memory image folder)
        with torch.cuda.stream(self.stream) if self.stream is not None else nullcontext():
            x, targets = self.augment(images, labels, self.generator, self.device, **whole)
            event = self.stream.record_event() if self.stream is not None else None
        return Ready(x, targets, len(labels), bad, state, event)
