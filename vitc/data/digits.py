"""scikit-learn's digits and their stratified train/val/test split, without importing scikit-learn.

Importing `sklearn.datasets` and `sklearn.model_selection` (scikit-learn's base pulls in scipy) was a
large part of the start of every training process on digits: every `vitc train`, every DDP rank, every
test that trains. What vitc needs of them is small: the CSV that `load_digits` reads, found in the
installed package without importing it, and `train_test_split(..., stratify=y, random_state=seed)`,
re-implemented here step for step (`StratifiedShuffleSplit`'s first split, `_approximate_mode`) so the
same seed gives the same indices, bit for bit; tests/data/test_digits.py checks both against the
installed scikit-learn. numpy only, no torch.
"""

from __future__ import annotations

import gzip
import importlib.util
import math
from pathlib import Path

import numpy as np

from vitc._lazy import lazy_import

# where `sklearn.datasets.load_digits` reads the digits, under the scikit-learn package
DIGITS_FILE = ("datasets", "data", "digits.csv.gz")


def digits_raw() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 digits as `load_digits` gives them: images float64 (N, 8, 8) in 0..16, targets int64 (N,).
    Read from scikit-learn's own file; where it is not found (a release that moved it), from `load_digits`,
    and without scikit-learn the one-line error that says how to install it (`lazy_import`)."""
    path = _sklearn_file(DIGITS_FILE)
    if path is None:
        digits = lazy_import("sklearn.datasets").load_digits()
        return digits.images, digits.target.astype(np.int64)
    with gzip.open(path, "rt", encoding="utf-8") as f:  # as sklearn.datasets.load_gzip_compressed_csv_data
        data = np.loadtxt(f, delimiter=",")
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(np.int64)


def _sklearn_file(parts: tuple[str, ...]) -> Path | None:
    """A data file of the installed scikit-learn, found without importing it; None: not there."""
    try:
        spec = importlib.util.find_spec("sklearn")
    except Exception:  # ValueError for a module without a spec, or whatever a broken install raises
        return None
    for root in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(root).joinpath(*parts)
        if path.is_file():
            return path
    return None


def stratified_split(y: np.ndarray, test_size: float | int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, test): positions in `y`, as `sklearn.model_selection.train_test_split(np.arange(len(y)),
    test_size=test_size, stratify=y, random_state=seed)` returns them. A float `test_size` is a fraction
    (ceil(test_size * n) samples are held out), an int a count."""
    n = len(y)
    n_test = int(test_size) if isinstance(test_size, (int, np.integer)) else math.ceil(test_size * n)
    n_train = n - n_test
    _, y_indices, class_counts = np.unique(y, return_inverse=True, return_counts=True)
    if not (0 < n_test < n) or class_counts.min() < 2 or min(n_train, n_test) < len(class_counts):
        raise ValueError(
            f"cannot split {n} samples of {len(class_counts)} classes (the smallest of {class_counts.min()}) "
            f"into {n_train} and {n_test}, stratified"
        )
    class_indices = np.split(np.argsort(y_indices, kind="stable"), np.cumsum(class_counts)[:-1])
    rng = np.random.RandomState(seed)  # sklearn.utils.check_random_state(int)
    n_i = _approximate_mode(class_counts, n_train, rng)
    t_i = _approximate_mode(class_counts - n_i, n_test, rng)
    train, test = [], []
    for i, count in enumerate(class_counts):
        drawn = class_indices[i][rng.permutation(count)]
        train.append(drawn[: n_i[i]])
        test.append(drawn[n_i[i] : n_i[i] + t_i[i]])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


def _approximate_mode(class_counts: np.ndarray, n_draws: int, rng: np.random.RandomState) -> np.ndarray:
    """How many of each class `n_draws` stratified draws take (sklearn.utils.extmath._approximate_mode):
    each class's share rounded down, then one more for the classes with the largest remainders, ties
    broken by `rng`."""
    continuous = class_counts / class_counts.sum() * n_draws
    floored = np.floor(continuous)
    need_to_add = int(n_draws - floored.sum())
    if need_to_add > 0:
        remainder = continuous - floored
        for value in np.sort(np.unique(remainder))[::-1]:
            (inds,) = np.where(remainder == value)
            add_now = min(len(inds), need_to_add)
            floored[rng.choice(inds, size=add_now, replace=False)] += 1
            need_to_add -= add_now
            if need_to_add == 0:
                break
    return floored.astype(int)
