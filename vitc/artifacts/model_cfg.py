"""The model's description (`ModelCfg`): input size, classes, normalisation and evaluation transform.

The registry gives each model one (`vitc.models.model_cfg`); a checkpoint stores it under "cfg" and
every later step (export, eval, compile, info, the Python API) reads it back typed. Its writer
(`to_record`) and reader (`parse_model_cfg`) sit side by side here, without torch, so that
`vitc info` reads a checkpoint's description on the runtime path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Dict, Mapping, Tuple

from vitc.artifacts.preprocess import (
    DEFAULT_CROP_MODE,
    DEFAULT_CROP_PCT,
    DEFAULT_INTERPOLATION,
    IMAGENET_MEAN,
    IMAGENET_STD,
    KEYS,
    Preprocess,
    check_crop_mode,
    check_crop_pct,
)
from vitc.limits import MAX_IMG_SIZE

REQUIRED = ("input_size", "mean", "std")  # what every later step feeds the model with: no silent default
IMAGENET_CLASSES = 1000  # ImageNet-1k's: the head of a model registered as its reference weights were trained


# timm's pooling arguments: recorded only away from their defaults (a class-token model's checkpoint stays one
# every vitc reads), and a checkpoint that records one needs a vitc that has them (checkpoint version 2)
POOLING_ARGS = ("global_pool", "fc_norm")


@dataclass(frozen=True)
class ModelCfg:
    """What a later step needs to feed the model: input size, normalisation, classes."""

    family: str
    input_size: Tuple[int, int, int] = (3, 224, 224)
    num_classes: int = IMAGENET_CLASSES
    mean: Tuple[float, ...] = IMAGENET_MEAN
    std: Tuple[float, ...] = IMAGENET_STD
    crop_pct: float = DEFAULT_CROP_PCT
    crop_mode: str = DEFAULT_CROP_MODE
    interpolation: str = DEFAULT_INTERPOLATION
    notes: str = ""

    @property
    def preprocess(self) -> Preprocess:
        """The evaluation transform this config describes."""
        return Preprocess(self.input_size, self.crop_pct, self.interpolation, self.mean, self.std, self.crop_mode)

    def evaluated_by(self, prep: Preprocess) -> ModelCfg:
        """This config with `prep`'s evaluation transform (one resolved by `resolve_preprocess`)."""
        return replace(self, **{key: getattr(prep, key) for key in KEYS})

    def to_record(self) -> Dict[str, Any]:
        """The JSON record a checkpoint stores (tuples as lists), read back by `parse_model_cfg`; crop_mode only
        when it squashes, so a centre crop's record is the one every vitc wrote (and a checkpoint reads back
        byte for byte)."""
        record = {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}
        if self.crop_mode == DEFAULT_CROP_MODE:
            del record["crop_mode"]
        return record


def parse_model_cfg(record: Mapping[str, Any]) -> ModelCfg:
    """A checkpoint's "cfg" record as a `ModelCfg`; ValueError/TypeError for a malformed one.

    input_size, mean and std must be there; a key a hand-written record leaves out gets ModelCfg's
    default (every checkpoint vitc has written holds all of them); keys it does not know are ignored.
    The values feed allocations and normalisation: [C, H, W] within limits, finite mean/std, std > 0."""
    if not isinstance(record, Mapping):
        raise TypeError(f"cfg must be an object, got {type(record).__name__}")
    missing = [key for key in REQUIRED if record.get(key) is None]
    if missing:
        raise ValueError(f"the cfg lacks {', '.join(missing)}: not written by vitc train or import")
    size = record["input_size"]
    if not (isinstance(size, list) and len(size) == 3 and all(type(v) is int for v in size)):
        raise ValueError(f"input_size must be [C, H, W], got {str(size)[:40]}")
    if not (1 <= size[0] <= 16 and all(1 <= v <= MAX_IMG_SIZE for v in size[1:])):
        raise ValueError(f"input_size {size} is outside 1..16 channels and 1..{MAX_IMG_SIZE} pixels")
    for key in ("mean", "std"):
        values = record[key]
        if not (isinstance(values, list) and all(type(v) in (int, float) and math.isfinite(v) for v in values)):
            raise ValueError(f"{key} must be a list of finite numbers")
        if len(values) != size[0]:
            raise ValueError(f"{key} has {len(values)} values for {size[0]} channels")
    if any(v <= 0 for v in record["std"]):
        raise ValueError("std must be positive")
    classes = record.get("num_classes", ModelCfg.num_classes)
    if type(classes) is not int or classes < 0:
        raise ValueError(f"num_classes must be a count, got {str(classes)[:40]}")
    return ModelCfg(
        family=_text(record, "family", ""),
        input_size=(size[0], size[1], size[2]),
        num_classes=classes,
        mean=tuple(record["mean"]),
        std=tuple(record["std"]),
        crop_pct=check_crop_pct(record.get("crop_pct", DEFAULT_CROP_PCT)),
        crop_mode=check_crop_mode(record.get("crop_mode", DEFAULT_CROP_MODE)),  # a checkpoint older than it: center
        interpolation=_text(record, "interpolation", DEFAULT_INTERPOLATION),
        notes=_text(record, "notes", ""),
    )


def _text(record: Mapping[str, Any], key: str, default: str) -> str:
    value = record.get(key, default)
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a string, got {str(value)[:40]}")
    return value
