"""An image folder's classes are numbered in timm's order (natural_key: case-folded, digit runs as numbers)
wherever a folder is listed, so that a head fine-tuned in timm fits it; a recorded order of the same names
(a resumed run's, a checkpoint's) is kept."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from vitc.data.datasets import folder_split, load_dataset
from vitc.data.files import class_order, labelled_files, natural_key
from vitc.data.stream import index_imagefolder

Image = pytest.importorskip("PIL.Image")

# plain sorted(): 10, 2, Zebra, apple, café, Élan; timm: 2, 10, apple, café, Zebra, Élan
NAMES = ["10", "2", "Zebra", "café", "apple", "Élan"]
TIMM = ["2", "10", "apple", "café", "Zebra", "Élan"]


def timm_natural_key(string_: str) -> list[int | str]:
    """timm.utils.misc.natural_key as timm defines it, the reference."""
    return [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", string_.lower())]


def _folder(root: Path, counts: dict[str, int]) -> Path:
    """train/ and val/ with `counts[name]` tiny images per class, each class its own grey level."""
    for split in ("train", "val"):
        for level, (name, count) in enumerate(counts.items()):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                Image.fromarray(np.full((8, 8, 3), 20 * level, np.uint8)).save(root / split / name / f"{i}.png")
    return root


def test_timms_order_numbers_digit_runs_and_folds_case() -> None:
    assert class_order(NAMES) == TIMM == sorted(NAMES, key=timm_natural_key)
    assert class_order(["img12", "img2", "IMG3", "b", "A"]) == ["A", "b", "img2", "IMG3", "img12"]
    assert class_order(["n02", "n1", "n010"]) == ["n1", "n02", "n010"]  # numbers, whatever their zeros


@pytest.mark.parametrize(
    "name", ["", "10", "a10b2", "Ünïcödé ٣ 7", "x٣y", "ÉCOLE école", "007bond", "class 10 (old)", "日本9語"]
)
def test_natural_key_is_timms(name: str) -> None:
    assert natural_key(name) == timm_natural_key(name)


def test_names_timm_cannot_order_are_ordered_and_ties_are_fixed() -> None:
    """A superscript digit is a digit to str.isdigit but not to the regex: timm's int() fails on "²" alone;
    here it stays text. Names equal under the key ("cat", "Cat"; "1", "01") keep one order (timm's follows
    the set's hash order, which changes per process)."""
    assert class_order(["²", "1", "a"]) == ["1", "a", "²"]
    assert class_order(["cat", "Cat", "01", "1"]) == ["01", "1", "Cat", "cat"]
    assert class_order(["cat", "Cat"]) == class_order(["Cat", "cat"])


def test_a_recorded_order_of_the_same_names_is_kept() -> None:
    plain = sorted(NAMES)
    assert class_order(NAMES, plain) == plain
    assert class_order(NAMES, plain[:-1]) == TIMM  # other names: the folder's own order
    assert class_order(NAMES, [*plain, "owl"]) == TIMM
    assert class_order(["a", "b"], ["a", "a", "b"]) == ["a", "b"]


def test_every_folder_reader_numbers_classes_alike(tmp_path: Path) -> None:
    """In memory, streamed (and its index cache), and `vitc eval`'s labelled folder: one order, timm's."""
    root = _folder(tmp_path / "photos", {name: 1 + i for i, name in enumerate(NAMES)})
    in_memory = load_dataset("imagefolder", "val", data_dir=root, image_size=8)
    assert in_memory.class_names == TIMM
    counts = np.bincount(in_memory.labels.numpy())
    assert counts.tolist() == [1 + NAMES.index(name) for name in TIMM]  # label i is class TIMM[i]'s images
    cache = tmp_path / "index.json"
    streamed = index_imagefolder(root, "val", cache)
    assert streamed.class_names == TIMM
    first = [f.split("/")[0] for f, label in zip(streamed.files, streamed.labels, strict=True) if label == 0]
    assert first == ["2", "2"]
    assert json.loads(cache.read_text())["splits"]["val"]["classes"] == TIMM
    index, _ = labelled_files(root, "val", TIMM)
    assert [f.split("/")[0] for f in index.files][:3] == ["2", "2", "10"]  # class folders read in timm's order
    assert folder_split(root, "train")[0] == TIMM


def test_a_recorded_order_is_read_in_memory_streamed_and_from_the_cache(tmp_path: Path) -> None:
    """A run made before timm's order recorded plainly sorted names: its resume reads the folder in them,
    in memory and streamed, and its index cache (written in that order) is used, not rescanned."""
    root = _folder(tmp_path / "photos", {name: 1 for name in NAMES})
    plain = sorted(NAMES)
    in_memory = load_dataset("imagefolder", "train", data_dir=root, image_size=8, recorded=plain)
    assert in_memory.class_names == plain and in_memory.labels.tolist() == list(range(len(plain)))
    cache = tmp_path / "index.json"
    first = index_imagefolder(root, "train", cache, recorded=plain)
    assert first.class_names == plain and [f.split("/")[0] for f in first.files] == plain
    record = json.loads(cache.read_text())
    record["splits"]["train"]["files"][0] = ["cached.png"]  # a cache hit lists what the cache says
    cache.write_text(json.dumps(record))
    assert index_imagefolder(root, "train", cache, recorded=plain).files[0] == "10/cached.png"
    assert index_imagefolder(root, "train", cache).files[0] == "2/0.png"  # a new run's order: scanned again
