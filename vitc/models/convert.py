"""Import foreign checkpoints (official repos, timm, Hugging Face) into vitc's format.

Reading is the only risky part: `.pth`/`.bin` files are pickles. They are opened with
`torch.load(weights_only=True)`, which refuses anything that would need code to unpickle, and
`.safetensors` files need no unpickling at all. Key renaming is each family's pure
`checkpoint_filter_fn(state_dict, model)`, as in timm.
"""

from __future__ import annotations

import importlib
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vitc import __version__
from vitc._io import sha256_file
from vitc.checkpoint import meta_for, save_checkpoint
from vitc.errors import VitcError
from vitc.models._registry import get_model_cfg
from vitc.models.loading import build_within_limits, load_strict

_WRAPPERS = ("model", "state_dict", "model_state", "model_ema", "module")
_PREFIXES = ("module.", "model.")


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The tensors of a foreign checkpoint, unwrapped from {"model": ...}-style containers."""
    path = Path(path)
    if not path.is_file():
        raise VitcError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise VitcError(f"{path}: the file is empty")
    if path.suffix == ".safetensors":
        from vitc.checkpoint import load_state_dict

        return load_state_dict(path)
    try:
        obj: Any = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "GLOBAL" in str(exc):  # weights_only refused a global: the pickle wants to import and call code
            raise VitcError(f"{path}: refused, unpickling it would run code (only plain weights are accepted)") from exc
        raise VitcError(f"{path}: not a readable PyTorch checkpoint (corrupt pickle)") from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        raise VitcError(f"{path}: not a readable PyTorch checkpoint (truncated or another format)") from exc
    return _unwrap(obj, path)


def _unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    for _ in range(3):  # {"model": {...}} or {"state_dict": {"module.x": ...}}
        if isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
            inner = next((obj[k] for k in _WRAPPERS if isinstance(obj.get(k), dict)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise VitcError(f"{path}: no state dict of tensors found in the file")
    if not all(isinstance(k, str) for k in obj):
        raise VitcError(
            f"{path}: the state dict's keys are not all names (found {type(next(iter(obj))).__name__} keys)"
        )
    for prefix in _PREFIXES:
        if all(k.startswith(prefix) for k in obj):
            obj = {k[len(prefix) :]: v for k, v in obj.items()}
    return obj


def check_tensors(state_dict: dict[str, torch.Tensor], model: nn.Module, source: str) -> None:
    """Refuse what a conversion would otherwise change silently: a float tensor of the model given as
    complex, integer or boolean values, values that are NaN or Inf, or a tensor of another rank."""
    expected = model.state_dict()
    for key, tensor in state_dict.items():
        target = expected.get(key)
        if target is not None and target.is_floating_point() and not tensor.is_floating_point():
            kind = str(tensor.dtype).removeprefix("torch.")
            raise VitcError(f"{source}: tensor {key} holds {kind} values where {model.vitc_name} has floats")
        if tensor.is_floating_point() and not bool(tensor.isfinite().all()):
            what = "NaN" if bool(tensor.isnan().any()) else "Inf"
            raise VitcError(f"{source}: tensor {key} holds {what} values")
        if target is not None and target.dim() != tensor.dim():
            raise VitcError(
                f"{source}: tensor {key} has {tensor.dim()} dimensions, {model.vitc_name}'s has {target.dim()}"
            )


def convert_state_dict(
    state_dict: dict[str, torch.Tensor], model: nn.Module, source: str = "weights"
) -> dict[str, torch.Tensor]:
    """Apply the model family's `checkpoint_filter_fn` (key renames, position-embedding resampling)."""
    family = get_model_cfg(model).family
    module = importlib.import_module(f"vitc.models.{family}")
    try:
        return module.checkpoint_filter_fn(state_dict, model)
    except (ValueError, IndexError, RuntimeError, KeyError) as exc:  # e.g. a position embedding of odd shape
        raise VitcError(f"{source}: cannot adapt these weights to {model.vitc_name} ({exc})") from exc


def import_checkpoint(
    source: str | os.PathLike[str],
    model_name: str,
    out_dir: str | os.PathLike[str],
    force: bool = False,
    **overrides: Any,
) -> Path:
    """Convert `source` into `out_dir/model.safetensors` for `model_name` (strict: every key must fit)."""
    target = Path(out_dir) / "model.safetensors"
    if target.exists() and not force:
        raise VitcError(f"{target} exists; pass --force to replace it")
    model = build_within_limits(model_name, overrides, str(source))
    state_dict = read_state_dict(source)
    check_tensors(state_dict, model, str(source))
    state_dict = convert_state_dict(state_dict, model, str(source))
    load_strict(model, state_dict, source=str(source))
    provenance = {
        "source": Path(source).name,
        "source_sha256": sha256_file(source),
        "imported_by": f"vitc {__version__}",
    }
    meta = meta_for(model, provenance=provenance)
    return save_checkpoint(target, model, meta)


__all__ = ["convert_state_dict", "get_model_cfg", "import_checkpoint", "read_state_dict"]
