"""Datasets for `vitc train`, held in memory as uint8 tensors at the model's input size.

Holding every image decoded and resized once lets augmentation run on whole batches with torch ops
(no per-sample Python, no worker processes), which is what makes CPU training on small sets fast.
The sets vitc trains on (digits, CIFAR-10, small image folders) fit in memory at their sizes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vitc.artifacts.preprocess import DEFAULT_CROP_MODE, DEFAULT_CROP_PCT, check_crop_mode, check_crop_pct, eval_resize
from vitc.data.cifar import cifar_raw
from vitc.data.digits import digits_raw, stratified_split
from vitc.data.files import (
    IMG_EXTENSIONS,
    SPLITS,
    WHOLE,
    class_dirs,
    class_order,
    folder_split,
    held_out_only,
    labelled_files,
    list_images,
    split_folder,
    split_read,
)
from vitc.data.images import read_image, read_whole, to_channels

# an epoch's seeded batching moved to its own module; its names stay importable from here
from vitc.data.sampling import (  # noqa: F401
    REPEAT_ROUND,
    batches,
    epoch_share,
    make_generator,
    samples_per_epoch,
    shard,
    split_batches,
)
from vitc.errors import VitcError

DATASETS = ("digits", "cifar10", "imagefolder")

# Fixed so the digits val/test sets never change with the training seed: results stay comparable.
DIGITS_SPLIT_SEED = 0
DIGITS_TEST_FRACTION = 0.2
DIGITS_VAL_FRACTION = 0.1


@dataclass
class ImageSet:
    """Images as uint8 (N, C, H, W), labels as int64 (N,), the class names the labels index, why each
    unreadable file was left out (data.on_bad_image=skip), and the split read (an image folder without
    test/ gives val for test; a plain folder of class folders "all", vitc.data.files.WHOLE). `sizes`, int64
    (N, 2): the images are whole photos squashed to a square, each of this (height, width)
    (`vitc.data.images.read_whole`); None: the model's input, as evaluated."""

    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    split: str = ""
    sizes: torch.Tensor | None = None

    def __post_init__(self) -> None:
        n = self.images.shape[0]
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.dtype != torch.int64 or self.labels.shape != (n,):
            raise ValueError(f"labels must be int64 ({n},), got {tuple(self.labels.shape)}")
        if self.sizes is not None and (self.sizes.dtype != torch.int64 or self.sizes.shape != (n, 2)):
            raise ValueError(f"sizes must be int64 ({n}, 2), got {self.sizes.dtype} {tuple(self.sizes.shape)}")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def subset(self, indices: torch.Tensor | Sequence[int] | np.ndarray) -> ImageSet:
        """The samples at `indices`, in that order, sharing class names."""
        idx = torch.as_tensor(np.asarray(indices), dtype=torch.int64)
        sizes = None if self.sizes is None else self.sizes[idx]
        names, skipped = list(self.class_names), list(self.skipped)
        return ImageSet(self.images[idx], self.labels[idx], names, skipped, self.split, sizes)


def load_dataset(
    name: str,
    split: str,
    *,
    data_dir: str | Path | None = None,
    image_size: int = 32,
    fraction: float = 1.0,
    seed: int = 0,
    in_chans: int = 3,
    crop_pct: float = DEFAULT_CROP_PCT,
    on_bad_image: str = "stop",
    whole: bool = False,
    crop_mode: str = DEFAULT_CROP_MODE,
    recorded: Sequence[str] | None = None,
    most: int | None = None,
    most_seed: int | None = None,
    measured: bool = False,
) -> ImageSet:
    """Load one split of a dataset as an `ImageSet` of `image_size` x `image_size` uint8 images.

    `fraction` < 1 keeps a stratified subset of the train split (seeded by `seed`); val and test are
    never subsampled so scores stay comparable. `crop_pct` and `crop_mode` apply to imagefolder only
    (resize the shorter side, or both with crop_mode "squash", to image_size / crop_pct, then center crop);
    digits and CIFAR are resized whole. `whole` keeps an image folder's photos whole for training's crops
    (`read_whole`, at image_size / crop_pct). An image folder's classes are numbered in timm's order
    (`vitc.data.files.class_order`), or in a `recorded` order (a run's or a checkpoint's) when the folder
    holds exactly those names. A folder without train/ (class folders directly, or under val/ or test/) is
    only measured on: its val and test are read as `vitc eval` reads them (class folders directly are all
    its images, split "all"), labelled by the `recorded` names; it has no train split.
    An image folder's unreadable file stops the load (`on_bad_image="stop"`) or is left out and
    its reason kept in `ImageSet.skipped` ("skip"), as the streamed path does per batch.
    `most` keeps at most that many images, stratified over the classes or drawn with `most_seed` (`reading_order`),
    chosen from an image folder's file list before any is decoded: export's held-out set, INT8 calibration
    and `vitc inspect` read a few thousand images of a split of any size. A val or test split a model is
    `measured` on (export's held-out set, inspect) is read as `vitc eval` reads it, also in a folder with
    train/: some of the model's classes, or an empty class folder, are measured, where training's own val
    and test need train's class folders.
    """
    if name not in DATASETS:
        raise VitcError(f"unknown dataset {name!r} (choose one of: {', '.join(DATASETS)})")
    if split not in SPLITS:
        raise VitcError(f"unknown split {split!r} (choose one of: {', '.join(SPLITS)})")
    if not (0.0 < fraction <= 1.0):
        raise VitcError(f"fraction must be in (0, 1], got {fraction}")
    check_crop_pct(crop_pct)
    check_crop_mode(crop_mode)
    if int(image_size) != image_size or image_size < 1:
        raise VitcError(f"image_size must be a positive integer, got {image_size}")
    if in_chans not in (1, 3):
        raise VitcError(f"in_chans must be 1 or 3, got {in_chans}")
    if name != "digits" and data_dir is None:
        raise VitcError(f"dataset {name!r} needs --data-dir")
    if name == "digits":
        ds = _load_digits(split, int(image_size))
    elif name == "cifar10":
        ds = _load_cifar10(Path(data_dir), split, int(image_size))  # type: ignore[arg-type]
    else:
        folder = Path(data_dir)  # type: ignore[arg-type]
        ds = _load_imagefolder(
            folder, split, int(image_size), crop_pct, on_bad_image, whole, crop_mode, recorded, most, most_seed,
            measured,
        )  # fmt: skip
    kept = capped(ds.labels.numpy(), most, most_seed) if name != "imagefolder" else None
    if kept is not None:
        ds = ds.subset(kept)
    ds.images = _to_chans(ds.images, in_chans)
    ds.split = ds.split or split
    if split == "train" and fraction < 1.0:
        ds = ds.subset(stratified_subset(ds.labels, fraction, seed))
    return ds


def reading_order(labels: np.ndarray, most: int | None, seed: int | None = None) -> np.ndarray:
    """The order a read of at most `most` of the images labelled `labels` tries them in, stopping once `most`
    are read, so an unreadable image is replaced by the next in the order. No cap: all, in order. With a
    `seed`: a seeded draw, as --calib-dir's. Without: stratified, the same images every time (the first
    `most` of a folder listed class by class were its first classes only): an image's key is its rank in
    its class over the class's size, so the first `most` hold each class in proportion to its images and
    one of every class the cap allows; classes tied at a key take turns in a spread order."""
    n = len(labels)
    if most is None or n <= most:
        return np.arange(n)
    if most < 1:
        raise VitcError(f"at most {most} images: keep at least one")
    if seed is not None:
        return np.random.default_rng(seed).permutation(n)
    _, cls, counts = np.unique(labels, return_inverse=True, return_counts=True)
    by_class = np.argsort(cls, kind="stable")
    rank = np.empty(n, dtype=np.int64)
    rank[by_class] = np.arange(n) - np.repeat(np.cumsum(counts) - counts, counts)
    return np.lexsort((_spread_turn(cls), rank / counts[cls]))


def _spread_turn(index: np.ndarray) -> np.ndarray:
    """Class indices' turns in a spread order (their bits reversed): the first k turns fall evenly over
    the classes, not on the first k of them."""
    bits = max(int(index.max()).bit_length(), 1)
    turn = np.zeros_like(index)
    for b in range(bits):
        turn |= ((index >> b) & 1) << (bits - 1 - b)
    return turn


def capped(labels: np.ndarray, most: int | None, seed: int | None = None) -> np.ndarray | None:
    """Which of the images labelled `labels`, all readable, a read of at most `most` keeps (`reading_order`),
    sorted; None: all of them."""
    if most is None or len(labels) <= most:
        return None
    return np.sort(reading_order(labels, most, seed)[:most])


def stratified_subset(labels: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """Sorted indices keeping round(fraction * n_c) (at least 1) samples of every class c."""
    rng = np.random.default_rng(seed)
    y = labels.numpy()
    keep = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        k = max(1, round(fraction * len(idx)))
        keep.append(rng.choice(idx, size=k, replace=False))
    return torch.from_numpy(np.sort(np.concatenate(keep)))


# ---------------------------------------------------------------- resizing helpers


def resize_images(images: torch.Tensor, size: int, mode: str = "bicubic") -> torch.Tensor:
    """Resize uint8/float (N, C, h, w) to (N, C, size, size) uint8, in chunks to bound float memory."""
    if images.shape[-2:] == (size, size) and images.dtype == torch.uint8:
        return images
    out = torch.empty((*images.shape[:2], size, size), dtype=torch.uint8)
    for s in range(0, images.shape[0], 1024):
        x = images[s : s + 1024].float()
        x = F.interpolate(x, size=(size, size), mode=mode, align_corners=False, antialias=True)
        out[s : s + 1024] = x.round_().clamp_(0, 255).to(torch.uint8)
    return out


def _to_chans(images: torch.Tensor, in_chans: int) -> torch.Tensor:
    """`to_channels` on a CPU batch: replicate grey to RGB or reduce RGB to luma to match the model."""
    return images if images.shape[1] == in_chans else torch.from_numpy(to_channels(images.numpy(), in_chans))


def check_decoded(n_images: int, size: int, what: str, can_stream: bool = True) -> None:
    """Refuse, before anything is decoded, a set whose uint8 RGB images at `size` would take more than
    half the memory this process may use (the loaders peak near twice that): `data.image_size =
    10000` on 1,797 digits asks 502 GiB."""
    need = n_images * 3 * size * size
    usable = _usable_memory()
    if need > usable // 2:
        raise VitcError(
            f"{what}: {n_images:,} images at {size}×{size} take {need / 2**30:.1f} GiB decoded, over half the "
            f"{usable / 2**30:.1f} GiB this process can use; lower data.image_size"
            + (" or stream it (data.stream=stream)" if can_stream else "")
        )


def _usable_memory() -> int:
    """Physical memory, or less under an address-space limit (`ulimit -v`). Windows has neither `resource`
    nor os.sysconf (nor /proc): there it is the physical memory Windows reports."""
    usable = _physical_memory()
    try:
        import resource
    except ImportError:  # Windows
        return usable
    limit, _ = resource.getrlimit(resource.RLIMIT_AS)
    if limit != resource.RLIM_INFINITY:
        try:  # /proc is Linux's: elsewhere (macOS) the whole limit counts
            used = int(Path("/proc/self/statm").read_text().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            used = 0
        usable = min(usable, max(0, limit - used))
    return usable


def _physical_memory() -> int:
    """This machine's physical memory in bytes: sysconf on Linux and macOS, GlobalMemoryStatusEx on Windows,
    and when neither answers no bound (the check then passes)."""
    if hasattr(os, "sysconf"):
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    import ctypes

    class MemoryStatusEx(ctypes.Structure):  # MEMORYSTATUSEX (sysinfoapi.h)
        _fields_ = [("dwLength", ctypes.c_ulong), ("dwMemoryLoad", ctypes.c_ulong)] + [
            (name, ctypes.c_ulonglong)
            for name in ("ullTotalPhys", "ullAvailPhys", "ullTotalPageFile", "ullAvailPageFile", "ullTotalVirtual",
                         "ullAvailVirtual", "ullAvailExtendedVirtual")
        ]  # fmt: skip

    status = MemoryStatusEx(dwLength=ctypes.sizeof(MemoryStatusEx))
    kernel32 = getattr(getattr(ctypes, "windll", None), "kernel32", None)
    if kernel32 is None or not kernel32.GlobalMemoryStatusEx(ctypes.byref(status)):
        return 2**63 - 1
    return int(status.ullTotalPhys)


# ---------------------------------------------------------------- digits


def _load_digits(split: str, size: int) -> ImageSet:
    """scikit-learn's 8x8 digits (0..16) scaled to 0..255 and upsampled bilinearly, one channel."""
    images, y = digits_raw()
    x = torch.from_numpy(images.astype(np.float32) * (255.0 / 16.0)).unsqueeze(1)  # (N, 1, 8, 8)
    rest, test = stratified_split(y, DIGITS_TEST_FRACTION, DIGITS_SPLIT_SEED)
    train, val = stratified_split(y[rest], round(DIGITS_VAL_FRACTION * len(y)), DIGITS_SPLIT_SEED)
    train, val = rest[train], rest[val]
    pick = np.sort({"train": train, "val": val, "test": test}[split])
    check_decoded(len(pick), size, "digits", can_stream=False)
    images = F.interpolate(x[pick], size=(size, size), mode="bilinear", align_corners=False)
    images = images.round_().clamp_(0, 255).to(torch.uint8)
    return ImageSet(images, torch.from_numpy(y[pick]), [str(i) for i in range(10)])


# ---------------------------------------------------------------- CIFAR-10


def _load_cifar10(data_dir: Path, split: str, size: int) -> ImageSet:
    x, y, names = cifar_raw(data_dir, split)
    check_decoded(len(y), size, f"CIFAR-10 {split}")
    return ImageSet(resize_images(torch.from_numpy(x), size), torch.from_numpy(y), names)


# ---------------------------------------------------------------- image folders


def _load_imagefolder(
    data_dir: Path,
    split: str,
    size: int,
    crop_pct: float,
    on_bad_image: str,
    whole: bool = False,
    crop_mode: str = DEFAULT_CROP_MODE,
    recorded: Sequence[str] | None = None,
    most: int | None = None,
    most_seed: int | None = None,
    measured: bool = False,
) -> ImageSet:
    """`data_dir/<split>/<class>/<image files>`; classes come from train; test falls back to val when absent.
    A folder without train/ is read as `vitc eval` reads it (`_folder_files`): class folders directly are all of it.
    Centre crops at `size` as evaluated, or with `whole` the whole photos (`read_whole`) at size / crop_pct."""
    if on_bad_image not in ("skip", "stop"):
        raise VitcError(f"data.on_bad_image must be skip or stop, got {on_bad_image!r}")
    classes, files, read = _folder_files(data_dir, split, recorded, measured)
    where = data_dir if read == WHOLE else data_dir / read
    short = eval_resize(size, crop_pct)
    check_decoded(min(len(files), most or len(files)), short if whole else size, str(where))
    decoded: dict[int, tuple[np.ndarray, tuple[int, int] | None]] = {}
    skipped = []
    order = reading_order(np.array([label for _, label in files], dtype=np.int64), most, most_seed)
    for i in order:  # a capped read decodes only what it keeps, and what replaces an unreadable one
        if len(decoded) == most:
            break
        path = files[i][0]
        try:
            decoded[int(i)] = read_whole(path, short) if whole else (read_image(path, short, size, crop_mode), None)
        except VitcError as exc:
            if on_bad_image == "stop":
                raise VitcError(f"{exc} (data.on_bad_image=stop; =skip trains on without it)") from None
            skipped.append(str(exc))
    if not decoded:
        raise VitcError(f"no readable images in {where} ({len(skipped)} unreadable)")
    kept = sorted(decoded)
    stacked = torch.from_numpy(np.stack([decoded[i][0] for i in kept]))
    labels = torch.tensor([files[i][1] for i in kept], dtype=torch.int64)
    shapes = torch.tensor([decoded[i][1] for i in kept], dtype=torch.int64) if whole else None
    return ImageSet(stacked, labels, classes, skipped, read, shapes)


def _folder_files(
    data_dir: Path, split: str, recorded: Sequence[str] | None, measured: bool = False
) -> tuple[list[str], list[tuple[Path, int]], str]:
    """The class names, each image file with its label, and the split read. A val or test split `measured`
    on, and any of a folder without train/ (`held_out_only`, only measured on), is read as `vitc eval` reads
    it (`labelled_files`: class folders directly are all of it, WHOLE), labelled by the `recorded` names (the
    model's: a subset of them, and an unknown folder a one-line error), else by train's; a folder without
    train/ has no train split, as training needs train/."""
    if split != "train" and (measured or held_out_only(data_dir)):
        if recorded is not None:
            names = list(recorded)
        else:  # a checkpoint that names no classes: numbered as train's folders were, or the split's own
            trained = data_dir / "train"
            names = class_order(class_dirs(trained if trained.is_dir() else split_folder(data_dir, split)[0]))
        index, read = labelled_files(data_dir, split, names)
        files = [(index.root / f, int(y)) for f, y in zip(index.files, index.labels, strict=True)]
        return index.class_names, files, read
    classes, dirs = folder_split(data_dir, split, recorded)
    files = []
    for label, name in enumerate(classes):
        listed = list_images(dirs[name])
        if not listed:
            raise VitcError(f"class folder {dirs[name]} has no images (files named *{', *'.join(IMG_EXTENSIONS)})")
        files += [(dirs[name] / f, label) for f in listed]
    return classes, files, split_read(data_dir, split)
