"""The scripts in docs/ as modules, for the tests of their plumbing (they are not part of the vitc package)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

DOCS = Path(__file__).resolve().parents[1] / "docs"


def load_doc_script(name: str) -> ModuleType:
    """docs/<name>.py executed as a fresh module named `name` (a test may patch it freely)."""
    spec = importlib.util.spec_from_file_location(name, DOCS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
