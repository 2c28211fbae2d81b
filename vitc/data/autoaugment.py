"""Colour jitter, RandAugment and TrivialAugment on batches of float images in [0, 1] (no torchvision).

The ops follow Pillow's definitions as timm's auto_augment.py applies them (ImageEnhance blends,
ImageOps posterize/solarize/autocontrast/equalize, affine warps filled with the mean colour), and
the policies timm's `--aa` and torchvision's TrivialAugmentWide: RandAugment draws `num_ops` ops per
image, each applied with probability 0.5 at magnitude N(m, mstd) of 10; TrivialAugment draws one op
and one of 31 magnitudes. Every draw comes from the generator passed in, so a seeded run (and a
resumed one) replays the same augmentations. Ops take a sub-batch and one argument per image.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

Op = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (images, argument per image, fill)
_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601, as Pillow's "L" and torchvision's rgb_to_grayscale


def _per_image(values: torch.Tensor) -> torch.Tensor:
    return values.to(torch.float32).view(-1, 1, 1, 1)


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Pillow's ImageEnhance: other + factor * (x - other), clipped (factor 1 is the identity)."""
    f = _per_image(factor)
    return (other + f * (x - other)).clamp_(0.0, 1.0)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) luma of RGB images; a one-channel image is its own."""
    if x.shape[1] != 3:
        return x[:, :1]
    w = torch.tensor(_LUMA, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def brightness(x: torch.Tensor, factor: torch.Tensor, fill: torch.Tensor | None = None) -> torch.Tensor:
    return _blend(x, torch.zeros_like(x), factor)


def contrast(x: torch.Tensor, factor: torch.Tensor, fill: torch.Tensor | None = None) -> torch.Tensor:
    """Blend with the image's mean grey level (0 gives a flat grey image)."""
    return _blend(x, grayscale(x).mean(dim=(1, 2, 3), keepdim=True).expand_as(x), factor)


def color(x: torch.Tensor, factor: torch.Tensor, fill: torch.Tensor | None = None) -> torch.Tensor:
    """Saturation: blend with the grey image (0 gives grey, 2 doubles the colour)."""
    return _blend(x, grayscale(x).expand_as(x), factor)


def sharpness(x: torch.Tensor, factor: torch.Tensor, fill: torch.Tensor | None = None) -> torch.Tensor:
    """Blend with Pillow's SMOOTH filter ([[1,1,1],[1,5,1],[1,1,1]] / 13) inside a one-pixel border."""
    c = x.shape[1]
    kernel = torch.ones(c, 1, 3, 3, dtype=x.dtype)
    kernel[:, :, 1, 1] = 5.0
    smooth = x.clone()
    smooth[:, :, 1:-1, 1:-1] = F.conv2d(x, kernel / 13.0, groups=c)
    return _blend(x, smooth, factor)


def _as_uint8(x: torch.Tensor) -> torch.Tensor:
    return (x * 255.0).round_().clamp_(0, 255).to(torch.uint8)


def posterize(x: torch.Tensor, bits: torch.Tensor, fill: torch.Tensor | None = None) -> torch.Tensor:
    """Keep the `bits` most significant bits of every 8-bit value (8 keeps the image)."""
    keep = bits.round().clamp(0, 8).to(torch.int64)
    mask = (255 - (2 ** (8 - keep) - 1)).to(torch.uint8).view(-1, 1, 1, 1)
    return (_as_uint8(x) & mask).to(x.dtype) / 255.0


def solarize(x: torch.Tensor, threshold: torch.Tensor, fill: torch.Tensor | None = None) -> torch.Tensor:
    """Invert the 8-bit values at or above `threshold` (0-256; 256 keeps the image)."""
    return torch.where(_as_uint8(x).to(torch.float32) >= _per_image(threshold), 1.0 - x, x)


def solarize_add(x: torch.Tensor, amount: torch.Tensor, fill: torch.Tensor | None = None) -> torch.Tensor:
    """Add `amount` (8-bit units) to values below 128, saturating at 255."""
    u8 = _as_uint8(x).to(torch.float32)
    return torch.where(u8 < 128, (u8 + _per_image(amount)).clamp_(max=255.0), u8) / 255.0


def invert(x: torch.Tensor, arg: torch.Tensor | None = None, fill: torch.Tensor | None = None) -> torch.Tensor:
    return 1.0 - x


def autocontrast(x: torch.Tensor, arg: torch.Tensor | None = None, fill: torch.Tensor | None = None) -> torch.Tensor:
    """Stretch each channel of each image from its darkest to its lightest value to 0..1."""
    lo = x.amin(dim=(2, 3), keepdim=True)
    hi = x.amax(dim=(2, 3), keepdim=True)
    flat = hi <= lo
    return torch.where(flat, x, (x - lo) / torch.where(flat, torch.ones_like(hi), hi - lo))


def equalize(x: torch.Tensor, arg: torch.Tensor | None = None, fill: torch.Tensor | None = None) -> torch.Tensor:
    """Pillow's ImageOps.equalize per channel: map 8-bit values through their cumulative histogram."""
    u8 = _as_uint8(x).to(torch.int64)
    out = torch.empty_like(x)
    for i in range(x.shape[0]):
        for c in range(x.shape[1]):
            hist = torch.bincount(u8[i, c].flatten(), minlength=256)
            nonzero = hist[hist > 0]
            step = int(nonzero[:-1].sum()) // 255
            if step == 0:
                out[i, c] = x[i, c]
                continue
            lut = ((torch.cumsum(hist, 0) + step // 2) // step).clamp_(0, 255)
            lut = torch.cat([torch.zeros(1, dtype=lut.dtype), lut[:-1]])
            out[i, c] = lut[u8[i, c]].to(x.dtype) / 255.0
    return out


def _warp(x: torch.Tensor, matrix: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """Sample x at matrix @ (output pixel, about the centre) for each image, nearest, filled with `fill`.

    matrix: (N, 2, 3) in pixel units, mapping an output position to the input position it shows.
    """
    n, _, h, w = x.shape
    theta = torch.zeros(n, 2, 3, dtype=torch.float64)
    theta[:, 0, 0] = matrix[:, 0, 0]
    theta[:, 0, 1] = matrix[:, 0, 1] * h / w
    theta[:, 0, 2] = matrix[:, 0, 2] * 2 / w
    theta[:, 1, 0] = matrix[:, 1, 0] * w / h
    theta[:, 1, 1] = matrix[:, 1, 1]
    theta[:, 1, 2] = matrix[:, 1, 2] * 2 / h
    grid = F.affine_grid(theta.to(x.dtype), [n, x.shape[1], h, w], align_corners=False)
    moved = F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    inside = F.grid_sample(torch.ones_like(x[:, :1]), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return torch.where(inside > 0, moved, fill.to(x.dtype).expand_as(x))


def _affine(
    a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, d: torch.Tensor, tx: torch.Tensor, ty: torch.Tensor
) -> torch.Tensor:
    return torch.stack([torch.stack([a, b, tx], -1), torch.stack([c, d, ty], -1)], -2).to(torch.float64)


def rotate(x: torch.Tensor, degrees: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """Rotate counter-clockwise by `degrees` about the centre (as Pillow's Image.rotate)."""
    r = torch.deg2rad(degrees.to(torch.float64))
    cos, sin, zero = torch.cos(r), torch.sin(r), torch.zeros_like(r)
    return _warp(x, _affine(cos, -sin, sin, cos, zero, zero), fill)


def shear_x(x: torch.Tensor, factor: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """Output (x, y) shows input (x + factor * y, y), y from the centre."""
    one, zero = torch.ones_like(factor, dtype=torch.float64), torch.zeros_like(factor, dtype=torch.float64)
    return _warp(x, _affine(one, factor.to(torch.float64), zero, one, zero, zero), fill)


def shear_y(x: torch.Tensor, factor: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    one, zero = torch.ones_like(factor, dtype=torch.float64), torch.zeros_like(factor, dtype=torch.float64)
    return _warp(x, _affine(one, zero, factor.to(torch.float64), one, zero, zero), fill)


def translate_x(x: torch.Tensor, pixels: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """Output (x, y) shows input (x + pixels, y): the content moves left by `pixels`."""
    one, zero = torch.ones_like(pixels, dtype=torch.float64), torch.zeros_like(pixels, dtype=torch.float64)
    return _warp(x, _affine(one, zero, zero, one, pixels.to(torch.float64), zero), fill)


def translate_y(x: torch.Tensor, pixels: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    one, zero = torch.ones_like(pixels, dtype=torch.float64), torch.zeros_like(pixels, dtype=torch.float64)
    return _warp(x, _affine(one, zero, zero, one, zero, pixels.to(torch.float64)), fill)


def identity(x: torch.Tensor, arg: torch.Tensor | None = None, fill: torch.Tensor | None = None) -> torch.Tensor:
    return x


# ---------------------------------------------------------------- the policies


def _signed(value: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    return torch.where(sign, -value, value)


def _enhance(level: torch.Tensor, sign: torch.Tensor, size: int) -> torch.Tensor:
    return level / 10 * 1.8 + 0.1


# timm's _RAND_TRANSFORMS with its level-to-argument rules (level 0-10; `sign` negates where timm does)
RAND_OPS: dict[str, tuple[Op, Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]]] = {
    "AutoContrast": (autocontrast, lambda lv, s, n: lv),
    "Equalize": (equalize, lambda lv, s, n: lv),
    "Invert": (invert, lambda lv, s, n: lv),
    "Rotate": (rotate, lambda lv, s, n: _signed(lv / 10 * 30.0, s)),
    "Posterize": (posterize, lambda lv, s, n: torch.floor(lv / 10 * 4)),
    "Solarize": (solarize, lambda lv, s, n: torch.floor(lv / 10 * 256)),
    "SolarizeAdd": (solarize_add, lambda lv, s, n: torch.floor(lv / 10 * 110)),
    "Color": (color, _enhance),
    "Contrast": (contrast, _enhance),
    "Brightness": (brightness, _enhance),
    "Sharpness": (sharpness, _enhance),
    "ShearX": (shear_x, lambda lv, s, n: _signed(lv / 10 * 0.3, s)),
    "ShearY": (shear_y, lambda lv, s, n: _signed(lv / 10 * 0.3, s)),
    "TranslateXRel": (translate_x, lambda lv, s, n: _signed(lv / 10 * 0.45 * n, s)),
    "TranslateYRel": (translate_y, lambda lv, s, n: _signed(lv / 10 * 0.45 * n, s)),
}

# torchvision's TrivialAugmentWide: one op, magnitude bin b of 31 (translation: 32 px at 224, scaled to the image)
_BINS = 31
TRIVIAL_OPS: dict[str, tuple[Op, Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]]] = {
    "Identity": (identity, lambda b, s, n: b),
    "ShearX": (shear_x, lambda b, s, n: _signed(b / (_BINS - 1) * 0.99, s)),
    "ShearY": (shear_y, lambda b, s, n: _signed(b / (_BINS - 1) * 0.99, s)),
    "TranslateX": (translate_x, lambda b, s, n: _signed(b / (_BINS - 1) * 32.0 * n / 224, s)),
    "TranslateY": (translate_y, lambda b, s, n: _signed(b / (_BINS - 1) * 32.0 * n / 224, s)),
    "Rotate": (rotate, lambda b, s, n: _signed(b / (_BINS - 1) * 135.0, s)),
    "Brightness": (brightness, lambda b, s, n: 1.0 + _signed(b / (_BINS - 1) * 0.99, s)),
    "Color": (color, lambda b, s, n: 1.0 + _signed(b / (_BINS - 1) * 0.99, s)),
    "Contrast": (contrast, lambda b, s, n: 1.0 + _signed(b / (_BINS - 1) * 0.99, s)),
    "Sharpness": (sharpness, lambda b, s, n: 1.0 + _signed(b / (_BINS - 1) * 0.99, s)),
    "Posterize": (posterize, lambda b, s, n: 8 - torch.round(b / ((_BINS - 1) / 6))),
    "Solarize": (solarize, lambda b, s, n: (1.0 - b / (_BINS - 1)) * 255.0),
    "AutoContrast": (autocontrast, lambda b, s, n: b),
    "Equalize": (equalize, lambda b, s, n: b),
}


def _apply(
    x: torch.Tensor, ops: Sequence[tuple[Op, Callable]], choice: torch.Tensor, level: torch.Tensor,
    sign: torch.Tensor, fill: torch.Tensor, chosen: torch.Tensor,
) -> torch.Tensor:  # fmt: skip
    """Apply op `choice[i]` at `level[i]` to image i where `chosen[i]`, op by op over sub-batches."""
    out = x.clone()
    size = min(x.shape[-2:])
    for k, (op, to_arg) in enumerate(ops):
        idx = torch.nonzero(chosen & (choice == k)).flatten()
        if len(idx):
            out[idx] = op(x[idx], to_arg(level[idx], sign[idx], size), fill)
    return out


def rand_augment(
    x: torch.Tensor, generator: torch.Generator, fill: torch.Tensor,
    magnitude: float = 9.0, num_ops: int = 2, magnitude_std: float = 0.0, prob: float = 0.5,
) -> torch.Tensor:  # fmt: skip
    """timm's RandAugment ("rand-m9-mstd0.5"): `num_ops` ops drawn with replacement per image, each
    applied with probability `prob` at a magnitude drawn from N(magnitude, magnitude_std), clipped to 0-10."""
    n, ops = x.shape[0], list(RAND_OPS.values())
    for _ in range(num_ops):
        choice = torch.randint(0, len(ops), (n,), generator=generator)
        chosen = torch.rand(n, generator=generator) < prob
        noise = torch.randn(n, generator=generator, dtype=torch.float64) * magnitude_std
        level = (magnitude + noise).clamp_(0.0, 10.0)
        sign = torch.rand(n, generator=generator) < 0.5
        x = _apply(x, ops, choice, level, sign, fill, chosen)
    return x


def trivial_augment(x: torch.Tensor, generator: torch.Generator, fill: torch.Tensor) -> torch.Tensor:
    """torchvision's TrivialAugmentWide: one op per image at one of 31 magnitudes, both uniform."""
    n, ops = x.shape[0], list(TRIVIAL_OPS.values())
    choice = torch.randint(0, len(ops), (n,), generator=generator)
    level = torch.randint(0, _BINS, (n,), generator=generator).to(torch.float64)
    sign = torch.rand(n, generator=generator) < 0.5
    return _apply(x, ops, choice, level, sign, fill, torch.ones(n, dtype=torch.bool))


def color_jitter(x: torch.Tensor, generator: torch.Generator, strength: float) -> torch.Tensor:
    """timm's --color-jitter s (torchvision's ColorJitter(s, s, s)): brightness, contrast and saturation
    each scaled by a factor from U(1 - s, 1 + s), in a random order per image."""
    n = x.shape[0]
    if strength <= 0:
        return x
    factors = 1.0 + (torch.rand(n, 3, generator=generator, dtype=torch.float64) * 2 - 1) * strength
    order = torch.argsort(torch.rand(n, 3, generator=generator), dim=1)
    ops = (brightness, contrast, color)
    for position in range(3):
        for k, op in enumerate(ops):
            idx = torch.nonzero(order[:, position] == k).flatten()
            if len(idx):
                x[idx] = op(x[idx], factors[idx, k])
    return x


def fill_value(mean: Sequence[float], channels: int) -> torch.Tensor:
    """The colour warps fill uncovered pixels with: the normalisation mean (0 once normalised), as timm."""
    m = torch.as_tensor(mean, dtype=torch.float32).flatten()
    return (m if m.numel() == channels else m[:1].expand(channels)).view(1, channels, 1, 1)


__all__ = ["RAND_OPS", "TRIVIAL_OPS", "color_jitter", "fill_value", "rand_augment", "trivial_augment"]
