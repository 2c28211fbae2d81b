"""Calibration images for INT8: a seeded sample of a training split, normalised, with its hash."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vitc.artifacts.preprocess import Preprocess
from vitc.errors import VitcError

CALIB_METHODS = ("minmax", "entropy", "percentile")


@dataclass
class CalibrationSet:
    images: np.ndarray  # float32 (N, C, H, W), normalised
    source: str  # data set name
    sha256: str  # of the uint8 images calibrated on (after trimming to whole batches), in order
    skipped: list[str] = field(default_factory=list)  # why each unreadable file was left out
    drawn: int | None = None  # images read before trimming to whole batches (None: as many as `images`)

    def to_dict(self, method: str) -> dict[str, Any]:
        record = {"method": method, "images": len(self.images), "data": self.source, "data_sha256": self.sha256}
        return {**record, "skipped": self.skipped} if self.skipped else record

    def batches(self, size: int) -> Iterator[np.ndarray]:
        for start in range(0, len(self.images), size):
            yield self.images[start : start + size]


def check_images(images: np.ndarray, input_size: Sequence[int]) -> None:
    """A calibration set must be non-empty and of the model's (C, H, W)."""
    if images.ndim != 4 or len(images) == 0:
        raise VitcError(f"the calibration set is empty or not (N, C, H, W): shape {tuple(images.shape)}")
    if tuple(images.shape[1:]) != tuple(input_size):
        raise VitcError(f"calibration images are {tuple(images.shape[1:])}, the model takes {tuple(input_size)}")


def unfilled_batch(images: str, batch: int) -> str:
    """A static-batch graph calibrates on whole batches: what to change when the images do not fill one."""
    return (
        f"{images} calibration images do not fill one batch of {batch} (a static-batch graph calibrates on "
        f"whole batches): calibrate on at least {batch} images, or export a smaller --batch"
    )


def _finish(raw: Any, prep: Preprocess, source: str, skipped: list[str], whole_batches: int | None) -> CalibrationSet:
    """The uint8 (N, C, H, W) pixels drawn (a tensor), checked, trimmed to whole batches of `whole_batches`
    (a static-batch graph calibrates on whole batches) and only then hashed, so the recorded hash is of
    exactly the images calibrated on; normalised as evaluation normalises them."""
    check_images(raw.numpy(), prep.input_size)
    drawn = len(raw)
    if whole_batches:
        if drawn < whole_batches:
            unread = f" ({len(skipped)} unreadable skipped)" if skipped else ""
            raise VitcError(unfilled_batch(str(drawn), whole_batches) + unread)
        raw = raw[: drawn - drawn % whole_batches]
    sha256 = hashlib.sha256(raw.numpy().tobytes()).hexdigest()
    return CalibrationSet(normalise(raw, prep), source, sha256, skipped, drawn)


def load_split(
    name: str,
    split: str,
    prep: Preprocess,
    data_dir: str | None = None,
    classes: Sequence[str] | None = None,
    most: int | None = None,
    most_seed: int | None = None,
) -> Any:
    """A split of data set `name` read as evaluation reads it (the model's size, crop and channels):
    the calibration set's train split here, the held-out set's test split in vitc.export. Unreadable
    files are left out and named in its `skipped`, as training left them out. An image folder holding the
    model's `classes` is labelled and ordered as its head (a checkpoint from before timm's class order).
    At `most` images (vitc.data.datasets.capped), chosen before an image folder's files are decoded."""
    from vitc.data.datasets import load_dataset

    c, h, _ = prep.input_size
    return load_dataset(
        name,
        split,
        data_dir=data_dir,
        image_size=h,
        crop_pct=prep.crop_pct,
        crop_mode=prep.crop_mode,
        in_chans=c,
        on_bad_image="skip",
        recorded=classes,
        most=most,
        most_seed=most_seed,
        measured=split != "train",  # the held-out set: read as vitc eval reads it
    )


def normalise(raw: Any, prep: Preprocess) -> np.ndarray:
    """uint8 (N, C, H, W) pixels (a tensor) as the float32 input the model takes."""
    from vitc.data.transforms import eval_transform

    return eval_transform(raw, prep.mean, prep.std).numpy().astype(np.float32)


def calibration_set(
    name: str,
    count: int,
    prep: Preprocess,
    data_dir: str | None = None,
    seed: int = 0,
    classes: Sequence[str] | None = None,
    whole_batches: int | None = None,
) -> CalibrationSet:
    """`count` images drawn (seeded) from the train split of `name` (`load_split`; an image folder's files are
    drawn before decoding, so a train split of any size costs `count` decodes), normalised like evaluation;
    with `whole_batches`, as many whole batches of it as they fill (see `_finish`)."""
    if count < 1:
        raise VitcError(f"--calib-images must be ≥ 1, got {count}")
    data = load_split(name, "train", prep, data_dir, classes, most=count, most_seed=seed)  # drawn before decoding
    if len(data) == 0:
        raise VitcError(f"the calibration set {name!r} (train split) is empty")
    return _finish(data.images, prep, name, list(data.skipped), whole_batches)


def calib_files(folder: Path) -> list[Path]:
    """The image files anywhere under a --calib-dir folder, or one line saying why there are none (checked
    before the export starts, and read again to calibrate)."""
    from vitc.data.datasets import list_images
    from vitc.data.files import require_folder

    if folder.exists() and not folder.is_dir():
        try:
            require_folder(folder)  # a file (a .tar of photos, one photo) is said to be one, not "no such folder"
        except VitcError as err:
            raise VitcError(f"--calib-dir {err}") from None
    if not folder.is_dir():
        raise VitcError(f"--calib-dir {folder}: no such folder")
    files = [Path(root) / name for root, _, _ in sorted(os.walk(folder)) for name in list_images(Path(root))]
    if not files:
        raise VitcError(f"--calib-dir {folder} holds no images")
    return files


def check_calib_data(name: str, data_dir: str | None) -> None:
    """--calib-data's data set and folder, checked before the export starts (calibration_set reads its train
    split minutes later): a data set vitc reads, and a folder holding it, an image folder's with train/."""
    from vitc.data.datasets import DATASETS
    from vitc.data.files import detect_kind

    if name not in DATASETS:
        raise VitcError(f"unknown --calib-data {name!r} (choose one of: {', '.join(DATASETS)})")
    if name == "digits":
        return
    if not data_dir:
        raise VitcError(f"--calib-data {name} needs its folder: --calib-dir DIR")
    folder = Path(data_dir)
    if name == "imagefolder" and folder.is_dir() and not (folder / "train").is_dir():
        raise VitcError(
            f"--calib-data imagefolder draws from {folder}/train/<class>/ and {folder} has no train/: drop "
            "--calib-data to calibrate on the images anywhere under --calib-dir"
        )
    kind = detect_kind(folder)  # a missing folder, or one holding neither kind: one line each
    if kind != name:
        raise VitcError(f"--calib-dir {data_dir} holds {kind} data, not {name}: use --calib-data {kind}")


def folder_calibration_set(
    folder: Path, count: int, prep: Preprocess, seed: int = 0, whole_batches: int | None = None
) -> CalibrationSet:
    """`count` images drawn (seeded) from anywhere under `folder` (labels are not needed to calibrate:
    a folder of photos like those the model will see), transformed as evaluation transforms them; with
    `whole_batches`, as many whole batches of it as they fill (see `_finish`)."""
    import torch

    from vitc.data.datasets import _to_chans
    from vitc.data.images import center_crop, open_image

    files = calib_files(folder)
    c, h, _ = prep.input_size
    short = prep.resize_shorter_side
    decoded: dict[int, np.ndarray] = {}
    skipped: list[str] = []
    for i in np.random.default_rng(seed).permutation(len(files)):  # an unreadable file: the next one drawn
        if len(decoded) == count:
            break
        try:
            decoded[int(i)] = center_crop(open_image(files[i]), short, h, prep.crop_mode)
        except VitcError as exc:
            skipped.append(str(exc))
    if not decoded:
        raise VitcError(f"none of the {len(files)} images in --calib-dir {folder} could be read")
    raw = _to_chans(torch.from_numpy(np.stack([decoded[i] for i in sorted(decoded)])), c)
    return _finish(raw, prep, str(folder), skipped, whole_batches)
