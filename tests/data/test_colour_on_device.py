"""Colour jitter and RandAugment/TrivialAugment on the device: drawn on the CPU as before, applied
masked (every op on every image, `torch.where` keeping each image's own) so that the host never
reads the GPU. On the CPU the masked path gives the sub-batch path's values bit for bit; the
`test_cuda_*` test compares the GPU with the CPU (`make gpu-check` runs it: docs/gpu_check.py)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from vitc.data import autoaugment as aa
from vitc.data import transforms
from vitc.data.transforms import TrainAugment

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
RAND = {"kind": "rand", "magnitude": 9.0, "num_ops": 2, "magnitude_std": 0.5}
POLICIES: dict[str, dict[str, Any]] = {
    "jitter": {"color_jitter": 0.4},
    "rand-m9-mstd0.5-inc1": {"auto_augment": {**RAND, "increasing": True}},
    "rand-m9-mstd0.5": {"auto_augment": RAND},
    "trivial": {"auto_augment": {"kind": "trivial"}},
    "jitter+rand-m9-n3": {"color_jitter": 0.4, "auto_augment": {**RAND, "num_ops": 3}},
}


def _photos(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """uint8 colour gradients of different contrast plus noise: every op has something to change."""
    g = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(0, 1, size)
    across, down = ramp.view(1, -1).expand(size, size), ramp.view(-1, 1).expand(size, size)
    base = torch.stack([across, down, 0.5 * across + 0.2]).unsqueeze(0)
    x = base * (torch.rand(n, 1, 1, 1, generator=g) * 0.8 + 0.2) + 0.3 * torch.rand(n, 3, size, size, generator=g)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def _recipe(policy: str, erase_prob: float = 0.25) -> TrainAugment:
    """The whole recipe, so that the draws after the colour ones (crop, flip, erasing, mixup) must line up too."""
    return TrainAugment(10, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), crop_scale=(0.5, 1.0),
                        erase_prob=erase_prob, **POLICIES[policy])  # fmt: skip


def _both_paths(aug: TrainAugment, x: torch.Tensor, monkeypatch: pytest.MonkeyPatch) -> list[tuple[torch.Tensor, ...]]:
    labels = torch.arange(len(x)) % 10
    out = []
    for sub_batches in (True, False):
        monkeypatch.setitem(transforms.SUB_BATCHES, "cpu", sub_batches)
        g = torch.Generator().manual_seed(11)
        out.append((*aug(x, labels, g, torch.device("cpu")), g.get_state()))
    return out


@pytest.mark.parametrize("policy", list(POLICIES))
def test_the_masked_path_equals_the_cpu_path_bit_for_bit(policy: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The device's code path (masked, its draws packed into one tensor) run on the CPU: the same images,
    targets and generator state as the CPU's sub-batches."""
    cpu, masked = _both_paths(_recipe(policy), _photos(32, 40), monkeypatch)
    assert all(torch.equal(a, b) for a, b in zip(cpu, masked, strict=True))
    assert not torch.equal(cpu[0], _recipe(policy)(_photos(32, 40), torch.arange(32) % 10, torch.Generator())[0])


def test_the_masked_path_at_224_on_one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """At model size too; one thread, or PyTorch may sum a lone image's grey levels in two parts."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cpu, masked = _both_paths(_recipe("jitter+rand-m9-n3"), _photos(6, 224, seed=3), monkeypatch)
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for a, b in zip(cpu, masked, strict=True))


def test_only_the_uint8_batch_and_one_pack_of_draws_cross(monkeypatch: pytest.MonkeyPatch) -> None:
    """Off the CPU the colour steps copy the uint8 images and one small float64 pack of their draws
    (ops, arguments, warp matrices and filters, fill, mean, std); the float work happens where the images are.
    With the rest of the recipe: one copy each for the crops, the flips, the erased boxes, the targets."""
    crossed: list[torch.Tensor] = []
    original = transforms.to_device

    def spy(t: torch.Tensor, device: torch.device) -> torch.Tensor:
        crossed.append(t)
        return original(t, device)

    monkeypatch.setattr(transforms, "to_device", spy)
    monkeypatch.setitem(transforms.SUB_BATCHES, "cpu", False)
    x = _photos(16, 32)
    aug = _recipe("jitter+rand-m9-n3")
    aug(x, torch.arange(16) % 10, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert len(crossed) == 6
    large = [t for t in crossed if t.numel() >= x[0].numel()]
    assert len(large) == 1 and large[0] is x
    packs = [t for t in crossed if t.dtype == torch.float64 and t.numel() > 16 * 8]
    assert len(packs) == 1 and packs[0].numel() == 6 * 16 * 9 + 3 * 3  # 6 rounds of (op, argument, 2x3 matrix, filter)


@pytest.mark.parametrize("policy", list(POLICIES))
def test_the_device_path_never_reads_the_device(policy: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """On PyTorch's meta device (shapes, no data) any host read of device data (.item(), bool(),
    nonzero, indexing by a mask, .tolist()) raises, and so does a CPU tensor meeting a device one:
    the whole recipe but erasing (its noise needs an accelerator's generator) runs through, and of
    the images only the uint8 batch crosses."""
    crossed: list[torch.Tensor] = []
    original = transforms.to_device
    monkeypatch.setattr(transforms, "to_device", lambda t, device: crossed.append(t) or original(t, device))
    images = _photos(8, 32)
    x, targets = _recipe(policy, erase_prob=0.0)(images, torch.arange(8) % 10, torch.Generator(), torch.device("meta"))
    assert x.is_meta and x.shape == (8, 3, 32, 32) and x.dtype == torch.float32 and targets.is_meta
    assert [t.dtype for t in crossed if t.numel() >= images.numel()] == [torch.uint8]


def test_rand_increasing_levels_follow_timm() -> None:
    """timm's _RAND_INCREASING_TRANSFORMS at level 9, as auto_augment.py computes them: posterize keeps
    4 - int(3.6) bits, solarize from 256 - int(230.4), enhance by max(0.1, 1 +/- 0.81)."""
    level, plus, minus = torch.tensor([9.0], dtype=torch.float64), torch.tensor([False]), torch.tensor([True])
    ops = aa.RAND_INCREASING_OPS
    assert list(ops) == list(aa.RAND_OPS)  # the same order, so a draw picks the matching op
    assert float(ops["Posterize"][1](level, plus, 32)) == 4 - int(9 / 10 * 4)
    assert float(ops["Solarize"][1](level, plus, 32)) == 256 - min(256, int(9 / 10 * 256))
    for name in ("Color", "Contrast", "Brightness", "Sharpness"):
        assert float(ops[name][1](level, plus, 32)) == pytest.approx(1.81)
        assert float(ops[name][1](level, minus, 32)) == pytest.approx(0.19)
        assert float(ops[name][1](torch.tensor([10.0], dtype=torch.float64), minus, 32)) == pytest.approx(0.1)
    assert ops["Rotate"] == aa.RAND_OPS["Rotate"] and ops["SolarizeAdd"] == aa.RAND_OPS["SolarizeAdd"]


def test_equalize_a_batch_as_pillow_each_image() -> None:
    """All channels of all images at once, as Pillow's per image: a flat image (nothing to spread)
    and a two-level one included."""
    pil_image = pytest.importorskip("PIL.Image")  # not on the GPU check's machine, which runs this module
    pil_ops = pytest.importorskip("PIL.ImageOps")
    x = _photos(4, 24, seed=5)
    x[1] = 77  # step 0: unchanged
    x[2] = torch.where(torch.rand(3, 24, 24, generator=torch.Generator().manual_seed(0)) < 0.3, 40, 200)
    got = aa.equalize(x.float() / 255)
    for i in range(4):
        pil = pil_ops.equalize(pil_image.fromarray(x[i].permute(1, 2, 0).numpy()))
        want = torch.from_numpy(np.array(pil)).permute(2, 0, 1)
        assert torch.equal((got[i] * 255).round().to(torch.uint8), want), i


@cuda
@pytest.mark.parametrize("policy", ["jitter", "rand-m9-mstd0.5-inc1", "trivial"])
def test_cuda_colour_matches_the_cpu_and_never_waits(policy: str) -> None:
    """The same draws on the GPU: the generator ends where the CPU's does, colour jitter matches to
    float rounding, and the 8-bit ops may move a rare value by an 8-bit step where a mean or a
    filtered value rounds the other way (at most 0.5% of values off by more than 1e-4). With sync
    debugging set to error, nothing in the augmentation makes the host wait for the GPU."""
    x, device = _photos(32, 32), torch.device("cuda")
    labels = torch.arange(32) % 10
    aug = _recipe(policy, erase_prob=0.0)  # erasing's noise comes from a device generator: not the CPU's
    g = torch.Generator().manual_seed(2)
    want, want_targets = aug(x, labels, g)
    want_state = g.get_state()
    aug(x, labels, torch.Generator().manual_seed(2), device)  # first use: kernels load, the allocator grows
    torch.cuda.synchronize()
    g.manual_seed(2)
    torch.cuda.set_sync_debug_mode("error")
    try:
        got, got_targets = aug(x, labels, g, device)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert got.is_cuda and torch.equal(g.get_state(), want_state)
    torch.testing.assert_close(got_targets.cpu(), want_targets)
    diff = (got.cpu() - want).abs()
    if policy == "jitter":
        torch.testing.assert_close(got.cpu(), want, atol=1e-5, rtol=1e-5)
    assert float((diff > 1e-4).float().mean()) < 0.005 and float(diff.mean()) < 1e-3


@pytest.mark.parametrize("policy", ["jitter", "rand-m9-mstd0.5-inc1"])
def test_whole_photos_are_cropped_on_the_device_without_reading_it(policy: str) -> None:
    """An in-memory image folder's batches are whole photos with their sizes: the crop boxes and filters are
    drawn on the CPU beside the other draws, and the device's data is never read back (meta device)."""
    aug = TrainAugment(10, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), crop_scale=(0.5, 1.0), erase_prob=0.0,
                       crop_size=24, train_interpolation="random", **POLICIES[policy])  # fmt: skip
    sizes = torch.tensor([[30, 40], [64, 48]] * 4)
    x, targets = aug(_photos(8, 32), torch.arange(8) % 10, torch.Generator(), torch.device("meta"), sizes=sizes)
    assert x.is_meta and x.shape == (8, 3, 24, 24) and targets.is_meta
