"""Batch augmentation for training, driven by an explicit `torch.Generator`.

Every random draw comes from the generator passed in (never the global RNG), so a resumed run
that recreates the generator (see `vitc.data.make_generator`) replays the same augmentations.
The recipe follows DeiT/timm: RandomResizedCrop, horizontal flip, normalise, RandomErasing
('pixel' mode), then Mixup/CutMix on the batch with label smoothing.

On a GPU the same recipe runs on the device (`TrainAugment(..., device=)`, as timm's PrefetchLoader
normalises and erases there): the uint8 batch crosses once, the per-sample draws stay on the CPU
generator (small tensors, copied without waiting for the device), and only the full-size noise of
RandomErasing comes from a device generator seeded by one draw from the run's. Colour jitter and
RandAugment/TrivialAugment run there too, masked (vitc.data.autoaugment.apply). On the CPU every
draw and every value is what it always was.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from vitc._numerics import strict_fp32
from vitc.data import TRAIN_INTERPOLATIONS
from vitc.errors import VitcError


def check_train_interpolation(name: str) -> None:
    """A crop's filter as TrainAugment, random_resized_crop and the streamed SampleTransform take it."""
    if name not in TRAIN_INTERPOLATIONS:
        raise VitcError(f"train_interpolation must be one of {', '.join(TRAIN_INTERPOLATIONS)}, got {name!r}")


def _stats(values: Sequence[float], c: int, what: str) -> torch.Tensor:
    t = torch.as_tensor(values, dtype=torch.float32).flatten()
    if t.numel() not in (1, c):
        raise VitcError(f"{what} has {t.numel()} values but the images have {c} channels")
    return t.view(1, -1, 1, 1)


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`t` on `device` without making the host wait: a plain `.to("cuda")` of pageable memory
    synchronises the stream (waits for every kernel queued before it), so a CPU tensor goes through
    pinned memory and an asynchronous copy (PyTorch keeps the pinned block until the copy is done)."""
    if t.device == device:
        return t
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def to_device_together(tensors: Sequence[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """Small CPU tensors on `device` in one copy rather than one each: packed as float64 and cast
    back there, which is exact for float32/64 and for integers and booleans below 2**53."""
    packed = to_device(torch.cat([t.reshape(-1).to(torch.float64) for t in tensors]), device)
    parts = torch.split(packed, [t.numel() for t in tensors])
    return [part.view(t.shape).to(t.dtype) for part, t in zip(parts, tensors, strict=True)]


# device types where colour ops run on the sub-batch of images that drew each (the CPU: less work and
# no waiting); elsewhere they run masked on the whole batch, so the host never reads the device
SUB_BATCHES = {"cpu": True}


def normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32 (x / 255 - mean) / std, per channel, on the images' device."""
    if images.dtype != torch.uint8:
        raise ValueError(f"normalize expects uint8 images, got {images.dtype}")
    x = images if images.dim() == 4 else images.unsqueeze(0)
    c, where = x.shape[1], x.device
    out = (x.float().div_(255.0) - to_device(_stats(mean, c, "mean"), where)) / to_device(_stats(std, c, "std"), where)
    return out if images.dim() == 4 else out[0]


def eval_transform(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Evaluation input: the images are stored at model size already, so only normalisation remains."""
    return normalize(images, mean, std)


def _uniform(n: int, lo: float, hi: float, g: torch.Generator, k: int = 1) -> torch.Tensor:
    return torch.rand(n, k, generator=g, dtype=torch.float64) * (hi - lo) + lo


def random_resized_crop(
    x: torch.Tensor,
    generator: torch.Generator,
    scale: tuple[float, float] = (0.35, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    attempts: int = 10,
    sizes: torch.Tensor | None = None,
    out_size: int | None = None,
    interpolation: str = "bilinear",
) -> torch.Tensor:
    """Per-sample random crop of area `scale` and aspect `ratio`, resized to `out_size` (default: the
    images' own) with Pillow's bilinear or bicubic filter; "random" draws one of the two per sample, as
    timm's default train interpolation (`random.choice` after the box, in RandomResizedCropAndInterpolation).

    The box is drawn as torchvision's RandomResizedCrop does (10 tries, then a central crop), all
    samples at once, and cut and resized as timm's `crop(box).resize()` with Pillow (`resize_boxes`): uint8
    images come back uint8, as timm's crops do. With `sizes` ((N, 2) heights and widths) the images are whole photos
    squashed to a square: each box is drawn in its photo's pixels and proportions, and cut where it lies
    in the squashed copy.
    """
    check_train_interpolation(interpolation)
    n, _, h, w = x.shape
    if sizes is None:
        hs, ws = torch.full((n,), float(h), dtype=torch.float64), torch.full((n,), float(w), dtype=torch.float64)
    else:
        hs, ws = sizes[:, 0].to(torch.float64), sizes[:, 1].to(torch.float64)
    area = _uniform(n, scale[0], scale[1], generator, attempts) * (hs * ws)[:, None]
    log_r = _uniform(n, math.log(ratio[0]), math.log(ratio[1]), generator, attempts)
    cw = torch.sqrt(area * torch.exp(log_r)).round()
    ch = torch.sqrt(area / torch.exp(log_r)).round()
    ok = (cw > 0) & (cw <= ws[:, None]) & (ch > 0) & (ch <= hs[:, None])
    first = ok.float().argmax(1, keepdim=True)  # first valid attempt per sample
    found = ok.any(1)
    cw, ch = cw.gather(1, first)[:, 0], ch.gather(1, first)[:, 0]
    # fallback: the whole image, clamped to the ratio range
    in_ratio = ws / hs
    cw = torch.where(found, cw, torch.where(in_ratio > max(ratio), torch.round(hs * max(ratio)), ws))
    ch = torch.where(found, ch, torch.where(in_ratio < min(ratio), torch.round(ws / min(ratio)), hs))
    u = torch.rand(n, 2, generator=generator, dtype=torch.float64)
    top = torch.where(found, torch.floor(u[:, 0] * (hs - ch + 1)), torch.floor((hs - ch) / 2))
    left = torch.where(found, torch.floor(u[:, 1] * (ws - cw + 1)), torch.floor((ws - cw) / 2))
    if interpolation == "random":
        bicubic = torch.rand(n, generator=generator) < 0.5
    else:
        bicubic = torch.full((n,), interpolation == "bicubic")
    # the box in the copy's pixels, whatever its size
    boxes = torch.stack([left * w / ws, top * h / hs, cw * w / ws, ch * h / hs], 1)
    return resize_boxes(x, boxes, bicubic, (out_size or h, out_size or w))


def _triangle(d: torch.Tensor) -> torch.Tensor:
    """Pillow's bilinear filter (support 1)."""
    return (1 - d.abs()).clamp_(min=0)


def _keys_cubic(d: torch.Tensor) -> torch.Tensor:
    """Pillow's resize bicubic (support 2): Keys' cubic with a = -0.5 (its transform's, which RandAugment's
    warps use, has a = -1; torch's -0.75)."""
    d = d.abs()
    near, far = (1.5 * d - 2.5) * d * d + 1, ((-0.5 * d + 2.5) * d - 4) * d + 2
    return torch.where(d < 1, near, torch.where(d < 2, far, 0.0))


def _support(lengths: torch.Tensor, bicubic: torch.Tensor, out: int) -> torch.Tensor:
    """Each filter's reach in input pixels: its own, widened by the scale when downscaling (Pillow's antialiasing)."""
    return torch.where(bicubic, 2.0, 1.0).to(lengths.dtype) * (lengths / out).clamp(min=1.0)


def _resize_matrix(
    start: torch.Tensor, length: torch.Tensor, bicubic: torch.Tensor, in_size: int, out_size: int, taps: int
) -> torch.Tensor:
    """(N, out_size, in_size) float32: row o holds the weights Pillow gives output pixel o along one axis
    (libImaging/Resample.c, precompute_coeffs): centred at start + (o + 0.5) * scale, the filter widened by
    the scale when downscaling, normalised to sum to 1. Only the pixels the box covers weigh, as where timm
    crops and then resizes (`crop(box).resize()`, its edge repeated): Pillow's `resize(box=)` also reads
    the pixels beyond a box's edge. Made in float64 from `taps` (at least 2 * ceil(support) + 1) taps per
    output pixel where the boxes are."""
    where = start.device
    scale = (length / out_size).view(-1, 1, 1)
    widen = scale.clamp(min=1.0)
    support = _support(length, bicubic, out_size).view(-1, 1, 1)
    center = (
        start.view(-1, 1, 1) + (torch.arange(out_size, dtype=torch.float64, device=where).view(-1, 1) + 0.5) * scale
    )
    # the pixels the box covers, [lo, hi): the box's own for whole boxes; a fractional box (a crop of a
    # squashed copy) also keeps the pixels its edges cut
    lo, hi = start.floor().view(-1, 1, 1), (start + length).ceil().clamp(max=in_size).view(-1, 1, 1)
    first = torch.maximum((center - support + 0.5).floor(), lo)  # Pillow's xmin in the cropped image
    at = first + torch.arange(taps, dtype=torch.float64, device=where)  # (N, out_size, taps)
    d = (at - center + 0.5) * (1.0 / widen)
    weights = torch.where(bicubic.view(-1, 1, 1), _keys_cubic(d), _triangle(d)) * (at < hi)
    weights = (weights / weights.sum(2, keepdim=True)).to(torch.float32)
    matrix = torch.zeros(len(start), out_size, in_size, device=where)
    return matrix.scatter_add_(2, at.clamp(max=in_size - 1).long(), weights)  # taps past the box weigh 0


def resize_boxes(x: torch.Tensor, boxes: torch.Tensor, bicubic: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Each image's box (left, top, width, height in its pixels; (N, 4) float64 on the CPU) cropped and
    resized to `size` (height, width) as timm's crops are, by Pillow's `Image.crop(box).resize(size, BILINEAR,
    or BICUBIC where `bicubic`)` (a fractional box: the pixels it covers cropped, then `resize(box=)` within):
    separable, each output pixel a weighted sum of the input pixels under its filter, the filter widened when
    downscaling (antialiasing: the `grid_sample` the crop used before read 2 pixels wherever it landed).
    Across and then down, except where Pillow 13 goes down first: where the cropped height shrinks by more
    than twice what its width does (`_down_first`).

    uint8 images come back uint8: the first pass clipped to 0..255 as Pillow's is (bicubic overshoots at
    edges; unclipped, a value ended up to 16 levels from Pillow's), the result rounded half up. Pillow
    also rounds its first pass to 8 bits, which moves a value by under two thirds of a level (half a
    level times the taps' summed magnitude, at most 1.27), so every pixel is within a level of Pillow's.
    Float images are filtered without clipping or rounding. The weights are per-image (N, out, in)
    matrices made where the images are from one small copy of the boxes, applied as two batched matmuls
    in full fp32 (TF32 or oneDNN's bf16 would move the values by more than a level).
    """
    n, c, h, w = x.shape
    out_h, out_w = size
    taps_across = 2 * math.ceil(float(_support(boxes[:, 2], bicubic, out_w).max())) + 1  # CPU values: no device read
    taps_down = 2 * math.ceil(float(_support(boxes[:, 3], bicubic, out_h).max())) + 1
    down_first = _down_first(boxes, size, (h, w))
    left, top, width, height, cubic = to_device_together([*boxes.T, bicubic], x.device)
    eight_bit = x.dtype == torch.uint8
    dtype = torch.float32 if eight_bit else x.dtype
    across = _resize_matrix(left, width, cubic, w, out_w, taps_across).to(dtype)
    down = _resize_matrix(top, height, cubic, h, out_h, taps_down).to(dtype)
    if not down_first.any():
        out = _two_passes(x, across, down, dtype)
    elif down_first.all():
        out = _two_passes(x.transpose(2, 3), down, across, dtype).transpose(2, 3)
    else:  # each group in its order, put back in place
        down_at, across_at = to_device_together([down_first.nonzero()[:, 0], (~down_first).nonzero()[:, 0]], x.device)
        out = torch.empty(n, c, out_h, out_w, dtype=dtype, device=x.device)
        out[across_at] = _two_passes(x[across_at], across[across_at], down[across_at], dtype)
        out[down_at] = _two_passes(x[down_at].transpose(2, 3), down[down_at], across[down_at], dtype).transpose(2, 3)
    if not eight_bit:
        return out.contiguous()
    return out.add_(0.5).floor_().clamp_(0, 255).to(torch.uint8, memory_format=torch.contiguous_format)


def _down_first(boxes: torch.Tensor, size: tuple[int, int], image: tuple[int, int]) -> torch.Tensor:
    """Where Pillow 13 resizes down first (python-pillow/Pillow#9549): the crop's height shrinks, and by more than
    twice what its width does. In the cropped image's whole pixels, as timm's `crop(box).resize()` hands it over."""
    (out_h, out_w), (h, w) = size, image
    left, top, width, height = boxes.T
    cut_w = (left + width).ceil().clamp(max=w) - left.floor()
    cut_h = (top + height).ceil().clamp(max=h) - top.floor()
    return (out_h < cut_h) & (2 * (cut_w - out_w) < cut_h - out_h)


def _two_passes(x: torch.Tensor, across: torch.Tensor, down: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(N, C, out_h, out_w) in `dtype`: rows resized by `across`, then columns by `down`; the first pass
    clipped to 0..255 where the images are uint8."""
    n, c, h, w = x.shape
    out_h, out_w = down.shape[1], across.shape[1]
    # rows before channels, so that each pass is one matmul per image: (N, h * C, w) @ (N, w, out_w), then
    # (N, out_h, h) @ (N, h, C * out_w)
    rows = x.permute(0, 2, 1, 3).to(dtype, memory_format=torch.contiguous_format, copy=True).view(n, h * c, w)
    with strict_fp32():
        rows = torch.bmm(rows, across.transpose(1, 2)).view(n, h, c * out_w)
        if x.dtype == torch.uint8:
            rows = rows.clamp_(0, 255)
        return torch.bmm(down, rows).view(n, out_h, c, out_w).permute(0, 2, 1, 3)


def random_flip(x: torch.Tensor, generator: torch.Generator, p: float = 0.5) -> torch.Tensor:
    """Mirror each sample left-right with probability `p` (keep p=0 for digits: they are not symmetric)."""
    flip = to_device(torch.rand(x.shape[0], generator=generator) < p, x.device)
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)


def random_erasing(
    x: torch.Tensor,
    generator: torch.Generator,
    prob: float = 0.25,
    scale: tuple[float, float] = (0.02, 1 / 3),
    ratio: tuple[float, float] = (0.3, 1 / 0.3),  # timm's: max_aspect = 1 / min_aspect
    attempts: int = 10,
) -> torch.Tensor:
    """timm RandomErasing, 'pixel' mode: with probability `prob` per sample, fill one rectangle with
    N(0, 1) noise. Meant for the normalised tensor, where N(0, 1) matches the data's scale."""
    n, _, h, w = x.shape
    apply = torch.rand(n, generator=generator) < prob
    area = _uniform(n, scale[0], scale[1], generator, attempts) * (h * w)
    log_r = _uniform(n, math.log(ratio[0]), math.log(ratio[1]), generator, attempts)
    eh = torch.sqrt(area * torch.exp(log_r)).round()
    ew = torch.sqrt(area / torch.exp(log_r)).round()
    ok = (ew < w) & (eh < h) & (ew > 0) & (eh > 0)
    first = ok.float().argmax(1, keepdim=True)
    apply &= ok.any(1)
    eh, ew = eh.gather(1, first)[:, 0], ew.gather(1, first)[:, 0]
    u = torch.rand(n, 2, generator=generator, dtype=torch.float64)
    top, left = torch.floor(u[:, 0] * (h - eh + 1)), torch.floor(u[:, 1] * (w - ew + 1))
    noise = _randn_like(x, generator)
    # the boxes cross to the images' device in one copy, the (N, H, W) mask is built there
    top, left, eh, ew, apply = to_device_together([top, left, eh, ew, apply], x.device)
    rows = torch.arange(h, dtype=torch.float64, device=x.device).view(1, h, 1)
    cols = torch.arange(w, dtype=torch.float64, device=x.device).view(1, 1, w)
    inside = (
        (rows >= top.view(-1, 1, 1))
        & (rows < (top + eh).view(-1, 1, 1))
        & (cols >= left.view(-1, 1, 1))
        & (cols < (left + ew).view(-1, 1, 1))
    )
    mask = (inside & apply.view(-1, 1, 1)).unsqueeze(1)
    return torch.where(mask, noise, x)


def _randn_like(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """N(0, 1) noise shaped like x, reproducible from `generator`: drawn by it where it lives (the
    CPU path, unchanged), else on x's device by a generator there seeded with one draw from it, so a
    resumed run replays the same noise without drawing N*C*H*W values on the CPU and copying them."""
    if x.device == generator.device:
        return torch.randn(x.shape, generator=generator, dtype=x.dtype)
    local = torch.Generator(device=x.device)
    local.manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
    return torch.randn(x.shape, generator=local, device=x.device, dtype=x.dtype)


def smooth_targets(y: torch.Tensor, num_classes: int, label_smoothing: float = 0.0) -> torch.Tensor:
    """Soft targets from class indices (N,) or one-hot/soft rows (N, K): (1 - s) * y + s / K."""
    if y.dim() == 1:
        y = F.one_hot(y.long(), num_classes).float()
    return y.float() * (1.0 - label_smoothing) + label_smoothing / num_classes


def mixup_cutmix(
    x: torch.Tensor,
    y: torch.Tensor,
    generator: torch.Generator,
    num_classes: int,
    mixup_alpha: float = 0.8,
    cutmix_alpha: float = 1.0,
    prob: float = 1.0,
    switch_prob: float = 0.5,
    label_smoothing: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """timm's Mixup in batch mode: one lambda per batch, sample i mixed with sample N-1-i.

    With probability `prob` the batch is mixed, by CutMix with probability `switch_prob` when both
    alphas are > 0. Returns the mixed images and soft targets (rows sum to 1) with label smoothing;
    with both alphas 0 the images are unchanged and the targets are smoothed one-hot.
    """
    targets = smooth_targets(y, num_classes, label_smoothing)
    if mixup_alpha <= 0 and cutmix_alpha <= 0:
        return x, targets
    use_cutmix = cutmix_alpha > 0 and (mixup_alpha <= 0 or float(torch.rand(1, generator=generator)) < switch_prob)
    # torch's Beta sampler takes no generator; a numpy one seeded from ours keeps the draw reproducible
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    alpha = cutmix_alpha if use_cutmix else mixup_alpha
    lam = float(np.random.default_rng(seed).beta(alpha, alpha))
    if float(torch.rand(1, generator=generator)) >= prob:
        return x, targets
    x = x.clone()
    if use_cutmix:
        h, w = x.shape[-2:]
        cut = math.sqrt(1.0 - lam)
        cut_h, cut_w = int(h * cut), int(w * cut)
        cy = int(torch.randint(0, h, (1,), generator=generator))
        cx = int(torch.randint(0, w, (1,), generator=generator))
        y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, h)
        x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, w)
        x[:, :, y0:y1, x0:x1] = x.flip(0)[:, :, y0:y1, x0:x1]
        lam = 1.0 - (y1 - y0) * (x1 - x0) / (h * w)  # the area actually pasted
    else:
        x = x * lam + x.flip(0) * (1.0 - lam)
    return x, targets * lam + targets.flip(0) * (1.0 - lam)


@dataclass
class TrainAugment:
    """The training recipe as data, so it can be saved with a run and replayed.

    `flip_prob` is 0 for digits (`aug.flip`, resolved per data set in vitc.train.defaults): mirrored
    digits are other glyphs (or none), so flipping teaches the model wrong labels.
    """

    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_scale: tuple[float, float] = (0.35, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_prob: float = 0.5
    mixup_alpha: float = 0.8
    cutmix_alpha: float = 1.0
    mix_prob: float = 1.0
    switch_prob: float = 0.5
    label_smoothing: float = 0.1
    erase_prob: float = 0.25
    color_jitter: float = 0.0  # timm's --color-jitter
    auto_augment: dict[str, Any] | None = None  # timm's --aa, parsed: {"kind": "rand", "magnitude": 9, ...}
    crop_size: int | None = None  # batches of whole photos (their `sizes` given): the crops' side
    train_interpolation: str = "random"  # timm's --train-interpolation: the crop's and RandAugment's warps' filter

    def __post_init__(self) -> None:
        self.mean, self.std = tuple(self.mean), tuple(self.std)
        self.crop_scale, self.crop_ratio = tuple(self.crop_scale), tuple(self.crop_ratio)  # type: ignore[assignment]
        lo, hi = self.crop_scale
        if not (0 < lo <= hi <= 1):
            raise VitcError(f"crop scale must satisfy 0 < min <= max <= 1, got {self.crop_scale}")
        if not (0 < self.crop_ratio[0] <= self.crop_ratio[1]):
            raise VitcError(f"crop ratio must satisfy 0 < min <= max, got {self.crop_ratio}")
        for name in ("flip_prob", "mix_prob", "switch_prob", "erase_prob"):
            if not (0.0 <= getattr(self, name) <= 1.0):
                raise VitcError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.mixup_alpha < 0 or self.cutmix_alpha < 0:
            raise VitcError("mixup and cutmix alphas must be >= 0")
        if not (0.0 <= self.label_smoothing < 1.0):
            raise VitcError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.num_classes < 1:
            raise VitcError(f"num_classes must be >= 1, got {self.num_classes}")
        if not (0.0 <= self.color_jitter <= 1.0):
            raise VitcError(f"color_jitter must be in [0, 1], got {self.color_jitter}")
        if self.auto_augment is not None and self.auto_augment.get("kind") not in ("rand", "trivial"):
            raise VitcError(f"auto_augment must be RandAugment or TrivialAugment, got {self.auto_augment}")
        check_train_interpolation(self.train_interpolation)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def __call__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        generator: torch.Generator,
        device: torch.device | None = None,
        sizes: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 (N, C, H, W) and int labels -> augmented float images and (N, num_classes) soft targets,
        on `device` (default: the images'). The uint8 batch is copied there first (a quarter of the
        float bytes) and every step runs there; the random draws stay on the CPU generator. With
        `sizes`, the images are whole photos squashed to a square (`random_resized_crop`)."""
        device = images.device if device is None else device
        if sizes is not None and not self.crop_size:
            raise ValueError("whole photos (sizes) need crop_size, the side their crops are resized to")
        if sizes is not None or self._crops() or self.flip_prob > 0:  # (a streamed batch is cropped already)
            images = self._crop_and_flip(to_device(images, device), generator, sizes)  # 8-bit, as Pillow's crops
        if self.color_jitter or self.auto_augment:  # as timm: on the crop
            x = self._colour(images, generator, device)
        else:
            x = normalize(to_device(images, device), self.mean, self.std)
        if self.erase_prob > 0:
            x = random_erasing(x, generator, self.erase_prob)
        x, targets = mixup_cutmix(
            x,
            labels,
            generator,
            self.num_classes,
            self.mixup_alpha,
            self.cutmix_alpha,
            self.mix_prob,
            self.switch_prob,
            self.label_smoothing,
        )
        return x, to_device(targets, device)  # (N, classes) built on the CPU: a small copy

    def _crop_and_flip(self, x: torch.Tensor, generator: torch.Generator, sizes: torch.Tensor | None) -> torch.Tensor:
        if sizes is not None or self._crops():
            scale, ratio, size = self.crop_scale, self.crop_ratio, self.crop_size
            x = random_resized_crop(
                x, generator, scale, ratio, sizes=sizes, out_size=size, interpolation=self.train_interpolation
            )
        return random_flip(x, generator, self.flip_prob) if self.flip_prob > 0 else x

    def _crops(self) -> bool:
        return self.crop_scale != (1.0, 1.0) or self.crop_ratio != (1.0, 1.0)

    def _colour(self, images: torch.Tensor, generator: torch.Generator, device: torch.device) -> torch.Tensor:
        """Colour jitter or RandAugment/TrivialAugment on the cropped 8-bit images in [0, 1], then
        normalised: torchvision applies them before its tensor conversion, on 8-bit images.
        Drawn on the CPU first; off the CPU, the draws and constants cross in one small copy."""
        from vitc.data import autoaugment

        c = images.shape[1]
        rounds = autoaugment.draw_color_jitter(images.shape[0], generator, self.color_jitter)
        if self.auto_augment:
            args = {k: v for k, v in self.auto_augment.items() if k != "kind"}
            if self.auto_augment["kind"] == "trivial":
                rounds += autoaugment.draw_trivial_augment(images.shape, generator)
            else:
                filters = self.train_interpolation  # timm pins the warps' filter to a fixed train interpolation
                rounds += autoaugment.draw_rand_augment(images.shape, generator, **args, interpolation=filters)
        fixed = [autoaugment.fill_value(self.mean, c), _stats(self.mean, c, "mean"), _stats(self.std, c, "std")]
        masked = not SUB_BATCHES.get(device.type, False)
        if masked:
            moved = iter(to_device_together([t for r in rounds for t in r.tensors()] + fixed, device))
            rounds = [r.on(*[next(moved) for _ in r.tensors()]) for r in rounds]
            fixed = list(moved)
            images = images if images.device == device else to_device(images, device)  # cropped there already
        fill, mean, std = fixed
        x = (autoaugment.apply(images.float().div_(255.0), rounds, fill, masked) - mean) / std
        return x if masked else to_device(x, device)
