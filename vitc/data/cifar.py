"""CIFAR-10's python batches read with numpy alone (no torch, no pickle code execution): training,
`vitc eval` on a checkpoint and `vitc eval` on an engine on a Jetson read the same splits."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vitc._text import few_names
from vitc.data._safe_pickle import safe_load
from vitc.data.files import CIFAR_LAYOUT, cifar_root
from vitc.errors import VitcError

CIFAR_VAL_FRACTION = 0.1
CIFAR_TRAIN_BATCHES = 5  # data_batch_1..5
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def cifar_raw(data_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(N, 3, 32, 32) uint8 images, labels and class names of one split, as stored.

    Train/val come from data_batch_1..5: val is the last 10% of each class (fixed); test is test_batch.
    """
    root = _cifar_root(data_dir)
    if split == "test":
        x, y = _read_cifar_batch(root / "test_batch")
    else:
        parts = [_read_cifar_batch(p) for p in _train_batches(root)]
        x, y = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        val = np.zeros(len(y), dtype=bool)
        for c in np.unique(y):
            idx = np.flatnonzero(y == c)
            val[idx[len(idx) - round(CIFAR_VAL_FRACTION * len(idx)) :]] = True
        keep = val if split == "val" else ~val
        x, y = x[keep], y[keep]
    return np.ascontiguousarray(x), y, _cifar_class_names(root)


def cifar_class_names(data_dir: Path) -> list[str]:
    """The class names of the batches in `data_dir` (batches.meta's, else CIFAR-10's), no image read."""
    return _cifar_class_names(_cifar_root(data_dir))


def check_cifar_classes(split: str, names: Sequence[str], model_names: Sequence[str] | None, model: str) -> None:
    """One line when a model (`model`: "the checkpoint", "the engine") of other classes is measured on CIFAR-10
    batches: checked before anything is resized or run, so its size or output width is never the complaint."""
    if model_names and list(model_names) != list(names):
        raise VitcError(
            f"cifar10/{split} has classes {few_names(names)}, {model} {few_names(model_names)}:"
            " it was not trained on CIFAR-10"
        )


def _cifar_root(data_dir: Path) -> Path:
    """The folder holding the batches: `data_dir` itself or the `cifar-10-batches-py` the tarball unpacks."""
    root = cifar_root(data_dir)
    if root is None:
        raise VitcError(f"no CIFAR-10 batches in {data_dir} (expected {CIFAR_LAYOUT})")
    return root


def _train_batches(root: Path) -> list[Path]:
    """data_batch_1..5, all of them: the official layout always has five, and training on the rest of an
    interrupted extraction would change the train and val splits without a word."""
    files = [root / f"data_batch_{i}" for i in range(1, CIFAR_TRAIN_BATCHES + 1)]
    missing = [p.name for p in files if not p.is_file()]
    if missing:
        raise VitcError(
            f"{root} is missing {', '.join(missing)} (CIFAR-10 has {CIFAR_LAYOUT}): extract the archive again"
        )
    return files


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3, 32, 32) uint8 images and (N,) labels from one batch file, checking its layout."""
    if not path.is_file():
        raise VitcError(f"missing CIFAR-10 batch {path}")
    d = safe_load(path)
    if not isinstance(d, dict):
        raise VitcError(f"{path} is not a CIFAR-10 batch (expected a dict, got {type(d).__name__})")
    data = d.get(b"data", d.get("data"))
    labels = d.get(b"labels", d.get("labels"))
    if data is None or labels is None:
        raise VitcError(f"{path} is not a CIFAR-10 batch (no 'data' and 'labels' keys)")
    if not isinstance(data, np.ndarray):  # a list could be anything, even one that contains itself
        raise VitcError(f"{path}: 'data' must be a numpy array, got {type(data).__name__}")
    if data.ndim != 2 or data.shape[1] != 3072 or data.dtype != np.uint8:
        raise VitcError(f"{path}: 'data' must be uint8 N x 3072, got {data.dtype} {data.shape}")
    try:
        y = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError) as exc:
        raise VitcError(f"{path}: 'labels' are not integers") from exc
    if y.shape != (data.shape[0],) or (y.size and (y.min() < 0 or y.max() > 9)):
        raise VitcError(f"{path}: 'labels' must be {data.shape[0]} integers in 0..9")
    return data.reshape(-1, 3, 32, 32), y


def _cifar_class_names(root: Path) -> list[str]:
    meta = root / "batches.meta"
    if not meta.is_file():
        return list(CIFAR10_CLASSES)
    d = safe_load(meta)
    names = d.get(b"label_names", d.get("label_names")) if isinstance(d, dict) else None
    if not isinstance(names, list) or len(names) != 10:
        raise VitcError(f"{meta}: expected 'label_names' with 10 entries")
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]
