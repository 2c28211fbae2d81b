"""The house limit on a module's length, and the import paths that names split out of long modules keep."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MOST_LINES = 500  # a module longer than this is split by what it defines (docs/architecture.md), not squeezed


@pytest.mark.parametrize(
    "package", ["vitc/models", "vitc/data", "vitc/cli", "vitc/engines", "vitc/build", "vitc/export", "vitc/train"]
)
def test_modules_stay_under_the_house_limit(package: str) -> None:
    long = {
        str(path.relative_to(ROOT)): n
        for path in sorted((ROOT / package).glob("*.py"))
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MOST_LINES
    }
    assert not long, f"over {MOST_LINES} lines: {long}"


MOVED = [
    ("vitc.models.zoo_model", "vitc.models.layers", ["GLOBAL_POOLS", "ZooModel", "check_global_pool"]),
    ("vitc.models.prior_attention", "vitc.models.spvit", ["PriorAttention", "flex_prior_attention", "prior_attention"]),
    (
        "vitc.data.sampling",
        "vitc.data.datasets",
        ["REPEAT_ROUND", "batches", "epoch_share", "make_generator", "samples_per_epoch", "shard", "split_batches"],
    ),
    ("vitc.data.sampling", "vitc.data", ["batches", "make_generator", "shard"]),
    ("vitc.data.folder_index", "vitc.data.stream", ["INDEX_VERSION", "index_imagefolder"]),
    ("vitc.data.files", "vitc.data.datasets", ["folder_split"]),
]


@pytest.mark.parametrize(("home", "old", "names"), MOVED, ids=[f"{old}<-{home}" for home, old, _ in MOVED])
def test_moved_names_are_importable_where_they_were(home: str, old: str, names: list[str]) -> None:
    """Code written against the old module keeps working: the same objects, not copies."""
    pytest.importorskip("torch")
    defined, before = importlib.import_module(home), importlib.import_module(old)
    for name in names:
        assert getattr(before, name) is getattr(defined, name), f"{old}.{name}"
