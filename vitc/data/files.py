"""What a data folder holds, decided from its listing alone (no torch, no decoding).

The CLI checks `--data-dir` with these before importing torch, so a wrong folder is a one-line error
at once; the loaders list images with the same rule, so the in-memory and streamed paths read the
same files.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vitc.errors import VitcError

# timm's IMG_EXTENSIONS: a class folder's other files (readme.txt, .DS_Store, Thumbs.db) are not images
IMG_EXTENSIONS = (".png", ".jpg", ".jpeg", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
FOLDER_LAYOUT = "<data-dir>/train/<class>/<images> and <data-dir>/val/<class>/<images>"
CIFAR_LAYOUT = "data_batch_1..5 and test_batch from cifar-10-python.tar.gz"


@dataclass
class FileIndex:
    """The images of one split: paths relative to `root`, int64 labels, and the class names."""

    root: Path
    files: list[str]
    labels: np.ndarray
    class_names: list[str]

    def __len__(self) -> int:
        return len(self.files)


def natural_key(name: str) -> list[int | str]:
    """timm's `natural_key` (timm.utils.misc), by which its ImageFolder numbers classes: case-folded, runs of
    digits compared as numbers ("2" before "10", "Zebra" after "café"). Digit runs are the odd pieces of the
    split, so a name of other digit characters ("²", which timm's int() fails on) stays text."""
    return [int(piece) if i % 2 else piece for i, piece in enumerate(re.split(r"(\d+)", name.lower()))]


def class_order(names: Iterable[str], recorded: Sequence[str] | None = None) -> list[str]:
    """The one order of an image folder's classes, i.e. of a classifier's rows: timm's (`natural_key`, names
    equal under it by their code points), so a head fine-tuned in timm fits a folder as it did there. A
    `recorded` order of the same names (a resumed run's, a checkpoint's) is kept: its head rows follow it."""
    names = list(names)
    if recorded is not None and len(set(recorded)) == len(recorded) and set(recorded) == set(names):
        return list(recorded)
    return sorted(names, key=lambda name: (natural_key(name), name))


def is_image_file(name: str) -> bool:
    """Chosen by extension, case-insensitive, as timm's ImageFolder does."""
    return name.lower().endswith(IMG_EXTENSIONS)


def list_images(class_dir: Path) -> list[str]:
    """The visible image files' names, sorted; `os.scandir` knows file from folder without a stat per file.
    A link that cannot be followed (one to itself: ELOOP) is listed, so its reader reports it as bad."""
    with os.scandir(class_dir) as entries:
        return sorted(e.name for e in entries if not e.name.startswith(".") and is_image_file(e.name) and _file(e))


def _file(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_file()
    except OSError:
        return True


def cifar_root(data_dir: Path) -> Path | None:
    """The folder holding CIFAR-10 batches: `data_dir` itself or the `cifar-10-batches-py` the tarball unpacks."""
    for cand in (data_dir, data_dir / "cifar-10-batches-py"):
        if (cand / "data_batch_1").is_file() or (cand / "test_batch").is_file():
            return cand
    return None


ARCHIVES = {".tar.gz": "tar xzf", ".tgz": "tar xzf", ".tar": "tar xf", ".zip": "unzip"}  # how each is unpacked


def require_folder(folder: Path) -> None:
    """The one check that a data folder is there: a file given instead (the CIFAR-10 tarball itself) is said
    to be one, with how to unpack an archive, rather than called missing."""
    if folder.is_dir():
        return
    if not folder.exists():
        raise VitcError(f"missing folder {folder}")
    unpack = next((tool for suffix, tool in ARCHIVES.items() if folder.name.lower().endswith(suffix)), None)
    if unpack is None:
        raise VitcError(f"{folder} is a file, not a folder: give the folder that holds the data")
    raise VitcError(
        f"{folder} is a file, not a folder: unpack the archive ({unpack} {folder}) and give the folder it makes"
    )


def _has_class_folders(folder: Path) -> bool:
    return folder.is_dir() and any(p.is_dir() and not p.name.startswith(".") for p in folder.iterdir())


def detect_kind(data_dir: Path, measured: bool = False) -> str:
    """imagefolder or cifar10, from what `data_dir` holds; anything else is a one-line error. A folder a model
    is `measured` on (eval, export's held-out set, inspect) may also hold no train/ (`held_out_only`);
    training needs train/ and val/."""
    require_folder(data_dir)
    if _has_class_folders(data_dir / "train"):
        return "imagefolder"
    if cifar_root(data_dir) is not None:
        return "cifar10"
    if measured and held_out_only(data_dir):
        return "imagefolder"
    held = [f"{name}/" for name in ("val", "test") if _has_class_folders(data_dir / name)]
    if held:
        raise VitcError(f"{data_dir} has {' and '.join(held)} but no train/: vitc trains on {FOLDER_LAYOUT}")
    if _has_class_folders(data_dir) and not (data_dir / "train").exists():
        raise VitcError(
            f"{data_dir} holds class folders but no train/ and val/: vitc trains on {FOLDER_LAYOUT} "
            f"(move about a fifth of each class into val/<class>/)"
        )
    raise VitcError(f"{data_dir} holds neither class folders ({FOLDER_LAYOUT}) nor CIFAR-10 batches ({CIFAR_LAYOUT})")


def check_data_dir(name: str, data_dir: str | None) -> None:
    """The folder exists and holds data of kind `name` (digits take none): one line otherwise."""
    if name == "digits":
        if data_dir:
            raise VitcError(f"digits are bundled and take no folder: drop --data digits to use {data_dir}")
        return
    if not data_dir:
        raise VitcError(f"data set {name} needs a folder: --data-dir or data.dir")
    kind = detect_kind(Path(data_dir))
    if kind != name:
        raise VitcError(f"{data_dir} holds {_KIND_WORDS[kind]}, not {_KIND_WORDS[name]}: use --data {kind}")


_KIND_WORDS = {"imagefolder": "an image folder (class folders)", "cifar10": "CIFAR-10 batches"}


SPLITS = ("train", "val", "test")
WHOLE = "all"  # the split of a plain folder of class folders, read whole (`is_plain`): reports and manifests say it


def is_plain(folder: Path) -> bool:
    """A folder of class folders with no train/, val/ or test/: measured on whole (`vitc eval`, the held-out
    set of `vitc export`, `vitc inspect`), where no split is chosen; training refuses it (`detect_kind`)."""
    return folder.is_dir() and not any((folder / name).is_dir() for name in SPLITS)


def held_out_only(folder: Path) -> bool:
    """Class folders with no train/: directly (`is_plain`, read whole) or under val/ or test/. A model is
    measured on such a folder (`vitc eval`, the held-out set of `vitc export`, `vitc inspect`), labelled by
    its own class names (`labelled_files`); training and INT8 calibration need a train/."""
    if not folder.is_dir() or (folder / "train").is_dir():
        return False
    if is_plain(folder):
        return _has_class_folders(folder)
    return any(_has_class_folders(folder / name) for name in ("val", "test"))


def split_read(data_dir: Path, split: str) -> str:
    """The split folder a split image folder gives for `split`: test falls back to val when there is no
    test/ folder. One rule for training's loaders, the split its run records and `vitc eval`'s folder."""
    return "val" if split == "test" and not (data_dir / "test").is_dir() else split


def class_dirs(split_dir: Path) -> dict[str, Path]:
    """The visible class folders of a split folder, by name; a missing or empty one is one line."""
    if not split_dir.is_dir():
        raise VitcError(f"missing folder {split_dir} (expected <data-dir>/{{train,val[,test]}}/<class>/<images>)")
    dirs = {p.name: p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith(".")}
    if not dirs:
        raise VitcError(f"no class folders in {split_dir}")
    return dirs


def folder_split(
    data_dir: Path, split: str, recorded: Sequence[str] | None = None
) -> tuple[list[str], dict[str, Path]]:
    """The class names (from train, in `class_order`: a `recorded` order of the same names is kept) and the
    class folders of `split` (split_read): what training's loaders and its listing (vitc.data.folder_index) read."""
    require_folder(data_dir)
    classes = class_order(class_dirs(data_dir / "train"), recorded)
    split = split_read(data_dir, split)
    dirs = class_dirs(data_dir / split)
    if set(dirs) != set(classes):
        missing, extra = class_order(set(classes) - set(dirs)), class_order(set(dirs) - set(classes))
        raise VitcError(
            f"{data_dir / split} must have the same class folders as {data_dir / 'train'} "
            f"(missing: {', '.join(missing) or '-'}; extra: {', '.join(extra) or '-'})"
        )
    return classes, dirs


def split_listing(data_dir: Path, split: str) -> tuple[str, list[str]]:
    """The split folder an image folder reads for `split` (split_read) and its images, as class/name sorted
    by code point: from the folder's listing alone, no image is opened."""
    read = split_read(data_dir, split)
    root = data_dir / read
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    return read, sorted(f"{folder.name}/{name}" for folder in classes for name in list_images(folder))


def listing_digest(files: Sequence[str]) -> str:
    """A short digest of a sorted file listing: two machines' copies of a split differ in it when any name does
    (surrogate-escaped bytes of an undecodable name are hashed as they are)."""
    text = "\n".join(files).encode("utf-8", "surrogateescape")
    return hashlib.sha256(text).hexdigest()[:16]


def split_folder(folder: Path, split: str) -> tuple[Path, str]:
    """The folder of class folders to measure on and the split it is: `folder/<split_read>` when the folder
    is split, else the folder itself and WHOLE (a plain folder of class folders: no split is chosen)."""
    require_folder(folder)
    if is_plain(folder):
        return folder, WHOLE
    present = [name for name in SPLITS if (folder / name).is_dir()]
    read = split_read(folder, split)
    if read not in present:
        shown = ", ".join(f"{name}/" for name in sorted(present))
        raise VitcError(f"{folder} has no {split}/ folder (it has {shown}): choose one with --split")
    return folder / read, read


def labelled_files(folder: Path, split: str, class_names: Sequence[str]) -> tuple[FileIndex, str]:
    """The image files of any labelled folder (class folders, directly or under test/ or val/) whose class
    names the model knows, labelled with the model's index of each name; (index, the split read: WHOLE for
    a plain folder of class folders). The index's root is the folder read. Nothing is decoded here:
    `vitc eval` streams them, so a folder of any size fits in memory."""
    root, read = split_folder(folder, split)
    found = {p.name: p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")}
    dirs = [found[name] for name in class_order(found, class_names)]
    if not dirs:
        raise VitcError(f"no class folders in {root} (expected {root}/<class>/<images>)")
    index = {name: i for i, name in enumerate(class_names)}
    unknown = [d.name for d in dirs if d.name not in index]
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" (+{len(unknown) - 5} more)" if len(unknown) > 5 else "")
        raise VitcError(
            f"{root} has class folders the model does not know: {shown} "
            f"(its {len(class_names)} classes: {', '.join(class_names[:8])}{', …' if len(class_names) > 8 else ''})"
        )
    files, labels = [], []
    for d in dirs:
        for name in list_images(d):
            files.append(f"{d.name}/{name}")
            labels.append(index[d.name])
    if not files:
        raise VitcError(f"no images in the class folders of {root}")
    return FileIndex(root, files, np.asarray(labels, dtype=np.int64), list(class_names)), read
