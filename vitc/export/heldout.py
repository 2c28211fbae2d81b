"""The held-out set an export measures its drift on: the test split of the model's data, or generated inputs
without labels where no data of the model's classes is at hand (agreement-only drift)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vitc._text import few_names
from vitc.artifacts.preprocess import Preprocess
from vitc.errors import VitcError

HELDOUT_MAX = 2000  # images of the held-out split used for drift (all of digits' 360)
GENERATED = "generated"  # --data generated: agreement-only drift on generated inputs, no labels
GENERATED_IMAGES = (16, 256)  # at least, at most; within GENERATED_BYTES of float32 images
GENERATED_BYTES = 64 << 20


@dataclass
class Held:
    """The held-out images an export measures its drift on."""

    pixels: np.ndarray  # uint8 N×C×H×W
    labels: np.ndarray | None  # None: generated inputs
    name: str  # the data's name, or GENERATED
    split: str | None = None  # the split read (vitc.data.files.WHOLE: a whole folder; None: generated)
    skipped: Sequence[str] = ()  # why each unreadable file was left out


def heldout_set(
    meta: Any,
    prep: Preprocess,
    name: str,
    data_dir: str | None,
    max_images: int | None = None,
    named: bool = True,
) -> Held:
    """The test split of `name` (see checkpoint.training_data; an image folder without test/ gives its
    val/, class folders without splits all of them, as `vitc eval` reads them), or generated inputs without
    labels for `--data generated`, or when the data was not `named` by the user and its classes are not the
    model's (an imported ImageNet model: no local data has its classes). The held-out file stores the
    pixels; every reader normalises them with `normalized`. At most `max_images` (HELDOUT_MAX, read at the
    call) are kept, stratified over the classes."""
    from vitc.quant.calib import load_split

    if name == GENERATED:
        return Held(generated_pixels(prep), None, GENERATED)
    ds = load_split(
        name, "test", prep, data_dir, meta.class_names, most=HELDOUT_MAX if max_images is None else max_images
    )  # labelled as the model's head
    classes = model_classes(meta)
    other = classes is not None and len(ds.class_names) != classes
    if other or (meta.class_names is not None and set(ds.class_names) != set(meta.class_names)):
        if not named:
            return Held(generated_pixels(prep), None, GENERATED)
        theirs = (
            f"has {len(ds.class_names)} classes and the model {classes}"
            if other
            else f"names other classes ({few_names(ds.class_names)}) than the model ({few_names(meta.class_names)})"
        )
        raise VitcError(
            f"{name} {theirs}, so drift on it would mean nothing: name the model's own data with --data and "
            f"--data-dir, or --data {GENERATED} for agreement-only drift on generated inputs"
        )
    return Held(ds.images.numpy(), ds.labels.numpy().astype(np.int64), name, ds.split, ds.skipped)


def run_trained_on(ckpt: Path, meta: Any, folder: Path) -> bool:
    """Whether `folder` is the train/ split of the run's own image folder: read whole, as a folder without
    splits is, it would be a held-out set of the images the model learnt."""
    from vitc.checkpoint import training_data

    try:
        name, own = training_data(ckpt, meta)
    except VitcError:  # not a run of this machine: its training folder is not known
        return False
    return name == "imagefolder" and own is not None and (Path(own) / "train").resolve() == folder.resolve()


def model_classes(meta: Any) -> int | None:
    """How many classes a checkpoint's head has: its names' count, else its config's."""
    return len(meta.class_names) if meta.class_names is not None else meta.cfg.num_classes


def generated_pixels(prep: Preprocess, seed: int = 0) -> np.ndarray:
    """Seeded uniform random uint8 pixels: what Polygraphy feeds when comparing runners without data. As
    many as fit GENERATED_BYTES once normalised to float32, within GENERATED_IMAGES."""
    c, h, w = prep.input_size
    low, high = GENERATED_IMAGES
    count = max(low, min(high, GENERATED_BYTES // (4 * c * h * w)))
    return np.random.default_rng(seed).integers(0, 256, (count, c, h, w), dtype=np.uint8)
