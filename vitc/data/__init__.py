"""Data for `vitc train`: in-memory uint8 datasets, seeded batching and batch augmentation.

The names below load lazily (PEP 562): `vitc.data.files`, which the CLI uses to check a data
folder before anything heavy is imported, must not pull in torch through this package.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "vitc.data.datasets": ("DATASETS", "ImageSet", "load_dataset", "stratified_subset"),
    "vitc.data.files": ("SPLITS",),
    "vitc.data.sampling": ("batches", "make_generator", "shard"),
    "vitc.data.transforms": (
        "TrainAugment", "eval_transform", "mixup_cutmix", "normalize", "random_erasing", "random_flip",
        "random_resized_crop", "smooth_targets",
    ),
}  # fmt: skip
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
# timm's --train-interpolation, the filter of training's random-resized crops and RandAugment's warps ("random": one
# of the two at random): here rather than in transforms.py, so that vitc.train.config checks aug.train_interpolation
# before torch is imported
TRAIN_INTERPOLATIONS = ("random", "bilinear", "bicubic")

__all__ = sorted([*_WHERE, "TRAIN_INTERPOLATIONS"])


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'vitc.data' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
