"""vitc's public Python surface, pinned: the names `vitc` and `vitc.api` export, their signatures, and no
other module of vitc defining a function of the same name with other arguments.

`vitc.checkpoint` once had its own `load_model(path, **overrides) -> (model, meta)` and
`save_checkpoint(path, model, meta)`: a user who imported those instead of `vitc.load_model` and
`vitc.save_checkpoint` got a tuple or a confusing TypeError. They are `read_checkpoint` and `write_checkpoint`
now; the old names still import, with a FutureWarning that names both.
"""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import pytest

import vitc

ROOT = Path(__file__).resolve().parents[1]
P, K, VK = "POSITIONAL_OR_KEYWORD", "KEYWORD_ONLY", "VAR_KEYWORD"
NO = inspect.Parameter.empty

# name -> (module defining it, [(parameter, kind, default)]): a change here is a change of the public API
SURFACE = {
    "create_model": ("vitc.models._registry", [("name", P, NO), ("pretrained", P, False), ("overrides", VK, NO)]),
    "list_models": (
        "vitc.models._registry",
        [("pattern", P, "*"), ("family", P, None), ("pretrained", P, False)],
    ),
    "load_model": ("vitc.api", [("path", P, NO), ("model_name", P, None), ("overrides", VK, NO)]),
    "predict": ("vitc.api", [("model", P, NO), ("images", P, NO), ("top_k", P, 5)]),
    "preprocess": ("vitc.api", [("images", P, NO), ("model", P, NO)]),
    "save_checkpoint": ("vitc.api", [("path", P, NO), ("model", P, NO), ("class_names", P, None)]),
}
API = ["load_model", "predict", "preprocess", "save_checkpoint"]


def test_vitc_exports_these_names_and_no_others() -> None:
    assert sorted(vitc.__all__) == sorted([*SURFACE, "VitcError", "__version__"])
    assert sorted(importlib.import_module("vitc.api").__all__) == API


@pytest.mark.parametrize("name", sorted(SURFACE))
def test_a_public_function_keeps_its_home_and_signature(name: str) -> None:
    pytest.importorskip("torch")
    home, params = SURFACE[name]
    function = getattr(vitc, name)
    assert function.__module__ == home
    assert function is getattr(importlib.import_module(home), name)
    got = [(p.name, p.kind.name, p.default) for p in inspect.signature(function).parameters.values()]
    assert got == params


def _top_level_functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}


def test_no_other_module_defines_a_public_name() -> None:
    """A second `load_model` or `save_checkpoint` elsewhere in vitc is the one a user imports by mistake. The
    CLI's modules are exempt: their functions are the commands (`vitc predict`), which no one imports."""
    homes = {str(Path(*home.split(".")).with_suffix(".py")) for home, _ in SURFACE.values()}
    clashes = {
        str(path.relative_to(ROOT)): sorted(_top_level_functions(path) & set(SURFACE))
        for path in sorted((ROOT / "vitc").rglob("*.py"))
        if str(path.relative_to(ROOT)) not in homes and "cli" not in path.relative_to(ROOT).parts
    }
    assert {path: names for path, names in clashes.items() if names} == {}


@pytest.mark.parametrize(("old", "new"), [("load_model", "read_checkpoint"), ("save_checkpoint", "write_checkpoint")])
def test_the_old_checkpoint_names_still_import_with_a_warning_naming_the_public_one(old: str, new: str) -> None:
    pytest.importorskip("torch")
    checkpoint = importlib.import_module("vitc.checkpoint")
    with pytest.warns(FutureWarning, match=rf"vitc\.checkpoint\.{old} is deprecated: it is vitc\.checkpoint\.{new}"):
        alias = getattr(checkpoint, old)
    assert alias is getattr(checkpoint, new)
    with pytest.warns(FutureWarning, match=rf"the public one is vitc\.{old}\("):
        exec(f"from vitc.checkpoint import {old}", {})  # the import statement a user writes
