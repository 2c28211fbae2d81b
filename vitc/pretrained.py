"""Weights to start a run from (`vitc train --pretrained`): a vitc checkpoint or anything `vitc import` reads,
loaded into the run's model with its classifier reconciled to the run's classes (kept, its rows reordered, or
re-initialised, each said in one line), and the evaluation transform the weights were evaluated with."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vitc._io import sha256_file
from vitc._text import few_names
from vitc.artifacts.model_cfg import ModelCfg
from vitc.downloads import class_names_named_by, model_named_by, weights_file
from vitc.importers import (
    check_tensors,
    convert_state_dict,
    evaluated_as,
    layout_of,
    other_family,
    read_state_dict,
    same_family,
    trained_size,
)
from vitc.models._registry import get_model_cfg, model_cfg, per_channel
from vitc.models.layers import classifier_of
from vitc.models.loading import (
    adapt_input_channels,
    classifier_differs,
    load_strict,
    with_fresh_classifier,
)

_NOT_INHERITED = ("num_classes", "drop_path_rate", "drop_rate", "attn_drop_rate")  # img_size is: data.image_size wins


@dataclass
class Pretrained:
    """Weights to start a run from, read before the model is built (their layout can set its arguments)."""

    path: Path
    state_dict: dict[str, torch.Tensor]
    source_format: str  # "vitc checkpoint", "huggingface" or "official/timm"
    args: dict[str, Any]  # constructor arguments the file implies (a vitc checkpoint's architecture, HF's act)
    class_names: list[str] | None = None  # its classifier's rows: a vitc checkpoint's, or its folder's config.json
    model: str | None = None  # the model the file says it holds (a vitc checkpoint's, or its folder's config.json)
    evaluated: ModelCfg | None = None  # what the weights were evaluated with: a vitc checkpoint's cfg, a folder's

    @property
    def provenance(self) -> dict[str, Any]:
        """Where a run's starting weights came from, for the checkpoints it writes."""
        return {"file": str(self.path.resolve()), "sha256": sha256_file(self.path), "source_format": self.source_format}


def read_pretrained(
    source: str | os.PathLike[str], model_name: str, say: Callable[[str], None] | None = None
) -> Pretrained:
    """Read weights for `model_name`: a vitc checkpoint (same family) or anything `vitc import` reads."""
    from vitc._io import read_safetensors_metadata
    from vitc.checkpoint import META_KEY, CheckpointMeta

    path = weights_file(source)
    family = model_cfg(model_name).family
    state_dict = read_state_dict(path, say=say)  # the EMA weights of a training checkpoint, as timm
    text = read_safetensors_metadata(path).get(META_KEY) if path.suffix == ".safetensors" else None
    if text is None:
        layout, implied = layout_of(state_dict, family, path)
        trained_at = trained_size(path, state_dict, model_name, dict(implied))
        if trained_at is not None:  # fine-tuned at the size the weights were trained at, unless data says
            implied["img_size"] = trained_at[0]
        evaluated = evaluated_as(path, model_cfg(model_name, **implied), {})  # timm's pretrained_cfg, HF's processor
        named, held = class_names_named_by(path), model_named_by(path)
        return Pretrained(path, state_dict, layout, implied, named, held, evaluated)
    meta = CheckpointMeta.from_json(text, str(path))
    theirs = model_cfg(meta.model).family
    if theirs != family:
        raise other_family(str(path), model_name, theirs, meta.model)
    args = {k: v for k, v in meta.args.items() if k not in _NOT_INHERITED}
    return Pretrained(path, state_dict, "vitc checkpoint", args, meta.class_names, meta.model, meta.cfg)


def inherited_preprocess(
    pretrained: Pretrained, model_name: str, args: dict[str, Any], size: int, given: dict[str, Any]
) -> dict[str, Any]:
    """What a run of `model_name` (`args`, images of `size`) starting from `pretrained` takes of the evaluation
    transform the weights were evaluated with, as timm's train.py normalises training and validation with the
    pretrained_cfg of the weights it starts from: their mean and std (adapted to the run's channels, as
    `per_channel`), and their crop_pct and crop_mode when the run's images are the size they were evaluated at.
    Only what differs from the model's registered values (compared at the weights' channels) and what the user
    did not set (`given`): a run from weights that record the model's own values takes nothing."""
    theirs = pretrained.evaluated
    if theirs is None:
        return {}
    own = model_cfg(model_name, **{**args, "in_chans": theirs.input_size[0]})
    channels = model_cfg(model_name, **args).input_size[0]
    keys = ("mean", "std", "crop_pct", "crop_mode") if size == theirs.input_size[1] else ("mean", "std")
    taken: dict[str, Any] = {}
    for key in keys:
        value = getattr(theirs, key)
        if given.get(key) is None and value != getattr(own, key):
            taken[key] = list(per_channel(value, channels)) if key in ("mean", "std") else value
    return taken


def load_pretrained(model: nn.Module, pretrained: Pretrained, class_names: list[str] | None = None) -> str:
    """Load `pretrained` into `model` strictly, except the classifier, which keeps its fresh initialisation
    when the class count differs or the file names other classes; the same classes in another order (a timm
    or Hugging Face fine-tune, a vitc run from before timm's class order) have its rows reordered to
    `class_names`. A file naming no classes gives its rows in order. Returns the line to print.
    Weights that do not fit and say which model they hold name it (a run left at its default model)."""
    from vitc.models.loading import KeyMismatchError

    try:
        return _load_pretrained(model, pretrained, class_names)
    except KeyMismatchError as exc:
        if pretrained.model in (None, model.vitc_name):
            raise
        hint = f"; the file holds {pretrained.model} weights: use --model {pretrained.model}"
        raise KeyMismatchError(f"{exc}{hint}", exc.report) from None


def _load_pretrained(model: nn.Module, pretrained: Pretrained, class_names: list[str] | None) -> str:
    source = str(pretrained.path)
    state_dict = dict(pretrained.state_dict)
    own = model.state_dict()
    with same_family(state_dict, model, source):
        check_tensors(state_dict, model, source)
        state_dict = convert_state_dict(state_dict, model, source)
        _refuse_foreign(state_dict, own, model, source)
        state_dict, adapted = adapt_input_channels(model, state_dict, source)
    classifier = tuple(f"{module}." for module in classifier_of(model))  # re-initialised for another class count
    theirs = {k: tuple(v.shape) for k, v in state_dict.items() if k.startswith(classifier)}
    loaded = (
        f"pretrained: {len(state_dict) - len(theirs)} tensors from {pretrained.path.name} ({pretrained.source_format})"
    )
    also = f"; {adapted}" if adapted else ""
    named, ours = pretrained.class_names, class_names
    if named and ours and len(named) != len(ours):  # a config.json's names of another head say nothing of this one
        named = None
    if classifier_differs(model, state_dict):
        found = theirs.get("head.weight", (0,))[0] or "no"
        why = f"the file's classifier has {found} classes, this run {get_model_cfg(model).num_classes}"
    elif named and ours and set(named) != set(ours):
        why = f"the file's classes are {few_names(named)}, this run's {few_names(ours)}"
    elif named and ours and named != ours:  # the same classes in another order: its rows follow this run's
        row_of = {name: row for row, name in enumerate(named)}
        rows = torch.tensor([row_of[name] for name in ours])
        state_dict |= {k: state_dict[k].index_select(0, rows) for k in theirs}
        load_strict(model, state_dict, source=source)
        return (
            f"{loaded} and its classifier, rows reordered to this run's classes (the file's: {few_names(named)}){also}"
        )
    else:  # the same classes in the same order, or a file naming none: its rows are this run's classes in order
        load_strict(model, state_dict, source=source)
        unnamed = "" if named or not ours else " (the file names no classes: its rows are taken in this run's order)"
        return f"{loaded} and its classifier{unnamed}{also}"
    load_strict(model, with_fresh_classifier(model, state_dict), source=source)
    return f"{loaded}; head re-initialised ({why}){also}"


def _refuse_foreign(
    state_dict: dict[str, torch.Tensor], own: dict[str, torch.Tensor], model: nn.Module, source: str
) -> None:
    """Weights of another architecture share few names with the model: say that in words, with the table."""
    from vitc.models.loading import KeyMismatchError, compare_keys

    shared = len(own.keys() & state_dict.keys())
    if shared * 2 < len(own):
        report = compare_keys(model, state_dict)
        raise KeyMismatchError(
            f"{source} does not look like {model.vitc_name} weights: only {shared} of its {len(own)} tensors "
            f"are in the file ({report.summary()})",
            report,
        )
