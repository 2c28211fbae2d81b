"""vitc: take ConViT, CvT and SP-ViT from training to a verified TensorRT engine.

`import vitc` stays light (no torch): the runtime path on a Jetson imports the package without it.
Model-building names and the inference API (`load_model`, `preprocess`, `predict`, `save_checkpoint`:
vitc.api) are resolved lazily on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = [
    "VitcError",
    "__version__",
    "create_model",
    "list_models",
    "load_model",
    "predict",
    "preprocess",
    "save_checkpoint",
]

from vitc.errors import VitcError

if TYPE_CHECKING:  # the lazy names' real signatures for type checkers; at run time __getattr__ imports them
    from vitc.api import load_model, predict, preprocess, save_checkpoint
    from vitc.models import create_model, list_models

_LAZY = {
    "create_model": "vitc.models",
    "list_models": "vitc.models",
    "load_model": "vitc.api",
    "preprocess": "vitc.api",
    "predict": "vitc.api",
    "save_checkpoint": "vitc.api",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        from vitc._lazy import require_training

        require_training(f"vitc.{name}")

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vitc' has no attribute {name!r}")
