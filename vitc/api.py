"""The Python API a timm user expects: load a model, preprocess images as it was evaluated, predict.

    model = vitc.load_model("train/runs/convit_micro/best.safetensors")
    print(vitc.predict(model, "digit.png"))   # [("3", 0.97), ("8", 0.01), ...]; a PIL image or array too

Preprocessing is the evaluation transform `vitc eval` applies to image folders (shorter side, or both
with crop_mode "squash", to size / crop_pct, bicubic, centre crop, then the checkpoint's mean and std),
read from the model's own config, so a checkpoint needs no settings beside it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vitc._modules import eval_mode
from vitc.data.images import is_one_image, prepare
from vitc.engines.classify import Prediction, top_classes
from vitc.errors import VitcError


def load_model(path: str | os.PathLike[str], model_name: str | None = None, **overrides: Any) -> nn.Module:
    """A model in eval mode from a vitc checkpoint, or from any file `vitc import` reads. A timm hub or
    Hugging Face folder's config.json names its model; other files need it named:
    `load_model("convit_tiny.pth", "convit_tiny")`; a vitc checkpoint names its own, and a name given
    with one must be that one. Class names (and a folder's class count) come with a vitc checkpoint or a timm
    hub or Hugging Face folder's config.json (label_names, id2label); otherwise classes are named by their index.
    `num_classes` other than the weights' gives a fresh classifier of that many classes, as timm's
    `create_model(name, pretrained=True, num_classes=N)`: the rest loaded, the head to fine-tune, unnamed."""
    from vitc._io import read_safetensors_metadata
    from vitc.artifacts.preprocess import resolve_preprocess
    from vitc.artifacts.resume import refuse_resume_state
    from vitc.checkpoint import META_KEY, read_checkpoint, read_meta
    from vitc.downloads import folder_model, weights_file
    from vitc.importers import EVALUATION_SETTINGS, convert_file, folder_classes

    file = weights_file(path)
    metadata = read_safetensors_metadata(file) if file.suffix == ".safetensors" else {}
    refuse_resume_state(file, metadata)
    if META_KEY in metadata:
        if model_name is not None:
            _check_model_name(model_name, read_meta(file).model, file)
        given = {key: overrides.pop(key) for key in EVALUATION_SETTINGS if key in overrides}
        classes = overrides.pop("num_classes", None)
        model, meta = read_checkpoint(file, **overrides)
        if given:  # crop_pct / crop_mode: the evaluation transform, not the model
            model.vitc_cfg = model.vitc_cfg.evaluated_by(resolve_preprocess(given, model.vitc_cfg.to_record()))
        model.vitc_class_names = meta.class_names
        if classes is not None and classes != meta.cfg.num_classes:
            model.reset_classifier(classes)  # records the new head, so the model saves and loads as it is
            model.vitc_class_names = None
            model.eval()
        return model
    model_name = model_name or folder_model(file)
    if model_name is None:
        raise VitcError(
            f"{file} is not a vitc checkpoint and no config.json beside it names a vitc model: name it, "
            "e.g. vitc.load_model(path, 'convit_tiny')"
        )
    model, _, file = convert_file(file, model_name, fresh_head="num_classes" in overrides, **overrides)
    model.vitc_class_names = folder_classes(file, model)
    return model.eval()


def save_checkpoint(path: str | os.PathLike[str], model: nn.Module, class_names: Sequence[str] | None = None) -> Path:
    """Write `model` (from `create_model` or `load_model`, fine-tuned in one's own loop) as a vitc checkpoint
    that every command reads: safetensors weights with the model's description in the header. `class_names`
    name its head's rows (default: those the model was loaded with, while its head keeps their count)."""
    from vitc.checkpoint import meta_for, write_checkpoint

    fields = {} if class_names is None else {"class_names": [str(name) for name in class_names]}
    return write_checkpoint(path, model, meta_for(model, **fields))


def _check_model_name(model_name: str, held: str, file: Path) -> None:
    """A name given with a vitc checkpoint is checked, not ignored: a misspelt or other name was passed
    over, and the checkpoint's own model loaded unsaid."""
    from vitc.models import model_cfg

    model_cfg(model_name)  # an unknown name: the zoo's error, with the closest names
    if model_name != held:
        raise VitcError(
            f"{file} is a vitc checkpoint of {held}, not {model_name}: leave the name out (the checkpoint names "
            f"its model) or name {held}"
        )


def preprocess(images: Any, model: nn.Module) -> torch.Tensor:
    """Normalised float (N, C, H, W) input for `model` from one image (a path, a PIL image, a uint8 array
    (H, W) or (H, W, C)) or a batch (a list of them, a uint8 (N, H, W, C) array): the evaluation transform
    with the model's size, crop_pct, crop_mode, mean and std, after turning a photo upright by its EXIF
    orientation, exactly as training and `vitc eval` read files."""
    from vitc.models import get_model_cfg

    return torch.from_numpy(prepare(images, get_model_cfg(model).preprocess))


@torch.no_grad()
def predict(model: nn.Module, images: Any, top_k: int = 5) -> Prediction | list[Prediction]:
    """The `top_k` classes and their probabilities: one list for one image, a list of lists for a list
    of images (or a batch tensor from `preprocess`). The model runs in eval mode; its training flags are
    given back afterwards."""
    x = images if isinstance(images, torch.Tensor) else preprocess(images, model)
    if x.dim() != 4 or not x.is_floating_point():
        raise VitcError(f"predict expects images or a float (N, C, H, W) tensor, got {x.dtype} {tuple(x.shape)}")
    param = next(model.parameters(), None)
    if param is not None:  # the model's device and float type: `model.cuda().half()` takes half inputs
        x = x.to(param.device, param.dtype if param.is_floating_point() else x.dtype)
    with eval_mode(model):  # a check in the middle of training leaves the caller's model training
        logits = model(x)
    rows = top_classes(logits.float().cpu().numpy(), getattr(model, "vitc_class_names", None), top_k)
    return rows[0] if not isinstance(images, torch.Tensor) and is_one_image(images) else rows


__all__ = ["load_model", "predict", "preprocess", "save_checkpoint"]
