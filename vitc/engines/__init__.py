"""Inference backends behind `vitc bench` and `vitc build`: PyTorch, ONNX Runtime, TensorRT.

Each backend is a runner (see `vitc.engines.base`) in its own module; the registry below names
them as strings so that `import vitc.engines` imports no backend, and in particular no torch:
`vitc bench --engine x.plan` must run on a Jetson that has only numpy, TensorRT and cuda-python.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from vitc.artifacts.sidecar import PLAN_SUFFIXES
from vitc.engines.base import BaseRunner, TensorMeta
from vitc.errors import VitcError

# backend name -> (module, class); resolved on first use
RUNNERS: dict[str, tuple[str, str]] = {
    "torch": ("vitc.engines.torch_runner", "TorchRunner"),
    "onnxrt": ("vitc.engines.onnxrt", "OnnxRuntimeRunner"),
    "tensorrt": ("vitc.engines.trt_runner", "TensorRTRunner"),
}
# artifact suffix -> backend
SUFFIXES: dict[str, str] = {".onnx": "onnxrt", **dict.fromkeys(PLAN_SUFFIXES, "tensorrt")}
# the torch runner's --autocast -> torch dtype name (None: no autocast); here, torch-free, for bench to check
AUTOCAST: dict[str, str | None] = {"fp32": None, "fp16": "float16", "bf16": "bfloat16"}


def runner_class(backend: str) -> type[BaseRunner]:
    """The runner class registered under `backend`, imported now."""
    if backend not in RUNNERS:
        raise VitcError(f"unknown backend {backend!r} (known: {', '.join(RUNNERS)})")
    module, cls = RUNNERS[backend]
    runner: type[BaseRunner] = getattr(importlib.import_module(module), cls)
    return runner


def backend_for_path(path: str | Path) -> str:
    """`.onnx` → onnxrt, `.plan`/`.engine`/`.trt` → tensorrt."""
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        known = ", ".join(sorted(SUFFIXES))
        raise VitcError(f"{path}: cannot tell the backend from the suffix {suffix or '(none)'!r} (known: {known})")
    return SUFFIXES[suffix]


def runner_for_path(path: str | Path, **options: Any) -> BaseRunner:
    """A runner for an artifact file, chosen by its suffix."""
    path = Path(path)
    if not path.is_file():
        raise VitcError(f"{path}: no such file")
    return runner_class(backend_for_path(path))(path, **options)


__all__ = [
    "AUTOCAST",
    "RUNNERS",
    "SUFFIXES",
    "BaseRunner",
    "TensorMeta",
    "backend_for_path",
    "runner_class",
    "runner_for_path",
]
