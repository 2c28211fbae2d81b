"""Colour jitter, RandAugment and TrivialAugment on batches of float images in [0, 1] (no torchvision).

The ops follow Pillow's definitions as timm's auto_augment.py applies them (ImageEnhance blends,
ImageOps posterize/solarize/autocontrast/equalize, affine warps filled with the mean colour and
resampled with Pillow's bilinear or bicubic filter, one at random per op as timm's default), and
the policies timm's `--aa` and torchvision's TrivialAugmentWide: RandAugment draws `num_ops` ops per
image, each applied with probability 0.5 at magnitude N(m, mstd) of 10; TrivialAugment draws one op
and one of 31 magnitudes. Every draw comes from the generator passed in, so a seeded run (and a
resumed one) replays the same augmentations. Ops take a batch and one argument per image.

A policy is drawn first, on the CPU, as `Round`s (one op and its argument per image), then applied:
on the CPU to the sub-batch of images that drew each op; on a GPU (`masked=True`) each op runs on
the whole batch and `torch.where` keeps each image's result, so the host never reads the device
(indexing by a mask would wait for it). The ops are per image, so both give the same values, bit
for bit on a one-thread CPU (with more threads PyTorch sums a lone image of over 32,768 values in
parts, so a sub-batch of one image's mean grey can differ in its last bit).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from vitc._numerics import strict_fp32

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
    # written on x's device by fill kernels: a host tensor's copy would make the host wait for the device
    w = torch.cat([x.new_full((1,), v) for v in _LUMA]).view(1, 3, 1, 1)
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
    kernel = torch.ones(c, 1, 3, 3, dtype=x.dtype, device=x.device)
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
    """Pillow's ImageOps.equalize per channel: map 8-bit values through their cumulative histogram.

    Every channel at once, in integers (no loop, no host read): `step` is the pixel count less the
    lightest value's, divided by 255; a channel with step 0 stays as it is."""
    n, c = x.shape[:2]
    u8 = _as_uint8(x).to(torch.int64).flatten(2)
    hist = torch.zeros(n, c, 256, dtype=torch.int64, device=x.device).scatter_add_(2, u8, torch.ones_like(u8))
    values = torch.arange(256, device=x.device)
    lightest = torch.where(hist > 0, values, -1).amax(2, keepdim=True)
    step = (u8.shape[2] - hist.gather(2, lightest)) // 255
    safe = step.clamp(min=1)
    lut = ((hist.cumsum(2) + safe // 2) // safe).clamp_(0, 255)
    lut = torch.cat([torch.zeros_like(lut[..., :1]), lut[..., :-1]], 2)
    mapped = lut.gather(2, u8).view_as(x).to(x.dtype) / 255.0
    return torch.where((step == 0).view(n, c, 1, 1), x, mapped)


def _theta(matrix: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """grid_sample's (N, 2, 3) matrix, in float64, for a pixel-unit `matrix` that maps an output
    position (about the centre) to the input position it shows."""
    theta = torch.zeros(len(matrix), 2, 3, dtype=torch.float64, device=matrix.device)
    theta[:, 0, 0] = matrix[:, 0, 0]
    theta[:, 0, 1] = matrix[:, 0, 1] * h / w
    theta[:, 0, 2] = matrix[:, 0, 2] * 2 / w
    theta[:, 1, 0] = matrix[:, 1, 0] * w / h
    theta[:, 1, 1] = matrix[:, 1, 1]
    theta[:, 1, 2] = matrix[:, 1, 2] * 2 / h
    return theta


def _inside(grid: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W): where an output pixel's centre maps into the input (Pillow's test: source x in [0, W)
    and y in [0, H), -1 to 1 in grid units)."""
    return ((grid >= -1) & (grid < 1)).all(-1).unsqueeze(1)


def _nearest(x: torch.Tensor, grid: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """Nearest (torchvision's TrivialAugmentWide), filling what falls outside with `fill`."""
    moved = F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    inside = F.grid_sample(torch.ones_like(x[:, :1]), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return torch.where(inside > 0, moved, fill.to(x.dtype).expand_as(x))


def _bilinear(x: torch.Tensor, grid: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """Pillow's BILINEAR transform: the 2x2 pixels about each source centre, edge pixels repeated past the
    border (a centre inside the image may fall half a pixel beyond the outer centres), `fill` outside."""
    moved = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return torch.where(_inside(grid), moved, fill.to(x.dtype).expand_as(x))


def _cubic_weights(d: torch.Tensor) -> torch.Tensor:
    """(N, 4, ...) weights of the taps at -1, 0, 1, 2 for samples `d` (N, ...; 0 to 1) past tap 0: Pillow's
    transform bicubic (libImaging/Geometry.c), the cubic with a = -1, not resize's -0.5 nor torch's -0.75."""
    return torch.stack([d * (-1 + d * (2 - d)), 1 + d * d * (d - 2), d * (1 + d * (1 - d)), d * d * (d - 1)], 1)


def _bicubic(x: torch.Tensor, grid: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """Pillow's BICUBIC transform: 4x4 taps (edge pixels repeated past the border) weighted across each row
    and then down, clipped to 0..1, `fill` outside. torch's bicubic has another cubic, so the taps are
    gathered here, a row of four per gather shared by the channels (few operators for the GPU's launches,
    a 4x copy of the images at most)."""
    n, c, h, w = x.shape
    # source positions in pixels, 0 at the first pixel's centre: (N, 2 (x, y), H*W)
    at = torch.stack([(grid[..., 0] + 1) * (w / 2), (grid[..., 1] + 1) * (h / 2)], 1).view(n, 2, h * w) - 0.5
    first = at.floor()
    weights = _cubic_weights(at - first)  # (N, 4 taps, 2, H*W)
    across, down = weights[:, :, 0].unsqueeze(1), weights[:, :, 1]
    taps_at = torch.arange(-1, 3, dtype=x.dtype, device=x.device).view(1, 4, 1)  # a kernel: nothing copied
    cols = (first[:, :1] + taps_at).clamp_(0, w - 1).long()  # (N, 4, H*W)
    rows = (first[:, 1:] + taps_at).clamp_(0, h - 1).long().mul_(w)
    flat = x.reshape(n, c, h * w)
    out = x.new_zeros(n, c, h * w)
    for j in range(4):
        taps = flat.gather(2, (rows[:, j : j + 1] + cols).view(n, 1, -1).expand(n, c, -1)).view(n, c, 4, h * w)
        out.addcmul_((taps * across).sum(2), down[:, j : j + 1])
    moved = out.view(n, c, h, w).clamp_(0.0, 1.0)
    return torch.where(_inside(grid), moved, fill.to(x.dtype).expand_as(x))


SAMPLERS = {"nearest": _nearest, "bilinear": _bilinear, "bicubic": _bicubic}


def _sample(
    x: torch.Tensor, theta: torch.Tensor, fill: torch.Tensor, filters: Sequence[str] = ("nearest",),
    choice: torch.Tensor | None = None,
) -> torch.Tensor:  # fmt: skip
    """x sampled where `theta` says, image i with `filters[choice[i]]` (the first filter without `choice`):
    every filter on every image, each image keeping its own, so that nothing reads the device."""
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    if choice is None or len(filters) == 1:
        return SAMPLERS[filters[0]](x, grid, fill)
    out = x
    for k, name in enumerate(filters):
        out = torch.where((choice == k).view(-1, 1, 1, 1), SAMPLERS[name](x, grid, fill), out)
    return out


@dataclass(frozen=True)
class Warp:
    """An affine op filled with `fill`: `matrix(arg, h, w)` is (N, 2, 3) in pixel units. Kept apart so
    that a policy computes each image's matrix on the CPU with its other draws, and samples it with the
    filter it drew (`Round.filters`); called alone it samples with `resample`."""

    matrix: Callable[[torch.Tensor, int, int], torch.Tensor]

    def __call__(
        self, x: torch.Tensor, arg: torch.Tensor, fill: torch.Tensor, resample: str = "nearest"
    ) -> torch.Tensor:
        h, w = x.shape[-2:]
        return _sample(x, _theta(self.matrix(arg, h, w), h, w), fill, (resample,))


def _affine(
    a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, d: torch.Tensor, tx: torch.Tensor, ty: torch.Tensor
) -> torch.Tensor:
    return torch.stack([torch.stack([a, b, tx], -1), torch.stack([c, d, ty], -1)], -2).to(torch.float64)


def _rotation(degrees: torch.Tensor) -> torch.Tensor:
    """Counter-clockwise by `degrees` about the centre (as Pillow's Image.rotate)."""
    r = torch.deg2rad(degrees.to(torch.float64))
    cos, sin, zero = torch.cos(r), torch.sin(r), torch.zeros_like(r)
    return _affine(cos, -sin, sin, cos, zero, zero)


def _shear(factor: torch.Tensor, along_x: bool, h: int, w: int) -> torch.Tensor:
    """Output (x, y) shows input (x + factor * y, y) along x (transposed along y), y from the top edge as
    Pillow's AFFINE transform that timm applies (torchvision's RandAugment too: centre=[0, 0]): about the
    centre that is the same shear and a shift of factor * h / 2."""
    f = factor.to(torch.float64)
    one, zero = torch.ones_like(f), torch.zeros_like(f)
    if along_x:
        return _affine(one, f, zero, one, f * (h / 2), zero)
    return _affine(one, zero, f, one, zero, f * (w / 2))


def _translation(pixels: torch.Tensor, along_x: bool) -> torch.Tensor:
    """Output (x, y) shows input (x + pixels, y) along x: the content moves left by `pixels`."""
    p = pixels.to(torch.float64)
    one, zero = torch.ones_like(p), torch.zeros_like(p)
    return _affine(one, zero, zero, one, p, zero) if along_x else _affine(one, zero, zero, one, zero, p)


rotate = Warp(lambda d, h, w: _rotation(d))
shear_x = Warp(lambda f, h, w: _shear(f, True, h, w))
shear_y = Warp(lambda f, h, w: _shear(f, False, h, w))
translate_x = Warp(lambda p, h, w: _translation(p, True))
translate_y = Warp(lambda p, h, w: _translation(p, False))


def identity(x: torch.Tensor, arg: torch.Tensor | None = None, fill: torch.Tensor | None = None) -> torch.Tensor:
    return x


# ---------------------------------------------------------------- the policies


def _signed(value: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    return torch.where(sign, -value, value)


def _enhance(level: torch.Tensor, sign: torch.Tensor, size: int) -> torch.Tensor:
    return level / 10 * 1.8 + 0.1


Rule = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]  # (level, sign, image side) -> argument

# timm's RandAugment warps resample with Pillow's BILINEAR or BICUBIC, at random per op call under its default
# train interpolation, "random", or the one it names; torchvision's TrivialAugmentWide with NEAREST (its default)
RAND_FILTERS = ("bilinear", "bicubic")

# timm's _RAND_TRANSFORMS with its level-to-argument rules (level 0-10; `sign` negates where timm does)
RAND_OPS: dict[str, tuple[Op, Rule]] = {
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

# timm's _RAND_INCREASING_TRANSFORMS ("-inc1", DeiT's recipe): a higher level always changes the image more
RAND_INCREASING_OPS: dict[str, tuple[Op, Rule]] = {
    **RAND_OPS,
    "Posterize": (posterize, lambda lv, s, n: 4 - torch.floor(lv / 10 * 4)),
    "Solarize": (solarize, lambda lv, s, n: 256 - torch.floor(lv / 10 * 256)),
    **{
        name: (op, lambda lv, s, n: (1.0 + _signed(lv / 10 * 0.9, s)).clamp_(min=0.1))
        for name, op in (("Color", color), ("Contrast", contrast), ("Brightness", brightness), ("Sharpness", sharpness))
    },
}

# torchvision's TrivialAugmentWide: one op, magnitude bin b of 31 (translation: 32 px at 224, scaled to the image)
_BINS = 31
TRIVIAL_OPS: dict[str, tuple[Op, Rule]] = {
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


@dataclass(frozen=True)
class Round:
    """One op per image, drawn: image i gets `ops[code[i]]` (code -1: none) at `arg[i]`; where that op
    is a `Warp`, `theta[i]` is its sampling matrix, computed on the CPU with the other draws, and
    `filters[resample[i]]` the filter it samples with."""

    ops: tuple[Op, ...]
    code: torch.Tensor  # (N,) int64
    arg: torch.Tensor  # (N,) float64
    theta: torch.Tensor  # (N, 2, 3) float64, zeros where the op is no warp
    resample: torch.Tensor  # (N,) int64, an index into `filters`
    filters: tuple[str, ...] = ("nearest",)  # names in SAMPLERS

    def tensors(self) -> list[torch.Tensor]:
        return [self.code, self.arg, self.theta, self.resample]

    def on(self, code: torch.Tensor, arg: torch.Tensor, theta: torch.Tensor, resample: torch.Tensor) -> Round:
        """The same round with its tensors moved (by `vitc.data.transforms.to_device_together`)."""
        return replace(self, code=code, arg=arg, theta=theta, resample=resample)


def _round(
    table: dict[str, tuple[Op, Rule]], code: torch.Tensor, level: torch.Tensor, sign: torch.Tensor,
    shape: Sequence[int], resample: torch.Tensor | None = None, filters: tuple[str, ...] = ("nearest",),
) -> Round:  # fmt: skip
    """Each image's argument for the op it drew: every rule runs on every level (elementwise, so each
    value is the one its op alone would get) and the image keeps its own op's; its warp samples with
    `filters[resample[i]]` (the first filter for every image without `resample`)."""
    h, w = shape[-2:]
    arg = torch.zeros(len(code), dtype=torch.float64)
    theta = torch.zeros(len(code), 2, 3, dtype=torch.float64)
    for k, (op, rule) in enumerate(table.values()):
        mine = code == k
        value = rule(level, sign, min(h, w)).to(torch.float64)
        arg = torch.where(mine, value, arg)
        if isinstance(op, Warp):
            theta = torch.where(mine.view(-1, 1, 1), _theta(op.matrix(value, h, w), h, w), theta)
    resample = torch.zeros_like(code) if resample is None else resample
    return Round(tuple(op for op, _ in table.values()), code, arg, theta, resample, filters)


def apply(x: torch.Tensor, rounds: Sequence[Round], fill: torch.Tensor, masked: bool = False) -> torch.Tensor:
    """The drawn rounds, in order, on float images x (changed in place unless `masked`).

    Sub-batches (the CPU): each op runs on the images that drew it. `masked` (a GPU): each op runs on
    every image and `torch.where` keeps each image's own (all warps in one sampling), so nothing on
    the way reads the device; the values are the same, at a few times the work, which a GPU has.
    In full fp32 whatever the session set: TF32 or oneDNN's bf16 would change the filter and warps."""
    with strict_fp32():
        for r in rounds:
            if not masked:
                for k, op in enumerate(r.ops):
                    if isinstance(op, Warp):  # each filter on the images that drew it
                        for f, name in enumerate(r.filters):
                            idx = torch.nonzero((r.code == k) & (r.resample == f)).flatten()
                            if len(idx):
                                x[idx] = _sample(x[idx], r.theta[idx], fill, (name,))
                        continue
                    idx = torch.nonzero(r.code == k).flatten()
                    if len(idx):
                        x[idx] = op(x[idx], r.arg[idx], fill)
                continue
            out, warped = x, torch.zeros_like(r.code, dtype=torch.bool)
            for k, op in enumerate(r.ops):
                if isinstance(op, Warp):
                    warped |= r.code == k
                elif op is not identity:
                    out = torch.where((r.code == k).view(-1, 1, 1, 1), op(x, r.arg, fill), out)
            if any(isinstance(op, Warp) for op in r.ops):
                out = torch.where(warped.view(-1, 1, 1, 1), _sample(x, r.theta, fill, r.filters, r.resample), out)
            x = out
    return x


def magnitudes(n: int, generator: torch.Generator, magnitude: float, magnitude_std: float) -> torch.Tensor:
    """Each image's RandAugment level: N(magnitude, magnitude_std), or uniform in [0, magnitude] for an
    infinite std (timm's mstd > 100), clipped to 0-10."""
    if math.isinf(magnitude_std):
        return (torch.rand(n, generator=generator, dtype=torch.float64) * magnitude).clamp_(0.0, 10.0)
    noise = torch.randn(n, generator=generator, dtype=torch.float64) * magnitude_std
    return (magnitude + noise).clamp_(0.0, 10.0)


def draw_rand_augment(
    shape: Sequence[int], generator: torch.Generator, magnitude: float = 9.0, num_ops: int = 2,
    magnitude_std: float = 0.0, prob: float = 0.5, increasing: bool = False, interpolation: str = "random",
) -> list[Round]:  # fmt: skip
    """timm's RandAugment ("rand-m9-mstd0.5[-inc1]"): `num_ops` ops drawn with replacement per image,
    each applied with probability `prob` at a magnitude drawn by `magnitudes`; `increasing` takes timm's
    increasing-severity ops. A warp samples with the train interpolation's filter, as timm's: under
    "random" bilinear or bicubic, one of the two at random per image and op (`random.choice` per op
    call); "bilinear" or "bicubic" pins it (timm's aa_params["interpolation"]) and draws nothing."""
    n, table = shape[0], RAND_INCREASING_OPS if increasing else RAND_OPS
    rounds = []
    for _ in range(num_ops):
        choice = torch.randint(0, len(table), (n,), generator=generator)
        chosen = torch.rand(n, generator=generator) < prob
        level = magnitudes(n, generator, magnitude, magnitude_std)
        sign = torch.rand(n, generator=generator) < 0.5
        if interpolation == "random":
            resample, filters = (torch.rand(n, generator=generator) < 0.5).long(), RAND_FILTERS
        else:  # one filter: a warp round runs that one alone
            resample, filters = torch.zeros(n, dtype=torch.int64), (interpolation,)
        code = torch.where(chosen, choice, -1)
        rounds.append(_round(table, code, level, sign, shape, resample, filters))
    return rounds


def draw_trivial_augment(shape: Sequence[int], generator: torch.Generator) -> list[Round]:
    """torchvision's TrivialAugmentWide: one op per image at one of 31 magnitudes, both uniform."""
    n = shape[0]
    choice = torch.randint(0, len(TRIVIAL_OPS), (n,), generator=generator)
    level = torch.randint(0, _BINS, (n,), generator=generator).to(torch.float64)
    sign = torch.rand(n, generator=generator) < 0.5
    return [_round(TRIVIAL_OPS, choice, level, sign, shape)]


_JITTER = (brightness, contrast, color)


def draw_color_jitter(n: int, generator: torch.Generator, strength: float) -> list[Round]:
    """timm's --color-jitter s (torchvision's ColorJitter(s, s, s)): brightness, contrast and saturation
    each scaled by a factor from U(1 - s, 1 + s), in a random order per image: three rounds."""
    if strength <= 0:
        return []
    factors = 1.0 + (torch.rand(n, 3, generator=generator, dtype=torch.float64) * 2 - 1) * strength
    order = torch.argsort(torch.rand(n, 3, generator=generator), dim=1)
    factor = factors.gather(1, order)  # each image's factors in its order
    theta, resample = torch.zeros(n, 2, 3, dtype=torch.float64), torch.zeros(n, dtype=torch.int64)
    return [Round(_JITTER, order[:, p], factor[:, p], theta, resample) for p in range(3)]


def rand_augment(
    x: torch.Tensor, generator: torch.Generator, fill: torch.Tensor, magnitude: float = 9.0, num_ops: int = 2,
    magnitude_std: float = 0.0, prob: float = 0.5, increasing: bool = False, interpolation: str = "random",
) -> torch.Tensor:  # fmt: skip
    """RandAugment on a copy of x (the arguments: `draw_rand_augment`'s)."""
    rounds = draw_rand_augment(x.shape, generator, magnitude, num_ops, magnitude_std, prob, increasing, interpolation)
    return apply(x.clone(), rounds, fill)


def trivial_augment(x: torch.Tensor, generator: torch.Generator, fill: torch.Tensor) -> torch.Tensor:
    """TrivialAugmentWide on a copy of x."""
    return apply(x.clone(), draw_trivial_augment(x.shape, generator), fill)


def color_jitter(x: torch.Tensor, generator: torch.Generator, strength: float) -> torch.Tensor:
    """Colour jitter of strength `strength`, in place."""
    return apply(x, draw_color_jitter(x.shape[0], generator, strength), torch.zeros(()))


def fill_value(mean: Sequence[float], channels: int) -> torch.Tensor:
    """The colour warps fill uncovered pixels with: the normalisation mean (0 once normalised), as timm."""
    m = torch.as_tensor(mean, dtype=torch.float32).flatten()
    return (m if m.numel() == channels else m[:1].expand(channels)).view(1, channels, 1, 1)


__all__ = [
    "RAND_INCREASING_OPS", "RAND_OPS", "TRIVIAL_OPS", "Round", "apply", "color_jitter", "draw_color_jitter",
    "draw_rand_augment", "draw_trivial_augment", "fill_value", "rand_augment", "trivial_augment",
]  # fmt: skip
