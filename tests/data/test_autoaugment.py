"""Colour jitter, RandAugment and TrivialAugment: what each op does, against Pillow where Pillow has it,
and that the policies are seeded by the generator alone."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps

from vitc.data import autoaugment as aa
from vitc.data.transforms import TrainAugment
from vitc.errors import VitcError
from vitc.train.config import load_config, parse_auto_augment


def _photo(n: int = 2, size: int = 16, seed: int = 0) -> torch.Tensor:
    """Smooth colour gradients plus noise, as 8-bit values in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(0, 1, size)
    across, down = ramp.view(1, -1).expand(size, size), ramp.view(-1, 1).expand(size, size)
    base = torch.stack([across, down, 0.5 * across + 0.2])
    x = (base.unsqueeze(0) * 0.8 + 0.2 * torch.rand(n, 3, size, size, generator=g)).clamp(0, 1)
    return (x * 255).round() / 255


def _pil(x: torch.Tensor) -> Image.Image:
    return Image.fromarray((x * 255).round().byte().permute(1, 2, 0).numpy())


def _from_pil(im: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(im)).permute(2, 0, 1).float() / 255


one = torch.ones(1)


@pytest.mark.parametrize(
    ("op", "pil"),
    [
        (aa.brightness, ImageEnhance.Brightness),
        (aa.color, ImageEnhance.Color),
        (aa.contrast, ImageEnhance.Contrast),
        (aa.sharpness, ImageEnhance.Sharpness),
    ],
)
@pytest.mark.parametrize("factor", [0.0, 0.4, 1.0, 1.7])
def test_enhance_ops_match_pillow(op, pil, factor: float) -> None:
    x = _photo(1)
    got = op(x, torch.tensor([factor]))
    want = _from_pil(pil(_pil(x[0])).enhance(factor))
    assert (got[0] - want).abs().max() <= 2.5 / 255  # Pillow rounds its grey/mean to 8 bits


@pytest.mark.parametrize(
    ("op", "arg", "pil"),
    [
        (aa.posterize, 3, lambda im: ImageOps.posterize(im, 3)),
        (aa.solarize, 128, lambda im: ImageOps.solarize(im, 128)),
        (aa.autocontrast, 0, ImageOps.autocontrast),
        (aa.equalize, 0, ImageOps.equalize),
        (aa.invert, 0, ImageOps.invert),
    ],
)
def test_8bit_ops_match_pillow(op, arg: int, pil) -> None:
    x = _photo(1) * 0.6 + 0.1  # not the full range: autocontrast and equalize have work to do
    x = (x * 255).round() / 255
    got = op(x, torch.tensor([float(arg)]), None)
    want = _from_pil(pil(_pil(x[0])))
    assert (got[0] - want).abs().max() <= 1.01 / 255


def test_solarize_add_and_the_identity_arguments() -> None:
    x = torch.tensor([[[[0.1, 0.6]]]])  # 26 and 153 in 8 bits
    assert torch.allclose(aa.solarize_add(x, torch.tensor([100.0])), torch.tensor([[[[126 / 255, 153 / 255]]]]))
    x = _photo(2)
    assert torch.equal(aa.posterize(x, torch.tensor([8.0, 8.0])), x)
    assert torch.equal(aa.solarize(x, torch.tensor([256.0, 256.0])), x)
    assert torch.allclose(aa.brightness(x, torch.ones(2)), x)


def test_geometric_ops_move_pixels_where_pillow_would() -> None:
    x = _photo(1, size=8)
    fill = torch.zeros(1, 3, 1, 1)
    assert torch.equal(aa.rotate(x, torch.tensor([90.0]), fill), torch.rot90(x, 1, (-2, -1)))  # counter-clockwise
    assert torch.equal(aa.rotate(x, torch.tensor([0.0]), fill), x)
    moved = aa.translate_x(x, torch.tensor([2.0]), fill)
    assert torch.equal(moved[..., :-2], x[..., 2:]) and torch.all(moved[..., -2:] == 0)  # content moved left
    down = aa.translate_y(x, torch.tensor([-3.0]), torch.full((1, 3, 1, 1), 0.5))
    assert torch.equal(down[..., 3:, :], x[..., :-3, :]) and torch.all(down[..., :3, :] == 0.5)  # filled
    # output (x, y) shows input (x + y / 2, y), y from the top edge: timm's shear_x, Pillow's AFFINE
    # (1, factor, 0, 0, 1, 0) (it sheared about the centre: the same, shifted by factor * h / 2)
    for factor in (0.5, -0.3):
        sheared = aa.shear_x(x, torch.tensor([factor]), fill)
        pil = _from_pil(_pil(x[0]).transform((8, 8), Image.AFFINE, (1, factor, 0, 0, 1, 0), Image.NEAREST))
        assert torch.equal(sheared[0], pil), factor
        sheared = aa.shear_y(x, torch.tensor([factor]), fill)
        pil = _from_pil(_pil(x[0]).transform((8, 8), Image.AFFINE, (1, 0, 0, factor, 1, 0), Image.NEAREST))
        assert torch.equal(sheared[0], pil), factor


# timm's warps as Pillow calls: Image.rotate, Image.transform with AFFINE (shear, translate by pixels)
PILLOW_WARPS = {
    "Rotate": (aa.rotate, lambda im, v, **kw: im.rotate(v, **kw), [4.0, -17.3, 27.0, 90.0]),
    "ShearX": (aa.shear_x, lambda im, v, **kw: im.transform(im.size, Image.AFFINE, (1, v, 0, 0, 1, 0), **kw),
               [0.04, -0.17, 0.3]),
    "ShearY": (aa.shear_y, lambda im, v, **kw: im.transform(im.size, Image.AFFINE, (1, 0, 0, v, 1, 0), **kw),
               [0.04, -0.17, 0.3]),
    "TranslateX": (aa.translate_x, lambda im, v, **kw: im.transform(im.size, Image.AFFINE, (1, 0, v, 0, 1, 0), **kw),
                   [0.5, -2.3, 6.0]),
    "TranslateY": (aa.translate_y, lambda im, v, **kw: im.transform(im.size, Image.AFFINE, (1, 0, 0, 0, 1, v), **kw),
                   [0.5, -2.3, 6.0]),
}  # fmt: skip


@pytest.mark.parametrize("name", list(PILLOW_WARPS))
@pytest.mark.parametrize("resample", ["bilinear", "bicubic"])
def test_warps_resample_as_pillow(name: str, resample: str) -> None:
    """Pillow's own filters (bicubic: its transform's cubic, a = -1), edge pixels repeated where a sample
    reaches past the border and the fill colour where its centre falls outside: Pillow truncates to 8 bits,
    so its value is ours rounded down (within float noise), on every pixel of noise images."""
    op, pil, values = PILLOW_WARPS[name]
    g = torch.Generator().manual_seed(len(name))
    fill = (200, 30, 90)
    for value in values:
        x = torch.randint(0, 256, (2, 3, 13, 17), generator=g).float() / 255  # not square: rows and columns apart
        got = op(x, torch.full((2,), value), torch.tensor(fill).view(1, 3, 1, 1) / 255, resample=resample) * 255
        for image, ours in zip(x, got, strict=True):
            kw = {"resample": getattr(Image, resample.upper()), "fillcolor": fill}
            want = _from_pil(pil(_pil(image), value, **kw)) * 255
            assert (ours - want).min() >= -1e-3 and (ours - want).max() < 1 + 1e-3, (value, (ours - want).abs().max())


def test_rand_augment_warps_draw_bilinear_or_bicubic() -> None:
    """Each image's warp draws its filter from the generator (timm: random.choice per op call), and a
    policy's warp is the op's own with that filter, on the sub-batches and masked; TrivialAugment's stay
    nearest (torchvision's) with no draw of theirs."""
    x = _photo(64, size=12)
    fill = torch.full((1, 3, 1, 1), 0.5)
    rounds = aa.draw_rand_augment(x.shape, torch.Generator().manual_seed(0), num_ops=1, prob=1.0)
    again = aa.draw_rand_augment(x.shape, torch.Generator().manual_seed(0), num_ops=1, prob=1.0)
    (r,) = rounds
    assert r.filters == ("bilinear", "bicubic") and torch.equal(r.resample, again[0].resample)
    warps = [k for k, op in enumerate(r.ops) if isinstance(op, aa.Warp)]
    warped = torch.isin(r.code, torch.tensor(warps))
    assert 0 < int(r.resample[warped].sum()) < int(warped.sum())  # both filters drawn
    for masked in (False, True):
        out = aa.apply(x.clone(), rounds, fill, masked=masked)
        for i in torch.nonzero(warped).flatten().tolist():
            op, filter_name = r.ops[int(r.code[i])], r.filters[int(r.resample[i])]
            assert torch.equal(out[i], op(x[i : i + 1], r.arg[i : i + 1], fill, resample=filter_name)[0])
    (trivial,) = aa.draw_trivial_augment(x.shape, torch.Generator().manual_seed(3))
    assert trivial.filters == ("nearest",) and not trivial.resample.any()


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_a_fixed_train_interpolation_pins_rand_augments_warps(interpolation: str) -> None:
    """timm pins RandAugment's warps to a fixed --train-interpolation (aa_params["interpolation"]) and then
    draws no filter: only that one runs, and the ops' draws are those of a run under "random" bar the
    filter's. TrainAugment passes aug.train_interpolation on (the finetune recipes' bicubic)."""
    x = _photo(64, size=12)
    fill = torch.full((1, 3, 1, 1), 0.5)
    (r,) = aa.draw_rand_augment(
        x.shape, torch.Generator().manual_seed(0), num_ops=1, prob=1.0, interpolation=interpolation
    )
    (free,) = aa.draw_rand_augment(x.shape, torch.Generator().manual_seed(0), num_ops=1, prob=1.0)
    assert r.filters == (interpolation,) and not r.resample.any()
    assert torch.equal(r.code, free.code) and torch.equal(r.arg, free.arg)
    out = aa.apply(x.clone(), [r], fill)
    warps = [k for k, op in enumerate(r.ops) if isinstance(op, aa.Warp)]
    for i in torch.nonzero(torch.isin(r.code, torch.tensor(warps))).flatten().tolist():
        op = r.ops[int(r.code[i])]
        assert torch.equal(out[i], op(x[i : i + 1], r.arg[i : i + 1], fill, resample=interpolation)[0])
    seen: list[str] = []
    real = aa.draw_rand_augment
    policy = parse_auto_augment("rand-m9-mstd0.5-inc1")
    augment = TrainAugment(num_classes=3, mean=(0.5,) * 3, std=(0.5,) * 3, auto_augment=policy,
                           train_interpolation=interpolation)  # fmt: skip
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(aa, "draw_rand_augment", lambda *a, **k: seen.append(k["interpolation"]) or real(*a, **k))
        augment((x * 255).to(torch.uint8), torch.zeros(64, dtype=torch.long), torch.Generator().manual_seed(1))
    assert seen == [interpolation]


def test_color_jitter_draws_one_factor_per_image_and_property() -> None:
    x = _photo(64)
    out = aa.color_jitter(x.clone(), torch.Generator().manual_seed(0), 0.4)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    assert not torch.allclose(out, x)
    ratio = out.mean(dim=(1, 2, 3)) / x.mean(dim=(1, 2, 3))
    assert ratio.min() > 0.5 and ratio.max() < 1.5 and ratio.std() > 0.05  # mean brightness moves within 1 ± 0.4-ish
    assert torch.equal(aa.color_jitter(x.clone(), torch.Generator().manual_seed(0), 0.0), x)
    swapped = aa.color_jitter(x.clone(), torch.Generator().manual_seed(0), 0.4)
    assert torch.equal(swapped, out)  # the generator alone decides


@pytest.mark.parametrize("spec", ["rand-m9-mstd0.5", "rand-m5-n3", "trivial"])
def test_policies_are_seeded_by_the_generator(spec: str) -> None:
    x = (_photo(32) * 255).round().to(torch.uint8)
    aug = TrainAugment(10, (0.5,) * 3, (0.5,) * 3, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_prob=0.0,
                       mixup_alpha=0.0, cutmix_alpha=0.0, label_smoothing=0.0, erase_prob=0.0,
                       auto_augment=parse_auto_augment(spec))  # fmt: skip
    labels = torch.zeros(32, dtype=torch.int64)
    a, _ = aug(x, labels, torch.Generator().manual_seed(1))
    b, _ = aug(x, labels, torch.Generator().manual_seed(1))
    c, _ = aug(x, labels, torch.Generator().manual_seed(2))
    plain = (x.float() / 255 - 0.5) / 0.5
    assert torch.equal(a, b) and not torch.equal(a, c)
    changed = (a - plain).abs().amax(dim=(1, 2, 3)) > 1e-6
    assert 0 < int(changed.sum()) <= 32  # RandAugment skips an op half the time; Identity is one of Trivial's


def test_rand_levels_map_to_timms_arguments() -> None:
    """At magnitude 9 (rand-m9): rotate 27 degrees, shear 0.27, translate 40.5% of the side, enhance
    by 1.72, posterize to 3 bits, solarize from 230, add 99 below 128 (timm's _LEVEL_DENOM = 10)."""
    level, sign, plus, minus = torch.tensor([9.0]), torch.tensor([False]), torch.tensor([False]), torch.tensor([True])
    expected = {
        "Rotate": 27.0, "ShearX": 0.27, "TranslateXRel": 0.405 * 20, "Color": 1.72, "Brightness": 1.72,
        "Posterize": 3.0, "Solarize": 230.0, "SolarizeAdd": 99.0,
    }  # fmt: skip
    for name, value in expected.items():
        assert float(aa.RAND_OPS[name][1](level, sign, 20)) == pytest.approx(value), name
    assert float(aa.RAND_OPS["Rotate"][1](level, minus, 20)) == pytest.approx(-27.0)
    assert float(aa.RAND_OPS["Color"][1](level, minus, 20)) == pytest.approx(1.72)  # enhance is never negated
    assert float(aa.TRIVIAL_OPS["Rotate"][1](torch.tensor([30.0]), plus, 224)) == pytest.approx(135.0)
    assert float(aa.TRIVIAL_OPS["Posterize"][1](torch.tensor([30.0]), plus, 224)) == 2.0
    assert len(aa.RAND_OPS) == 15 and len(aa.TRIVIAL_OPS) == 14


def test_recipe_keys_are_checked() -> None:
    cfg = load_config(None, {"aug.color_jitter": 0.4})
    assert cfg.aug.color_jitter == 0.4 and cfg.aug.auto_augment == ""
    assert parse_auto_augment("rand-m9-mstd0.5") == {
        "kind": "rand",
        "magnitude": 9.0,
        "num_ops": 2,
        "magnitude_std": 0.5,
    }
    assert parse_auto_augment("rand-m9-mstd0.5-inc1")["increasing"] is True  # DeiT's recipe (timm's --aa)
    assert parse_auto_augment("rand-m9-mstd0.5-inc0")["increasing"] is False
    # as timm's rand_augment_transform: magnitude 10 unless given, an std above 100 a uniform magnitude
    assert parse_auto_augment("rand-n3-mstd0.5")["magnitude"] == 10.0
    uniform = parse_auto_augment("rand-m8-mstd101-inc1")
    assert uniform["magnitude_std"] == math.inf
    levels = aa.magnitudes(4000, torch.Generator().manual_seed(0), 8.0, uniform["magnitude_std"])
    assert 0 <= float(levels.min()) < 0.05 and 7.95 < float(levels.max()) <= 8.0 and abs(levels.mean() - 4) < 0.2
    for bad, message in [
        ({"aug.auto_augment": "rand-m12"}, "not one vitc knows"),
        ({"aug.auto_augment": "rand-m9-inc2"}, "not one vitc knows"),
        ({"aug.auto_augment": "rand-m9-inc0.5"}, "not one vitc knows"),
        ({"aug.auto_augment": "rand-m9-incx"}, "not one vitc knows"),
        ({"aug.auto_augment": "rand-nx"}, "not one vitc knows"),
        ({"aug.auto_augment": "augmix"}, "not one vitc knows"),
        ({"aug.color_jitter": 1.5}, "in \\[0, 1\\]"),
        ({"aug.color_jitter": 0.4, "aug.auto_augment": "trivial"}, "exclude each other"),
    ]:
        with pytest.raises(VitcError, match=message):
            load_config(None, bad)
