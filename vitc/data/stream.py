"""Streaming data: images decoded and augmented per sample in DataLoader workers.

For sets whose decoded images would not fit the in-memory budget: only the file index (or, for
CIFAR-10, the 32x32 arrays as stored) is held; every sample is read when a batch asks for it.
Train samples are random-resized-cropped from the full image and flipped with a generator seeded
by (seed, epoch, index[, copy]), so a sample's augmentation does not depend on which worker made it, how
many workers there are or where a resumed run restarts; under repeated augmentation (aug.repeats)
each copy of an image draws its own. Bad images never raise in a worker: the
sample comes back flagged with a one-line reason, and the loop skips or stops (data.on_bad_image).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vitc._lazy import lazy_import
from vitc.artifacts.preprocess import DEFAULT_CROP_MODE, DEFAULT_CROP_PCT, eval_resize
from vitc.data.cifar import cifar_raw
from vitc.data.datasets import resize_images
from vitc.data.files import FileIndex

# the listing moved to its own module, torch-free for `vitc info`; its names stay importable from here
from vitc.data.folder_index import INDEX_VERSION, index_imagefolder  # noqa: F401
from vitc.data.images import center_crop, open_image
from vitc.data.transforms import check_train_interpolation
from vitc.errors import VitcError

MEMORY_BUDGET = 512 * 2**20  # decoded bytes (train + val) up to which data.stream=auto keeps images in memory
STREAM_CHOICES = ("auto", "memory", "stream")
BAD_IMAGE_CHOICES = ("skip", "stop")
_SAMPLE_STREAM = 1 << 21  # per-sample seeds come from (seed, 2**21, epoch, index), then the copy if not the first


def decoded_bytes(n_images: int, chans: int, size: int) -> int:
    return n_images * chans * size * size


def use_stream(choice: str, decoded: int) -> bool:
    """data.stream: "memory" and "stream" force a path; "auto" streams above MEMORY_BUDGET decoded bytes."""
    if choice not in STREAM_CHOICES:
        raise VitcError(f"data.stream must be one of {', '.join(STREAM_CHOICES)}, got {choice!r}")
    return choice == "stream" or (choice == "auto" and decoded > MEMORY_BUDGET)


# ---------------------------------------------------------------- sources: where sample i comes from


class FolderSource:
    """Images in class folders, read from disk per sample."""

    def __init__(self, index: FileIndex) -> None:
        self.index = index
        self.labels = index.labels
        self.class_names = index.class_names

    def __len__(self) -> int:
        return len(self.index)

    def open(self, i: int, draft_short: int | None = None) -> Any:
        """Sample `i` decoded (`open_image`): whole for the evaluation, at reduced size for training's crops."""
        return open_image(self.index.root / self.index.files[i], draft_short)

    def describe(self, i: int) -> str:
        return f"image {self.index.root / self.index.files[i]}"

    def subset(self, keep: np.ndarray) -> FolderSource:
        idx = self.index
        files = [idx.files[i] for i in keep]
        return FolderSource(FileIndex(idx.root, files, idx.labels[keep], idx.class_names))


class ArraySource:
    """uint8 (N, 3, h, w) images as stored (CIFAR-10's 32x32), resized per sample."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, class_names: list[str]) -> None:
        self.images, self.labels, self.class_names = images, labels, class_names

    def __len__(self) -> int:
        return len(self.labels)

    def open(self, i: int, draft_short: int | None = None) -> Any:
        return lazy_import("PIL.Image").fromarray(np.ascontiguousarray(self.images[i].transpose(1, 2, 0)))

    def eval_image(self, i: int, size: int) -> np.ndarray:
        """Resized whole, exactly as the in-memory CIFAR loader does (no crop_pct: the arrays are the images)."""
        return resize_images(torch.from_numpy(self.images[i : i + 1]), size)[0].numpy()

    def describe(self, i: int) -> str:
        return f"sample {i}"

    def subset(self, keep: np.ndarray) -> ArraySource:
        return ArraySource(self.images[keep], self.labels[keep], self.class_names)


def open_source(
    name: str, data_dir: str | Path, split: str, cache: Path | None = None, recorded: Sequence[str] | None = None
) -> FolderSource | ArraySource:
    """The streaming source of one split of cifar10 or imagefolder (its classes in a `recorded` order, if the same)."""
    if name == "cifar10":
        return ArraySource(*cifar_raw(Path(data_dir), split))
    if name == "imagefolder":
        return FolderSource(index_imagefolder(data_dir, split, cache, recorded))
    raise VitcError(f"data set {name} cannot stream (only cifar10 and imagefolder); use data.stream=memory")


# ---------------------------------------------------------------- per-sample transforms


def crop_box(
    w: int, h: int, rng: np.random.Generator, scale: Sequence[float], ratio: Sequence[float], attempts: int = 10
) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop box (left, top, width, height): `attempts` draws of area and
    log-aspect, the first that fits wins; otherwise the whole image clamped to the ratio range."""
    area = w * h
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(attempts):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        cw, ch = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            return int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1)), cw, ch
    if w / h < min(ratio):
        cw, ch = w, round(w / min(ratio))
    elif w / h > max(ratio):
        cw, ch = round(h * max(ratio)), h
    else:
        cw, ch = w, h
    return (w - cw) // 2, (h - ch) // 2, cw, ch


@dataclass
class SampleTransform:
    """Train: random-resized crop from the full image, flip, resize to `size` with Pillow's filter of
    `train_interpolation`. Eval: shorter side (both, by crop_mode) to size / crop_pct, centre crop. Both give
    uint8 (3, size, size)."""

    size: int
    crop_pct: float = DEFAULT_CROP_PCT
    seed: int = 0
    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_prob: float = 0.5
    crop_mode: str = DEFAULT_CROP_MODE
    train_interpolation: str = "random"  # the crop's resize: Pillow's bilinear, bicubic, or one at random per sample

    def __post_init__(self) -> None:
        check_train_interpolation(self.train_interpolation)

    @property
    def eval_short(self) -> int:
        return eval_resize(self.size, self.crop_pct)

    def train(self, im: Any, epoch: int, index: int, copy: int = 0) -> np.ndarray:
        """The crop and flip of sample `index` in `epoch`; `copy` > 0 (aug.repeats) draws another of the same
        image, copy 0 the one a run without repeats draws. Under "random" the filter is drawn after the box, as
        timm's RandomResizedCropAndInterpolation does; the other settings draw nothing more."""
        pil = lazy_import("PIL.Image")
        rng = np.random.default_rng([self.seed, _SAMPLE_STREAM, epoch, index, *([copy] if copy else [])])
        left, top, cw, ch = crop_box(*im.size, rng, self.crop_scale, self.crop_ratio)
        bicubic = rng.uniform() < 0.5 if self.train_interpolation == "random" else self.train_interpolation == "bicubic"
        flip = rng.uniform() < self.flip_prob
        resample = pil.Resampling.BICUBIC if bicubic else pil.Resampling.BILINEAR
        out = im.crop((left, top, left + cw, top + ch)).resize((self.size, self.size), resample)  # timm's edges
        if flip:
            out = out.transpose(pil.Transpose.FLIP_LEFT_RIGHT)
        return np.asarray(out, dtype=np.uint8).transpose(2, 0, 1)

    def eval(self, im: Any) -> np.ndarray:
        return center_crop(im, self.eval_short, self.size, self.crop_mode)


class StreamSet(torch.utils.data.Dataset):
    """Samples keyed (split, index, epoch, copy): epoch >= 0 draws the train transform (the copy's own under
    aug.repeats), -1 the eval one.

    Returns (uint8 (3, size, size), label, "") or, for a file that cannot be read, (zeros, label,
    the one-line reason): a worker never raises on bad data, the loop decides what to do.
    """

    def __init__(self, sources: dict[str, FolderSource | ArraySource], transform: SampleTransform) -> None:
        self.sources, self.transform = sources, transform

    def __len__(self) -> int:
        return sum(len(s) for s in self.sources.values())

    def __getitem__(self, item: tuple[str, int, int, int]) -> tuple[torch.Tensor, int, str]:
        split, index, epoch, copy = item
        source, t = self.sources[split], self.transform
        label = int(source.labels[index])
        try:
            if epoch >= 0:
                im = t.train(source.open(index, t.size), epoch, index, copy)
            elif isinstance(source, ArraySource):
                im = source.eval_image(index, t.size)
            else:
                im = t.eval(source.open(index))
        except VitcError as exc:
            return torch.zeros(3, t.size, t.size, dtype=torch.uint8), label, str(exc)
        except (OSError, ValueError, SyntaxError) as exc:  # a decoder failing late, e.g. in resize
            reason = f"cannot read {source.describe(index)}: {exc}"
            return torch.zeros(3, t.size, t.size, dtype=torch.uint8), label, reason
        return torch.from_numpy(np.ascontiguousarray(im)), label, ""


def collate(items: list[tuple[torch.Tensor, int, str]]) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """The good samples as one uint8 batch and their labels; the reasons the others were dropped."""
    good = [it for it in items if not it[2]]
    images = torch.stack([it[0] for it in good]) if good else torch.zeros(0, *items[0][0].shape, dtype=torch.uint8)
    return images, torch.tensor([it[1] for it in good], dtype=torch.int64), [it[2] for it in items if it[2]]
