"""One home for optional heavy dependencies, imported on first use.

Each optional package is named here once, with the extra that provides it, so a missing one
gives the same clear message everywhere instead of an ImportError deep in a stack.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from vitc.errors import VitcError

# package -> the pip extra (or install hint) that provides it
OPTIONAL = {
    "torch": "pip install torch==2.13.0 && pip install 'vitc[torch]'",
    "sklearn": "pip install 'vitc[torch]'",
    "PIL": "pip install 'vitc[torch]'",
    "matplotlib": "pip install 'vitc[torch]'",
    "tensorboard": "pip install 'vitc[tensorboard]'",
    "onnx": "pip install 'vitc[onnx]'",
    "onnxruntime": "pip install 'vitc[onnx]'",
    "onnxscript": "pip install onnxscript",
    "transformers": "pip install transformers",
    "tensorrt": "install TensorRT from NVIDIA (JetPack ships it on Jetson)",
    "cuda": "pip install 'vitc[trt]'",
    "pycuda": "pip install pycuda",
}


def has_module(name: str) -> bool:
    """True when `name` can be imported, without importing it."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def lazy_import(name: str) -> ModuleType:
    """Import an optional dependency or raise a VitcError that says how to install it."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        root = name.split(".")[0]
        hint = OPTIONAL.get(root, f"pip install {root}")
        raise VitcError(f"this command needs {root!r}, which is not installed ({hint})") from exc


def pyplot() -> ModuleType:
    """matplotlib.pyplot on the Agg backend: figures are written to files, never shown."""
    matplotlib = lazy_import("matplotlib")
    matplotlib.use("Agg")
    return lazy_import("matplotlib.pyplot")
