"""The digits and their split, read without importing scikit-learn, are scikit-learn's, bit for bit."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from tests.processes import python_says
from vitc.data import digits
from vitc.data.datasets import DIGITS_SPLIT_SEED, DIGITS_TEST_FRACTION, DIGITS_VAL_FRACTION
from vitc.errors import VitcError

sk_datasets = pytest.importorskip("sklearn.datasets")
sk_split = pytest.importorskip("sklearn.model_selection")


def _sklearn_splits() -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """The digits and their train/val/test indices as vitc made them with scikit-learn."""
    d = sk_datasets.load_digits()
    y = d.target.astype(np.int64)
    idx = np.arange(len(y))
    rest, test = sk_split.train_test_split(
        idx, test_size=DIGITS_TEST_FRACTION, stratify=y, random_state=DIGITS_SPLIT_SEED
    )
    train, val = sk_split.train_test_split(
        rest, test_size=round(DIGITS_VAL_FRACTION * len(y)), stratify=y[rest], random_state=DIGITS_SPLIT_SEED
    )
    return d.images, y, {"train": train, "val": val, "test": test}


def _vitc_splits() -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """The same, made the way `vitc.data.datasets._load_digits` makes them."""
    images, y = digits.digits_raw()
    rest, test = digits.stratified_split(y, DIGITS_TEST_FRACTION, DIGITS_SPLIT_SEED)
    train, val = digits.stratified_split(y[rest], round(DIGITS_VAL_FRACTION * len(y)), DIGITS_SPLIT_SEED)
    return images, y, {"train": rest[train], "val": rest[val], "test": test}


def _assert_same(ours: tuple, theirs: tuple) -> None:
    (images, y, splits), (sk_images, sk_y, sk_splits) = ours, theirs
    assert images.dtype == sk_images.dtype == np.float64 and np.array_equal(images, sk_images)
    assert y.dtype == np.int64 and np.array_equal(y, sk_y)
    for name, sk_idx in sk_splits.items():
        assert splits[name].dtype == sk_idx.dtype and np.array_equal(splits[name], sk_idx), name  # same order too


def test_the_digits_and_their_splits_are_scikit_learns() -> None:
    ours = _vitc_splits()
    assert digits._sklearn_file(digits.DIGITS_FILE) is not None  # read from the file, not through load_digits
    _assert_same(ours, _sklearn_splits())
    assert {k: len(v) for k, v in ours[2].items()} == {"train": 1257, "val": 180, "test": 360}


@pytest.mark.parametrize("seed", [0, 1, 42, 2024])
@pytest.mark.parametrize(
    ("counts", "test_size"),
    [
        ([178, 182, 177, 183, 181, 182, 181, 179, 174, 180], 0.2),  # the digits' class counts
        ([50, 50, 50], 0.3),  # balanced: ties in every remainder, broken by the generator
        ([500, 30, 7, 2, 2], 0.25),  # imbalanced, classes at the minimum of two
        ([13, 29, 8, 61, 40, 11], 0.17),
        ([13, 29, 8, 61, 40, 11], 37),  # a count, not a fraction
        ([100, 100, 3], 9),
        ([2, 2], 2),
    ],
)
def test_stratified_split_is_train_test_splits(counts: list[int], test_size: float | int, seed: int) -> None:
    """The proof the re-implementation is exact: shuffled labels of these class counts (class values not
    0..k-1) split into the same positions, in the same order, as scikit-learn splits them."""
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.repeat(np.arange(len(counts)) * 7 + 3, counts))
    train, test = digits.stratified_split(y, test_size, seed)
    sk_train, sk_test = sk_split.train_test_split(np.arange(len(y)), test_size=test_size, stratify=y, random_state=seed)
    assert np.array_equal(train, sk_train) and np.array_equal(test, sk_test)


@pytest.mark.parametrize(("y", "test_size"), [([0, 0, 1], 0.5), ([0, 0, 1, 1], 1), ([0, 0, 1, 1], 4)])
def test_a_split_scikit_learn_refuses_is_refused(y: list[int], test_size: float | int) -> None:
    with pytest.raises(ValueError):
        sk_split.train_test_split(np.arange(len(y)), test_size=test_size, stratify=y, random_state=0)
    with pytest.raises(ValueError, match="cannot split"):
        digits.stratified_split(np.array(y), test_size, 0)


def test_loading_the_digits_imports_no_scikit_learn() -> None:
    """Importing scikit-learn (and scipy through it) was a large part of every training process's start."""
    code = (
        "import sys\n"
        "from vitc.data.datasets import load_dataset\n"
        "sizes = [len(load_dataset('digits', s)) for s in ('train', 'val', 'test')]\n"
        "print(sizes, sorted(m for m in ('sklearn', 'scipy') if m in sys.modules))\n"
    )
    assert python_says(code) == "[1257, 180, 360] []"


def test_without_the_file_the_digits_come_from_load_digits(monkeypatch: pytest.MonkeyPatch) -> None:
    """A scikit-learn that moved its data file: read through `load_digits`, the same arrays and splits."""
    monkeypatch.setattr(digits, "DIGITS_FILE", ("datasets", "data", "no_such_digits.csv.gz"))
    calls = []
    load_digits = sk_datasets.load_digits
    monkeypatch.setattr(sk_datasets, "load_digits", lambda: calls.append(1) or load_digits())
    ours = _vitc_splits()
    assert calls == [1]
    _assert_same(ours, _sklearn_splits())


def test_without_scikit_learn_the_error_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "sklearn" or m.startswith("sklearn.")]:
        monkeypatch.setitem(sys.modules, name, None)  # as if scikit-learn were not installed
    with pytest.raises(VitcError, match=r"needs 'sklearn', which is not installed \(pip install 'vitc\[torch\]'\)"):
        digits.digits_raw()
