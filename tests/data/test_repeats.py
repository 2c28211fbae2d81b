"""Repeated augmentation (aug.repeats): timm's RepeatAugSampler's order and count, and every copy augmented apart."""

from __future__ import annotations

import math

import pytest
import torch

from vitc.data.feed import MemoryFeed
from vitc.data.sampling import epoch_share, make_generator, samples_per_epoch, split_batches
from vitc.data.transforms import TrainAugment


def _timm_order(perm: torch.Tensor, world: int, rank: int, repeats: int, selected_round: int) -> list[int]:
    """timm's RepeatAugSampler (timm/data/distributed_sampler.py), its counts from __init__ and its __iter__,
    restated step by step for a given base permutation (timm draws one seeded by the epoch alone)."""
    n = len(perm)
    num_samples = math.ceil(n * repeats / world)  # per process, padded
    total_size = num_samples * world
    selected_ratio = world  # its default (selected_ratio=0 means num_replicas)
    if selected_round:
        num_selected = math.floor(n // selected_round * selected_round / selected_ratio)
    else:
        num_selected = math.ceil(n / selected_ratio)
    indices = torch.repeat_interleave(perm, repeats=repeats, dim=0).tolist()  # [a, a, a, b, b, b, ...]
    padding = total_size - len(indices)
    if padding > 0:
        indices += indices[:padding]
    assert len(indices) == total_size
    mine = indices[rank:total_size:world]
    assert len(mine) == num_samples
    return mine[:num_selected]


@pytest.mark.parametrize(
    ("n", "world", "repeats"),
    [(300, 1, 3), (300, 2, 3), (1000, 3, 3), (1000, 4, 2), (777, 8, 3), (600, 5, 1), (256, 3, 4)],
)
def test_the_order_is_timms_repeat_aug_sampler(n: int, world: int, repeats: int) -> None:
    perm = torch.randperm(n, generator=make_generator(7, 2))
    for rank in range(world):
        mine, _ = epoch_share(n, make_generator(7, 2), rank=rank, world_size=world, repeats=repeats)
        assert mine.tolist() == _timm_order(perm, world, rank, repeats, selected_round=256), rank
    assert samples_per_epoch(n, world, repeats) == len(_timm_order(perm, world, 0, repeats, 256)) * world


@pytest.mark.parametrize(("n", "world", "repeats"), [(100, 1, 3), (100, 2, 3), (10, 3, 4), (255, 4, 2)])
def test_a_set_under_256_images_takes_timms_unrounded_count(n: int, world: int, repeats: int) -> None:
    """timm's default rounding (selected_round=256) leaves such a set no samples at all: vitc takes its
    selected_round=0 count, ceil(n / world) a process, in the same order."""
    perm = torch.randperm(n, generator=make_generator(1, 0))
    assert _timm_order(perm, world, 0, repeats, selected_round=256) == []
    for rank in range(world):
        mine, _ = epoch_share(n, make_generator(1, 0), rank=rank, world_size=world, repeats=repeats)
        assert mine.tolist() == _timm_order(perm, world, rank, repeats, selected_round=0), rank
    assert samples_per_epoch(n, world, repeats) == math.ceil(n / world) * world


@pytest.mark.parametrize("world", [1, 2, 3])
def test_each_copy_of_an_image_is_numbered_apart(world: int) -> None:
    """Over every process, an image's copies are 0, 1, 2 (no pair of index and copy twice), which the
    streamed path seeds its crops by; without repeats every copy is 0 and the order is unchanged."""
    n, repeats = 300, 3
    shares = [epoch_share(n, make_generator(0, 4), rank=r, world_size=world, repeats=repeats) for r in range(world)]
    pairs = [(int(i), int(c)) for order, copies in shares for i, c in zip(order, copies, strict=True)]
    assert len(set(pairs)) == len(pairs) == samples_per_epoch(n, world, repeats)
    assert all(0 <= c < repeats for _, c in pairs)
    by_image: dict[int, list[int]] = {}
    for i, c in pairs:
        by_image.setdefault(i, []).append(c)
    whole = [c for c in by_image.values() if sorted(c) == [0, 1, 2]]
    used = samples_per_epoch(n, world, repeats)
    assert len(whole) == used // repeats and len(by_image) - len(whole) == int(used % repeats > 0)  # one cut short
    plain, copies = epoch_share(n, make_generator(0, 4))
    assert torch.equal(plain, torch.randperm(n, generator=make_generator(0, 4))) and not copies.any()


def test_the_copies_in_one_batch_are_augmented_apart_in_memory() -> None:
    """One process: an image's copies come one after another into the same batch, and the batch
    augmentation draws each row its own crop."""
    feed = MemoryFeed("digits", 0.1, 0, {"image_size": 16})
    order, copies = epoch_share(len(feed), make_generator(0, 0), repeats=3)
    idx = split_batches(order, 12)[0]
    images, labels, _ = next(feed.train_batches([idx], 0, split_batches(copies, 12)[:1]))
    augment = TrainAugment(10, (0.5,) * 3, (0.5,) * 3, crop_scale=(0.3, 1.0), mixup_alpha=0.0, cutmix_alpha=0.0)
    x, _ = augment(images, labels, torch.Generator().manual_seed(0))
    assert idx.tolist() == [i for i in idx[::3].tolist() for _ in range(3)]  # 4 images, 3 copies each
    for first in range(0, 12, 3):
        assert torch.equal(images[first], images[first + 1])  # the same image twice from the feed,
        for a, b in ((first, first + 1), (first, first + 2), (first + 1, first + 2)):
            assert not torch.equal(x[a], x[b]), (a, b)  # augmented apart
