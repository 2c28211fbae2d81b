"""Decoding an image file into the model's pixels, defined once for every stage and the runtime.

Training, `vitc eval`, `vitc export`'s calibration and held-out sets, `vitc.preprocess` and
`vitc predict` on an engine all read a file the same way: upright by its EXIF orientation, RGB, the
shorter side resized (bicubic; crop_mode "squash": both sides) and the centre cropped (timm's
evaluation transform). numpy and
Pillow only, no torch: a Jetson classifies with a TensorRT plan through this module.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from vitc._lazy import lazy_import
from vitc.artifacts.preprocess import DEFAULT_CROP_MODE, Preprocess, normalized
from vitc.errors import VitcError
from vitc.limits import MAX_ASPECT, MAX_IMAGE_PIXELS

LUMA = (0.299, 0.587, 0.114)  # ITU-R 601, as Pillow's "L"


def read_image(path: Path, short: int, size: int, crop_mode: str = DEFAULT_CROP_MODE) -> np.ndarray:
    """Decode any Pillow-readable image to RGB, resize its shorter side to `short`, center crop `size`
    (`center_crop`); a file that fails (also late, in the resize of a truncated file) is a one-line VitcError."""
    try:
        return center_crop(open_image(path), short, size, crop_mode)
    except (OSError, ValueError, SyntaxError) as exc:
        raise VitcError(f"cannot read image {path}: {exc}") from exc


def read_whole(path: Path, side: int) -> tuple[np.ndarray, tuple[int, int]]:
    """The whole image squashed to `side` x `side` (bicubic), uint8 CHW, and its (height, width) as
    decoded: training's random-resized crops are drawn in the image's own proportions and cut from this
    copy (an in-memory image folder; `vitc.data.transforms.random_resized_crop`'s `sizes`), as timm cuts
    them from the whole photo, where the evaluation's centre crop would lose its borders."""
    pil = lazy_import("PIL.Image")
    try:
        im = open_image(path, draft_short=side)
        width, height = im.size
        squashed = im.resize((side, side), pil.Resampling.BICUBIC)
        return np.asarray(squashed, dtype=np.uint8).transpose(2, 0, 1), (height, width)
    except (OSError, ValueError, SyntaxError) as exc:
        raise VitcError(f"cannot read image {path}: {exc}") from exc


def center_crop(im: Any, short: int, size: int, crop_mode: str = DEFAULT_CROP_MODE) -> np.ndarray:
    """The evaluation transform: shorter side to `short` (bicubic), centre `size` x `size`, uint8 CHW. With
    crop_mode "squash" both sides go to `short`, the aspect not kept (timm's squash; Hugging Face's
    ConvNeXT processor from 384 up): at crop_pct 1 (`short` == `size`) the whole image, nothing cropped."""
    pil = lazy_import("PIL.Image")
    w, h = im.size
    if crop_mode == "squash":
        nw, nh = short, short
    else:  # torchvision's Resize(short), which timm's transform and Hugging Face's processors use: the
        long = int(short * max(w, h) / min(w, h))  # longer side floored, not rounded
        nw, nh = (short, long) if w <= h else (long, short)
    im = im.resize((nw, nh), pil.Resampling.BICUBIC)
    left, top = round((nw - size) / 2), round((nh - size) / 2)
    im = im.crop((left, top, left + size, top + size))
    return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)


def open_image(path: Path | str, draft_short: int | None = None) -> Any:
    """The image at `path` as upright RGB, decoded whole, as timm's evaluation reads it: a path, a PIL image and
    an array of the same photo give the same input. With `draft_short` (training's crops, where decoding is the
    feed's cost), a JPEG at least twice that on its shorter side is decoded at 1/2, 1/4 or 1/8 scale (Pillow's
    draft mode: the DCT does the downscaling, several times faster), the shorter side still >= `draft_short`.
    Unreadable, truncated or oversized files raise a one-line VitcError."""
    pil = lazy_import("PIL.Image")
    path = Path(path)
    if path.stat().st_size == 0:
        raise VitcError(f"image {path} is empty (0 bytes)")
    try:
        with pil.open(path) as im:
            w, h = im.size
            check_image_size(path, w, h)  # from the header, before anything is decoded
            if draft_short is not None and im.format == "JPEG" and min(w, h) >= 2 * draft_short:
                s = draft_short / min(w, h)
                im.draft("RGB", (math.ceil(w * s), math.ceil(h * s)))
            im.load()
            return upright_rgb(im)
    except VitcError:
        raise
    except (OSError, ValueError, SyntaxError, pil.DecompressionBombError) as exc:
        raise VitcError(f"cannot read image {path}: {exc}") from exc


def check_image_size(path: Path, width: int, height: int) -> None:
    """Decompression bombs and slivers: a 1×1,000,000 PNG is 1 MP but 224 × 224,000,000 once resized."""
    if width * height > MAX_IMAGE_PIXELS:
        raise VitcError(f"image {path} is {width}×{height} pixels, over {MAX_IMAGE_PIXELS:,} (a decompression bomb?)")
    if max(width, height) > MAX_ASPECT * max(1, min(width, height)):
        raise VitcError(f"image {path} is {width}×{height} pixels, longer than {MAX_ASPECT}:1; crop it first")


def upright_rgb(im: Any) -> Any:
    """What every decoded image goes through, for training, evaluation, export and `vitc.preprocess`
    alike: turned upright by its EXIF orientation (as a phone's photo is shown), then RGB."""
    return _to_rgb(lazy_import("PIL.ImageOps").exif_transpose(im) or im)


def _to_rgb(im: Any) -> Any:
    """RGB for every mode: 16/32-bit integer images are scaled from 0..65535, float from 0..1 or 0..255,
    and transparent images are composited on white (dropping alpha would expose arbitrary colours)."""
    pil = lazy_import("PIL.Image")
    mode = im.mode
    if mode.startswith("I") or mode == "F":
        a = np.asarray(im).astype(np.float64)
        scale = 255.0 / 65535.0 if mode != "F" else (255.0 if a.size and np.nanmax(a) <= 1.0 else 1.0)
        a = a * scale
        a = np.nan_to_num(a).round().clip(0, 255).astype(np.uint8)
        return pil.fromarray(a, mode="L").convert("RGB")
    if mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        bg = pil.new("RGBA", rgba.size, (255, 255, 255, 255))
        return pil.alpha_composite(bg, rgba).convert("RGB")
    return im.convert("RGB") if mode != "RGB" else im


def to_channels(images: np.ndarray, in_chans: int) -> np.ndarray:
    """uint8 (N, C, H, W) with the model's channels: grey replicated to RGB, or RGB reduced to luma."""
    channels = images.shape[1]
    if channels == in_chans:
        return images
    if in_chans not in (1, 3):
        raise VitcError(f"vitc reads images as grey (1 channel) or RGB (3); this model takes {in_chans} channels")
    if channels == 1:
        return np.ascontiguousarray(np.broadcast_to(images, (images.shape[0], in_chans, *images.shape[2:])))
    weights = np.asarray(LUMA, dtype=np.float32).reshape(1, 3, 1, 1)
    luma = (images.astype(np.float32) * weights).sum(1, keepdims=True)
    return np.clip(np.round(luma), 0, 255).astype(np.uint8)


IMAGE_TAKEN = "an image (a path, a PIL image, or a uint8 (H, W) or (H, W, C) array)"


def as_pil(image: Any) -> Any:
    """A PIL image from a PIL image or a uint8 array (H, W) or (H, W, 1|3|4)."""
    pil = lazy_import("PIL.Image")
    if isinstance(image, pil.Image):
        return image
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
            raise VitcError(f"an image array must be uint8 (H, W) or (H, W, 1|3|4), got {image.dtype} {image.shape}")
        return pil.fromarray(image[..., 0] if image.ndim == 3 and image.shape[2] == 1 else image)
    raise VitcError(f"expected {IMAGE_TAKEN}; got {type(image).__name__}")


def decoded(image: Any) -> Any:
    """An upright RGB PIL image from a path (decoded whole, as the evaluation reads it), a PIL image or a uint8
    array. One-line errors."""
    if isinstance(image, (str, os.PathLike)):
        if not Path(image).is_file():
            raise VitcError(f"{image}: no such image file")
        return open_image(Path(image))
    return upright_rgb(as_pil(image))


# what `vitc.predict`, `vitc.preprocess` and `Classifier` take
IMAGES_TAKEN = f"{IMAGE_TAKEN}, a list, tuple or iterator of them, or a uint8 (N, H, W, C) array"
BATCHES = (list, tuple, Iterator)  # a batch of images (an iterator: a generator, Path.glob's files), as a 4-D array


def is_one_image(images: Any) -> bool:
    """One image, not a batch: anything but a list, a tuple, an iterator or a 4-D array (frames stacked). `vitc.predict`
    and `Classifier` give one prediction for one image (a camera loop's frame) and a list for a batch."""
    return not isinstance(images, BATCHES) and not (isinstance(images, np.ndarray) and images.ndim == 4)


def image_list(images: Any) -> list[Any]:
    """The images given, one (`is_one_image`) or a batch, as a list; anything else (a number, a dict, a
    float array) is one line saying what is taken, not a str read as its characters or an array's truth."""
    if isinstance(images, BATCHES):
        return list(images)
    if isinstance(images, np.ndarray):
        if images.dtype == np.uint8 and images.ndim in (2, 3, 4):
            return list(images) if images.ndim == 4 else [images]
        got = f"a {images.dtype} array of shape {images.shape}"
    elif isinstance(images, (str, os.PathLike, lazy_import("PIL.Image").Image)):
        return [images]
    else:
        got = type(images).__name__
    raise VitcError(f"expected {IMAGES_TAKEN}; got {got}")


def prepare(images: Any, prep: Preprocess) -> np.ndarray:
    """float32 (N, C, H, W) model input from one image or a batch (`image_list`: paths, PIL images or uint8
    arrays): shorter side (or both, by crop_mode) to size / crop_pct (bicubic), centre crop, the model's
    channels, (x / 255 - mean) / std. The input of `vitc.preprocess` (a checkpoint) and of `vitc predict`
    on an engine alike."""
    images = image_list(images)
    if not images:
        raise VitcError("no images given")
    channels, height, width = prep.input_size
    if height != width:
        raise VitcError(f"the model takes {height}×{width} inputs; vitc prepares square inputs only")
    short = prep.resize_shorter_side
    crops = [center_crop(decoded(image), short, height, prep.crop_mode) for image in images]
    return normalized(to_channels(np.stack(crops), channels), prep.mean, prep.std)
