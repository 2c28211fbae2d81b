"""The evaluation preprocessing, defined once: what every stage does to an image before the model sees it.

As timm's `resolve_data_config` does, each setting is resolved once, first from explicit arguments,
then from the checkpoint's model config, then from the model's registered defaults, and the result
travels as one `Preprocess`: training's evaluation split, streaming, `vitc export` (held-out set,
calibration, the manifest's `preprocess` record) and the Python API all resize with `eval_resize`, by
its `crop_mode` (timm's: "center" keeps the aspect, "squash" does not; `vitc.data.images.center_crop`).
No torch, no PIL: the runtime reads the manifest record and normalises pixels with numpy only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from vitc.errors import VitcError
from vitc.limits import MAX_IMG_SIZE

DEFAULT_CROP_PCT = 0.875  # timm's, and ModelCfg's: what a config that does not say gets
DEFAULT_INTERPOLATION = "bicubic"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CROP_MODES = ("center", "squash")  # timm's pretrained_cfg crop_mode (its "border" pads, which vitc does not)
DEFAULT_CROP_MODE = "center"
KEYS = ("input_size", "crop_pct", "crop_mode", "interpolation", "mean", "std")


def eval_resize(size: int, crop_pct: float) -> int:
    """The shorter side an image is resized to before the centre crop of `size`: size / crop_pct (crop_mode
    "squash": both sides, its aspect not kept; with crop_pct 1 the crop then keeps the whole image).

    crop_pct is in (0, 1] (1: no margin); a crop larger than the resized image would have to be padded,
    which no stage of vitc does, so crop_pct > 1 is refused where a config is resolved."""
    check_crop_pct(crop_pct)
    short = round(size / crop_pct)
    if short > MAX_IMG_SIZE:  # a tiny crop_pct: every image resized to a size no reader could hold
        raise VitcError(
            f"crop_pct {crop_pct:g} resizes images to {short:,} pixels for a {size} crop, over {MAX_IMG_SIZE:,}"
        )
    return short


def check_crop_pct(crop_pct: Any, source: str = "crop_pct") -> float:
    if isinstance(crop_pct, bool) or not isinstance(crop_pct, (int, float)) or not 0.0 < crop_pct <= 1.0:
        raise VitcError(f"{source} must be in (0, 1], got {crop_pct!r}")
    return float(crop_pct)


def check_crop_mode(crop_mode: Any, source: str = "crop_mode") -> str:
    if crop_mode not in CROP_MODES:
        raise VitcError(f"{source} must be one of {', '.join(CROP_MODES)}, got {str(crop_mode)[:40]!r}")
    return str(crop_mode)


def check_norm(values: Any, channels: int, what: str, positive: bool = False) -> Tuple[float, ...]:
    """A mean or std (`positive`: above 0) for images of `channels` channels: finite numbers, one per channel or
    one for all (repeated to each, as timm's loader takes a single value); else a one-line error naming `what`."""
    numbers = isinstance(values, (list, tuple)) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values
    )
    if not numbers or len(values) not in (1, channels):
        count = "1 value" if channels == 1 else f"1 or {channels} values"
        raise VitcError(f"{what} must be a list of {count} (finite numbers), got {str(values)[:60]}")
    if positive and any(v <= 0 for v in values):
        raise VitcError(f"{what} must be above 0, got {list(values)}")
    return tuple(values) * (channels if len(values) == 1 else 1)


def format_version(record: Optional[Mapping[str, Any]], version: int, squash_version: int) -> int:
    """The version an artifact holding this preprocess (or model config) record is written with: `version`, or
    `squash_version` when it squashes, which a vitc older than crop_mode would centre-crop instead: its
    version check then says "upgrade vitc". A record that centre-crops keeps the version every vitc reads."""
    squashes = record is not None and record.get("crop_mode", DEFAULT_CROP_MODE) != DEFAULT_CROP_MODE
    return max(version, squash_version) if squashes else version


@dataclass(frozen=True)
class Preprocess:
    """Input size, resize rule, interpolation and normalisation of a model's evaluation transform."""

    input_size: Tuple[int, int, int]
    crop_pct: float = DEFAULT_CROP_PCT
    interpolation: str = DEFAULT_INTERPOLATION
    mean: Tuple[float, ...] = IMAGENET_MEAN
    std: Tuple[float, ...] = IMAGENET_STD
    crop_mode: str = DEFAULT_CROP_MODE

    @property
    def resize_shorter_side(self) -> int:
        return eval_resize(min(self.input_size[1:]), self.crop_pct)

    def to_record(self) -> Dict[str, Any]:
        """What on-device code must do to an image before it is fed (timm's eval transform, spelled out):
        the export manifest's and the `vitc compile --out` program's `preprocess` record. crop_mode is
        written when it squashes (both sides resized to `resize_shorter_side`): a centre crop's record is
        the one every vitc wrote and reads."""
        channels, height, width = self.input_size
        squash = {} if self.crop_mode == DEFAULT_CROP_MODE else {"crop_mode": self.crop_mode}
        return {
            "resize_shorter_side": self.resize_shorter_side,
            "center_crop": [height, width],
            **squash,
            "crop_pct": self.crop_pct,
            "interpolation": self.interpolation,
            "channel_order": "RGB" if channels == 3 else "L",
            "layout": "NCHW",
            "scale": 1 / 255,  # uint8 pixels to [0, 1] before (x - mean) / std
            "mean": list(self.mean),
            "std": list(self.std),
        }

    @classmethod
    def from_record(cls, record: Any, source: str = "preprocess") -> Preprocess:
        """The reader of `to_record`: an export manifest's or an engine sidecar's `preprocess`, which
        `vitc predict` prepares an engine's images by. Anything it could not honour is refused."""
        try:
            height, width = (int(v) for v in record["center_crop"])
            prep = cls(
                input_size=({"RGB": 3, "L": 1}[record["channel_order"]], height, width),
                crop_pct=check_crop_pct(record["crop_pct"], f"{source}: crop_pct"),
                interpolation=str(record.get("interpolation", DEFAULT_INTERPOLATION)),
                mean=tuple(float(v) for v in record["mean"]),
                std=tuple(float(v) for v in record["std"]),
                crop_mode=check_crop_mode(record.get("crop_mode", DEFAULT_CROP_MODE), f"{source}: crop_mode"),
            )
            layout, scale, short = (
                record.get("layout", "NCHW"),
                float(record.get("scale", 1 / 255)),
                record.get("resize_shorter_side"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise VitcError(f"{source}: malformed preprocess record ({type(exc).__name__}: {exc})") from None
        if layout != "NCHW" or abs(scale - 1 / 255) > 1e-12 or short not in (None, prep.resize_shorter_side):
            raise VitcError(
                f"{source}: a preprocess record vitc did not write (layout {layout}, scale {scale}, resize {short})"
            )
        return prep


def resolve_preprocess(
    args: Optional[Mapping[str, Any]] = None,
    checkpoint: Optional[Mapping[str, Any]] = None,
    model: Optional[Mapping[str, Any]] = None,
    source: str = "preprocessing",
) -> Preprocess:
    """Each of `KEYS` from the first of `args` (explicit options; None values are not given), the
    checkpoint's cfg and the model's registered cfg that has it; crop_pct, crop_mode and interpolation
    fall back to timm's defaults, input_size/mean/std must be found."""
    found: Dict[str, Any] = {}
    for key in KEYS:
        for layer in (args, checkpoint, model):
            if layer is not None and layer.get(key) is not None:
                found[key] = layer[key]
                break
    missing = [key for key in ("input_size", "mean", "std") if key not in found]
    if missing:
        raise VitcError(f"{source}: no {', '.join(missing)} in the options, the checkpoint or the model's config")
    size = found["input_size"]
    if not (len(size) == 3 and all(isinstance(v, int) and v > 0 for v in size)):
        raise VitcError(f"{source}: input_size must be [C, H, W], got {size!r}")
    prep = Preprocess(
        input_size=(size[0], size[1], size[2]),
        crop_pct=check_crop_pct(found.get("crop_pct", DEFAULT_CROP_PCT), f"{source}: crop_pct"),
        interpolation=str(found.get("interpolation", DEFAULT_INTERPOLATION)),
        mean=check_norm(found["mean"], size[0], f"{source}: mean"),
        std=check_norm(found["std"], size[0], f"{source}: std", positive=True),
        crop_mode=check_crop_mode(found.get("crop_mode", DEFAULT_CROP_MODE), f"{source}: crop_mode"),
    )
    try:  # a tiny crop_pct would resize every image to a size no reader could hold
        prep.resize_shorter_side  # noqa: B018
    except VitcError as exc:
        raise VitcError(f"{source}: {exc}") from None
    return prep


def normalized(images: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """uint8 (N, C, H, W) -> float32 (x / 255 - mean) / std per channel: vitc.data.transforms.normalize's
    arithmetic in numpy, operation for operation, so both give the same bits (tests/engines/test_classify.py):
    the input of `vitc.data.images.prepare` and of an export's held-out set."""
    channels = images.shape[1]
    x = images.astype(np.float32)
    x /= np.float32(255.0)  # in place: the same operations, one float copy of the images instead of three
    x -= _per_channel(mean, channels, "mean")
    x /= _per_channel(std, channels, "std")
    return x


def _per_channel(values: Sequence[float], channels: int, what: str) -> np.ndarray:
    flat = np.asarray(values, dtype=np.float32).reshape(-1)
    if flat.size not in (1, channels):
        raise VitcError(f"{what} has {flat.size} values but the images have {channels} channels")
    return np.broadcast_to(flat, (channels,)).reshape(1, channels, 1, 1)
