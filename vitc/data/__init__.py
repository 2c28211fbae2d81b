"""Data for `vitc train`: in-memory uint8 datasets, seeded batching and batch augmentation."""

from vitc.data.datasets import (
    DATASETS,
    SPLITS,
    ImageSet,
    batches,
    load_dataset,
    make_generator,
    shard,
    stratified_subset,
)
from vitc.data.transforms import (
    TrainAugment,
    eval_transform,
    mixup_cutmix,
    normalize,
    random_erasing,
    random_flip,
    random_resized_crop,
    smooth_targets,
)

__all__ = [
    "DATASETS",
    "SPLITS",
    "ImageSet",
    "TrainAugment",
    "batches",
    "eval_transform",
    "load_dataset",
    "make_generator",
    "mixup_cutmix",
    "normalize",
    "random_erasing",
    "random_flip",
    "random_resized_crop",
    "shard",
    "smooth_targets",
    "stratified_subset",
]
