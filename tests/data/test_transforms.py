"""Batch transforms: shapes, determinism under a seeded generator, and the identities they reduce to."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vitc.data import (
    TrainAugment,
    eval_transform,
    mixup_cutmix,
    normalize,
    random_erasing,
    random_flip,
    random_resized_crop,
    smooth_targets,
    transforms,
)
from vitc.errors import VitcError

MEAN, STD = (0.5, 0.25, 0.125), (0.5, 0.5, 0.25)


def _images(n: int = 8, size: int = 16) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, size, size), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)


def _g(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_normalize_values() -> None:
    x = torch.tensor([0, 255, 51], dtype=torch.uint8).view(1, 3, 1, 1)
    out = normalize(x, MEAN, STD)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.flatten(), torch.tensor([-1.0, 1.5, (0.2 - 0.125) / 0.25]))
    assert normalize(x[0], MEAN, STD).shape == (3, 1, 1)
    torch.testing.assert_close(eval_transform(x, MEAN, STD), out)
    with pytest.raises(VitcError, match="channels"):
        normalize(x, (0.5, 0.5), STD)


def test_rrc_identity_and_shapes() -> None:
    x = normalize(_images(), MEAN, STD)
    same = random_resized_crop(x, _g(), scale=(1.0, 1.0), ratio=(1.0, 1.0))
    torch.testing.assert_close(same, x, atol=1e-5, rtol=0)
    out = random_resized_crop(x, _g())
    assert out.shape == x.shape and out.dtype == torch.float32
    assert not torch.allclose(out, x)
    torch.testing.assert_close(random_resized_crop(x, _g(4)), random_resized_crop(x, _g(4)))


def test_rrc_crops_the_right_region() -> None:
    # a half-area crop of a horizontal ramp shows only part of its range, still inside it
    ramp = torch.linspace(0, 1, 32).expand(4, 1, 32, 32).contiguous()
    out = random_resized_crop(ramp, _g(1), scale=(0.25, 0.25), ratio=(1.0, 1.0))
    assert (out.amax((1, 2, 3)) - out.amin((1, 2, 3)) < 0.6).all()
    assert out.min() >= 0 and out.max() <= 1


def test_rrc_resize_is_full_fp32_whatever_the_session_set(monkeypatch: pytest.MonkeyPatch) -> None:
    # the resize is two batched matmuls: under TF32 (the GPU) or oneDNN's bf16 they would move values by levels
    import vitc.data.transforms as transforms

    seen: list[str] = []
    real = transforms.torch.bmm

    def recording(*args: object, **kwargs: object) -> torch.Tensor:
        seen.append(torch.get_float32_matmul_precision())
        return real(*args, **kwargs)

    monkeypatch.setattr(transforms.torch, "bmm", recording)
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("medium")
        x = normalize(_images(), MEAN, STD)
        out = random_resized_crop(x, _g(2))
        assert torch.get_float32_matmul_precision() == "medium"  # the user's setting is back
    finally:
        torch.set_float32_matmul_precision(before)
    assert seen == ["highest", "highest"]
    torch.testing.assert_close(out, random_resized_crop(x, _g(2)), atol=0, rtol=0)


def _photos(n: int, side: int, seed: int = 0) -> torch.Tensor:
    """Photo-like uint8 images: smooth shading, hard-edged discs of black, white or a colour, a thin white
    line (where bicubic overshoots past 0 and 255) and sensor noise."""
    g = torch.Generator().manual_seed(seed)
    at = torch.arange(side, dtype=torch.float32)
    yy, xx = at.view(1, 1, -1, 1), at.view(1, 1, 1, -1)
    freq = torch.rand(n, 3, 2, generator=g) * 0.2 + 0.03
    x = 128 + 90 * torch.sin(xx * freq[..., :1, None]) * torch.cos(yy * freq[..., 1:, None])
    for _ in range(4):
        cy, cx, r = torch.rand(3, n, 1, 1, generator=g) * torch.tensor([side, side, side / 4]).view(3, 1, 1, 1)
        colour = torch.randint(0, 3, (n, 3, 1, 1), generator=g).float() * 127.5
        x = torch.where((yy - cy[:, None]) ** 2 + (xx - cx[:, None]) ** 2 < (r[:, None] + 2) ** 2, colour, x)
    x[..., side // 3, :] = 255
    x = x + torch.randn(x.shape, generator=g) * 6
    return x.round().clamp(0, 255).to(torch.uint8)


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_crops_resize_as_pillow(interpolation: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each drawn box cropped and resized as timm's crops are, by Pillow's `crop(box).resize(size, filter)`:
    the filter widened when the crop is downscaled (antialiased; grid_sample's bilinear read 2 pixels wherever
    it landed), bicubic Pillow's resize cubic (a = -0.5), its overshoot clipped between the two passes, the
    box's edge repeated (no pixel beyond it read). Within a level on every pixel (Pillow also rounds its first
    pass to 8 bits) and most equal, for boxes in the images' own pixels (digits, CIFAR) and for whole photos
    kept squashed, up and down: a fractional box crops the pixels it covers and resizes its box within them."""
    image = pytest.importorskip("PIL.Image")
    drawn: list[torch.Tensor] = []
    real = transforms.resize_boxes
    monkeypatch.setattr(transforms, "resize_boxes", lambda x, boxes, *a: drawn.append(boxes) or real(x, boxes, *a))
    equal = total = down_first = 0
    for side, out, photo in ((32, 32, None), (64, 40, None), (96, 64, (300, 200)), (80, 112, (90, 160))):
        x = _photos(12, side, seed=side)
        sizes = None if photo is None else torch.tensor([photo] * 12)
        crops = random_resized_crop(x, _g(side), (0.08, 1.0), sizes=sizes, out_size=out, interpolation=interpolation)
        assert crops.dtype == torch.uint8 and crops.shape == (12, 3, out, out)
        boxes = drawn.pop()
        down_first += int(transforms._down_first(boxes, (out, out), (side, side)).sum())
        for one, crop, (left, top, width, height) in zip(x, crops, boxes.tolist(), strict=True):
            cut = (math.floor(left), math.floor(top), math.ceil(left + width), math.ceil(top + height))
            box = (left - cut[0], top - cut[1], left + width - cut[0], top + height - cut[1])  # within the cut
            filtered = image.fromarray(one.permute(1, 2, 0).numpy()).crop(cut)
            filtered = filtered.resize((out, out), getattr(image, interpolation.upper()), box=box)
            diff = (crop.int() - torch.from_numpy(np.array(filtered)).permute(2, 0, 1).int()).abs()
            assert int(diff.max()) <= 1, (side, box)
            equal, total = equal + int((diff == 0).sum()), total + diff.numel()
    assert equal / total > 0.75
    assert 0 < down_first < 48  # Pillow's two orders of the passes both came up


def test_random_interpolation_draws_each_images_filter_from_the_generator(monkeypatch: pytest.MonkeyPatch) -> None:
    """timm's default train interpolation: bilinear or bicubic per image, drawn after the box (`random.choice`
    in RandomResizedCropAndInterpolation). From the run's generator: the same seed draws the same filters, and
    both; each image is its box resized with its own filter. A fixed filter draws nothing more than before."""
    x = _photos(64, 24)
    picked: list[torch.Tensor] = []
    real = transforms.resize_boxes
    monkeypatch.setattr(
        transforms, "resize_boxes", lambda x, b, bicubic, s: picked.append(bicubic) or real(x, b, bicubic, s)
    )
    crops, states = {}, {}
    for name in ("random", "bilinear", "bicubic", "random"):
        g = _g(5)
        crops[name] = random_resized_crop(x, g, (0.2, 1.0), interpolation=name)
        states[name] = g.get_state()
    first, bilinear, bicubic, again = picked
    assert torch.equal(first, again) and 0 < int(first.sum()) < 64
    assert not bilinear.any() and bicubic.all()
    assert torch.equal(crops["random"], torch.where(first.view(-1, 1, 1, 1), crops["bicubic"], crops["bilinear"]))
    assert torch.equal(states["bilinear"], states["bicubic"])
    g = _g(5)
    random_resized_crop(x, g, (0.2, 1.0))
    torch.rand(64, generator=g)  # "random" draws one value per image more
    assert torch.equal(g.get_state(), states["random"])
    random_resized_crop(x, _g(6), (0.2, 1.0), interpolation="random")
    assert not torch.equal(picked[-1], first)
    with pytest.raises(VitcError, match="train_interpolation must be one of random, bilinear, bicubic, got 'nearest'"):
        random_resized_crop(x, _g(), interpolation="nearest")


def test_flip() -> None:
    x = normalize(_images(), MEAN, STD)
    assert torch.equal(random_flip(x, _g(), p=0.0), x)
    assert torch.equal(random_flip(x, _g(), p=1.0), x.flip(-1))
    out = random_flip(x, _g(), p=0.5)
    flipped = [torch.equal(o, i.flip(-1)) for o, i in zip(out, x, strict=True)]
    assert all(f or torch.equal(o, i) for f, o, i in zip(flipped, out, x, strict=True))


def test_random_erasing() -> None:
    x = normalize(_images(16), MEAN, STD)
    assert torch.equal(random_erasing(x, _g(), prob=0.0), x)
    out = random_erasing(x, _g(), prob=1.0)
    changed = (out != x).flatten(1).any(1)
    assert changed.all()  # every sample got a rectangle
    frac = (out != x).float().mean((1, 2, 3))
    assert (frac <= 1 / 3 + 0.05).all()
    torch.testing.assert_close(random_erasing(x, _g(2), prob=0.5), random_erasing(x, _g(2), prob=0.5))


def test_random_erasing_draws_the_aspect_within_timms_bounds(monkeypatch) -> None:
    """timm's RandomErasing draws log(aspect) uniformly in [log 0.3, log(1 / 0.3)] (max_aspect = 1 / min_aspect);
    vitc's upper bound was 3.3, not 3.33."""
    import vitc.data.transforms as transforms

    bounds = []
    real = transforms._uniform

    def spy(n, low, high, generator, attempts):  # type: ignore[no-untyped-def]
        bounds.append((low, high))
        return real(n, low, high, generator, attempts)

    monkeypatch.setattr(transforms, "_uniform", spy)
    random_erasing(normalize(_images(4), MEAN, STD), _g(), prob=1.0)
    assert bounds[1] == pytest.approx((math.log(0.3), math.log(1 / 0.3)), abs=1e-12)


def test_smoothing_values() -> None:
    t = smooth_targets(torch.tensor([2, 0]), 4, 0.1)
    torch.testing.assert_close(t[0], torch.tensor([0.025, 0.025, 0.925, 0.025]))
    torch.testing.assert_close(smooth_targets(torch.eye(4)[[2, 0]], 4, 0.1), t)


def test_mixup_off_gives_smoothed_one_hot() -> None:
    x = normalize(_images(), MEAN, STD)
    y = torch.arange(8) % 5
    out, t = mixup_cutmix(x, y, _g(), 5, mixup_alpha=0.0, cutmix_alpha=0.0, label_smoothing=0.1)
    assert torch.equal(out, x)
    torch.testing.assert_close(t, smooth_targets(y, 5, 0.1))


@pytest.mark.parametrize(("mixup", "cutmix"), [(0.8, 0.0), (0.0, 1.0), (0.8, 1.0)])
def test_mixup_cutmix_targets(mixup: float, cutmix: float) -> None:
    x = normalize(_images(), MEAN, STD)
    y = torch.arange(8) % 5
    for seed in range(5):
        out, t = mixup_cutmix(x, y, _g(seed), 5, mixup, cutmix, label_smoothing=0.1)
        assert out.shape == x.shape and t.shape == (8, 5)
        torch.testing.assert_close(t.sum(1), torch.ones(8))
        assert t.min() >= 0.1 / 5 - 1e-6
        # sample i is mixed only with its mirror N-1-i
        assert set(t[0].nonzero().flatten().tolist()) <= set(range(5))
        out2, t2 = mixup_cutmix(x, y, _g(seed), 5, mixup, cutmix, label_smoothing=0.1)
        assert torch.equal(out, out2) and torch.equal(t, t2)
    before = x.clone()
    mixup_cutmix(x, y, _g(), 5, 0.0, 1.0)
    assert torch.equal(x, before)


def test_cutmix_lambda_matches_pasted_area() -> None:
    x = torch.zeros(2, 1, 10, 10)
    x[1] = 1.0
    out, t = mixup_cutmix(x, torch.tensor([0, 1]), _g(3), 2, 0.0, 1.0, label_smoothing=0.0)
    pasted = float(out[0].mean())  # sample 0 received pixels from sample 1
    torch.testing.assert_close(t[0], torch.tensor([1 - pasted, pasted]))


def test_train_augment_deterministic_and_shapes() -> None:
    aug = TrainAugment(num_classes=10, mean=MEAN, std=STD)
    imgs, labels = _images(), torch.arange(8)
    x1, t1 = aug(imgs, labels, _g(7))
    x2, t2 = aug(imgs, labels, _g(7))
    x3, _ = aug(imgs, labels, _g(8))
    assert x1.shape == (8, 3, 16, 16) and x1.dtype == torch.float32 and t1.shape == (8, 10)
    assert torch.equal(x1, x2) and torch.equal(t1, t2) and not torch.equal(x1, x3)
    torch.testing.assert_close(t1.sum(1), torch.ones(8))


def test_train_augment_all_off_is_eval_transform() -> None:
    aug = TrainAugment(
        num_classes=10,
        mean=MEAN,
        std=STD,
        crop_scale=(1.0, 1.0),
        crop_ratio=(1.0, 1.0),
        flip_prob=0.0,
        mixup_alpha=0.0,
        cutmix_alpha=0.0,
        label_smoothing=0.0,
        erase_prob=0.0,
    )
    x, t = aug(_images(), torch.arange(8), _g())
    torch.testing.assert_close(x, eval_transform(_images(), MEAN, STD))
    torch.testing.assert_close(t, torch.eye(10)[:8])


def test_recipes_and_validation() -> None:
    d = TrainAugment(num_classes=3, mean=MEAN, std=STD).to_dict()
    assert d["crop_scale"] == [0.35, 1.0] and d["mean"] == list(MEAN)
    with pytest.raises(VitcError, match="crop scale"):
        TrainAugment(num_classes=3, mean=MEAN, std=STD, crop_scale=(0.5, 0.2))
    with pytest.raises(VitcError, match="label_smoothing"):
        TrainAugment(num_classes=3, mean=MEAN, std=STD, label_smoothing=1.0)
    assert d["train_interpolation"] == "random"  # timm's default
    with pytest.raises(
        VitcError, match=r"^train_interpolation must be one of random, bilinear, bicubic, got 'lanczos'$"
    ):
        TrainAugment(num_classes=3, mean=MEAN, std=STD, train_interpolation="lanczos")


def test_colour_ops_see_the_crop_as_in_timm() -> None:
    """timm crops and flips first, then RandAugment on the 8-bit crop (the in-memory path ran it on the
    whole stored image: a warp then a crop could keep little but the fill, and AutoContrast or Equalize
    took their statistics from outside the crop)."""
    x = (torch.rand(6, 3, 24, 24, generator=torch.Generator().manual_seed(0)) * 255).round().to(torch.uint8)
    labels = torch.arange(6) % 3
    policy = {"kind": "rand", "magnitude": 9.0, "num_ops": 2, "magnitude_std": 0.5, "increasing": True}
    aug = TrainAugment(3, (0.5,) * 3, (0.25,) * 3, crop_scale=(0.3, 1.0), mixup_alpha=0.0, cutmix_alpha=0.0,
                       erase_prob=0.0, auto_augment=policy)  # fmt: skip
    got, _ = aug(x, labels, torch.Generator().manual_seed(4))
    g = torch.Generator().manual_seed(4)  # the same draws, in timm's order
    crops = random_flip(random_resized_crop(x, g, (0.3, 1.0), interpolation="random"), g, 0.5)  # 8-bit, as Pillow's
    assert torch.equal(got, aug._colour(crops, g, torch.device("cpu")))
    g = torch.Generator().manual_seed(4)  # colour first, as before
    coloured = aug._colour(x, g, torch.device("cpu"))
    colour_first = random_flip(random_resized_crop(coloured, g, (0.3, 1.0), interpolation="random"), g, 0.5)
    assert not torch.allclose(got, colour_first, atol=0.1)


def test_rrc_of_a_whole_photo_is_drawn_in_its_own_proportions() -> None:
    """A 16-high, 32-wide photo kept squashed to 16×16: a square crop of its whole height (the fallback
    of scale 1, ratio 1) is its middle half across, as timm would cut it from the photo."""
    across = torch.arange(16.0).view(1, 1, 1, 16).expand(2, 3, 16, 16)
    sizes = torch.tensor([[16, 32], [16, 32]])
    crop = random_resized_crop(across, torch.Generator(), (1.0, 1.0), (1.0, 1.0), sizes=sizes, out_size=8)
    assert crop.shape == (2, 3, 8, 8) and torch.allclose(crop, across[..., :8, 4:12])
    tall = random_resized_crop(across, torch.Generator(), (1.0, 1.0), (1.0, 1.0), sizes=sizes.flip(1), out_size=8)
    # all across, halved as Pillow halves: each pixel 3/8 of the two under it and 1/8 of each neighbour (the
    # filter widened to 4 pixels), the edges' weights renormalised inside the image
    halved = torch.tensor([5 / 7, 2.5, 4.5, 6.5, 8.5, 10.5, 12.5, 15 - 5 / 7])
    assert torch.allclose(tall, halved.view(1, 1, 1, 8).expand(2, 3, 8, 8))
    x = (torch.rand(4, 3, 20, 20, generator=torch.Generator().manual_seed(0)) * 255).round().to(torch.uint8)
    aug = TrainAugment(3, (0.5,) * 3, (0.25,) * 3, crop_size=12)
    out, _ = aug(x, torch.arange(4) % 3, torch.Generator().manual_seed(1), sizes=torch.tensor([[30, 40]] * 4))
    assert out.shape == (4, 3, 12, 12)
    with pytest.raises(ValueError, match="crop_size"):
        TrainAugment(3, (0.5,) * 3, (0.25,) * 3)(x, torch.arange(4) % 3, torch.Generator(), sizes=torch.ones(4, 2))
