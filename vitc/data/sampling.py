"""Seeded batching of an epoch: which samples each process trains on, in which order and batches.

Index tensors only, the same for the in-memory and streamed paths (`vitc.data.feed`): a permutation
drawn from a generator seeded by (seed, epoch) (never the global RNG, so a resumed run redraws it),
sharded over the processes as torch's DistributedSampler, or in timm's RepeatAugSampler's order under
repeated augmentation (aug.repeats).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch

from vitc.errors import VitcError

REPEAT_ROUND = 256  # repeated augmentation: each epoch's share rounded down to this many (timm's selected_round)


def make_generator(seed: int, epoch: int = 0, *more: int) -> torch.Generator:
    """A CPU generator determined by (seed, epoch, *more): a resumed run redraws the same epoch exactly;
    `more` tells apart streams of one epoch (a DDP process's own)."""
    words = [int(seed), int(epoch), *map(int, more)]
    state = np.random.SeedSequence(words).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & ((1 << 63) - 1))


def shard(indices: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """This rank's strided share of `indices`, padded by wrapping so every rank gets the same count
    (as torch's DistributedSampler): all ranks must pass the same permutation."""
    _check_rank(rank, world_size)
    n = int(indices.numel())
    if n == 0:
        return indices
    total = math.ceil(n / world_size) * world_size
    if total > n:
        indices = torch.cat([indices] * math.ceil(total / n))[:total]
    return indices[rank:total:world_size]


def _check_rank(rank: int, world_size: int) -> None:
    if world_size < 1 or not (0 <= rank < world_size):
        raise VitcError(f"rank must be in [0, {world_size}) with world_size >= 1, got rank {rank}")


def samples_per_epoch(n: int, world_size: int = 1, repeats: int = 0) -> int:
    """The samples one epoch trains on, over every process: the set once, or under repeated augmentation
    (aug.repeats) as many as timm's RepeatAugSampler selects, each process taking
    floor(n // 256 * 256 / world_size) (DeiT's RASampler's count, timm's default selected_round), so that an
    epoch stays about the set's size. A set under 256 images takes timm's unrounded count,
    ceil(n / world_size) each (selected_round=0), where the rounding would leave nothing."""
    if not repeats:
        return n
    rounded = n // REPEAT_ROUND * REPEAT_ROUND
    return (rounded // world_size if rounded else math.ceil(n / world_size)) * world_size


def epoch_share(
    n: int,
    generator: torch.Generator | None = None,
    *,
    shuffle: bool = True,
    rank: int = 0,
    world_size: int = 1,
    repeats: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """This process's samples of one epoch in order, and which copy of its image each one is (0 without
    repeats). One permutation drawn with `generator` (never the global RNG), strided over the processes.
    With `repeats` it is timm's RepeatAugSampler's order: every index `repeats` times in a row, padded to
    a multiple of world_size, every world_size-th from `rank` (so an image's copies go to other processes,
    or in one process to the same batch), the first `samples_per_epoch(...) // world_size` of them."""
    if shuffle:
        if generator is None:
            raise ValueError("shuffle=True needs an explicit torch.Generator")
        order = torch.randperm(n, generator=generator)
    else:
        order = torch.arange(n)
    if not repeats:
        order = shard(order, rank, world_size) if world_size > 1 else order
        return order, torch.zeros_like(order)
    _check_rank(rank, world_size)
    # this process's places in the repeated order (n * repeats long, wrapped as its padding is), which
    # is never built: only the places taken are
    taken = torch.arange(rank, samples_per_epoch(n, world_size, repeats), world_size) % max(1, n * repeats)
    return order[taken // repeats], taken % repeats


def split_batches(samples: torch.Tensor, batch_size: int, drop_last: bool = False) -> list[torch.Tensor]:
    """`samples` in consecutive batches of `batch_size`; the last one short unless `drop_last`."""
    if batch_size < 1:
        raise VitcError(f"batch_size must be >= 1, got {batch_size}")
    stop = len(samples) - len(samples) % batch_size if drop_last else len(samples)
    return [samples[s : s + batch_size] for s in range(0, stop, batch_size)]


def batches(
    n: int,
    batch_size: int,
    generator: torch.Generator | None = None,
    *,
    shuffle: bool = True,
    drop_last: bool = False,
    rank: int = 0,
    world_size: int = 1,
    repeats: int = 0,
) -> Iterator[torch.Tensor]:
    """Index batches of this process's share of one epoch (`epoch_share`)."""
    order, _ = epoch_share(n, generator, shuffle=shuffle, rank=rank, world_size=world_size, repeats=repeats)
    yield from split_batches(order, batch_size, drop_last)
