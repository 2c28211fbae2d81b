"""Fixtures of tests/export and tests/quant: a briefly trained convit_micro and its exports, built once per session."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


def _shared():
    name = "_vitc_export_test_shared"
    if name not in sys.modules:
        path = Path(__file__).resolve().parents[1] / "export" / "_shared.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


MICRO = _shared().MICRO


@pytest.fixture(scope="session")
def trained_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _shared().get_trained_ckpt(tmp_path_factory)


@pytest.fixture(scope="session")
def exports(trained_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """fp32 (dynamic batch 1:4:8), fp16 and int8 (static batch 8, 128 calibration images, --explain)."""
    return _shared().get_exports(trained_ckpt, tmp_path_factory)
