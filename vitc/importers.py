"""Import foreign checkpoints (official repos, timm, Hugging Face) into vitc's format.

Reading is the only risky part: `.pth`/`.bin` files are pickles. They are opened with
`torch.load(weights_only=True)`, which refuses anything that would need code to unpickle (timm's and
DeiT's training checkpoints store their command line, an argparse.Namespace: that one class is let
through, as data), and `.safetensors` files need no unpickling at all. Key renaming is each family's pure
`checkpoint_filter_fn(state_dict, model)`, as in timm.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import pickle
import re
import sys
import zipfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vitc import __version__
from vitc._io import refuse_to_replace, sha256_file
from vitc.artifacts.model_cfg import ModelCfg
from vitc.artifacts.preprocess import check_crop_mode, check_crop_pct, check_norm, eval_resize, resolve_preprocess
from vitc.checkpoint import MADE_FROM_CHECKPOINTS, meta_for, write_checkpoint
from vitc.downloads import (
    HF_SQUASH_FROM,
    class_names_named_by,
    cvt_args_named_by,
    hf_processor_size,
    num_classes_named_by,
    preprocess_named_by,
    weights_file,
)
from vitc.errors import VitcError
from vitc.limits import MAX_MODEL_BYTES
from vitc.models._registry import get_model_cfg, list_models, model_cfg, per_channel, registered_module
from vitc.models.loading import (
    adapt_input_channels,
    build_within_limits,
    classifier_differs,
    load_strict,
    with_fresh_classifier,
)

_WRAPPERS = ("model", "state_dict", "model_state", "module")
_EMA_WRAPPERS = ("state_dict_ema", "model_ema")  # timm's CheckpointSaver; DeiT's and ConViT's main.py
_SAFE_GLOBALS = [argparse.Namespace]  # a training script's `args`: attribute values only, no code runs
_PREFIXES = ("module.", "model.")
# what `--set` gives an import's evaluation transform, not its model
EVALUATION_SETTINGS = ("crop_pct", "crop_mode", "mean", "std")


def read_state_dict(
    path: str | os.PathLike[str], ema: bool = True, say: Callable[[str], None] | None = None
) -> dict[str, torch.Tensor]:
    """The tensors of a foreign checkpoint, unwrapped from {"model": ...}-style containers: the EMA weights
    where the file has them, as timm's load_checkpoint (use_ema=True), unless `ema` is False. `say` receives
    the line that names the entry taken when the file holds EMA weights."""
    path = Path(path)
    if not path.is_file():
        raise VitcError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise VitcError(f"{path}: the file is empty")
    if path.suffix == ".safetensors":
        from vitc.checkpoint import load_state_dict

        return load_state_dict(path)
    made = MADE_FROM_CHECKPOINTS.get(path.suffix.lower())
    if made is not None:  # read as a pickle it was "corrupt"
        raise VitcError(f"{path} is {made}, not weights: name the checkpoint or weights file it was made from")
    try:
        with _allowing(_SAFE_GLOBALS):
            obj: Any = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        refused = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if refused:  # weights_only refused a global: the pickle wants to import it (and maybe call it)
            raise VitcError(
                f"{path}: refused, unpickling it would import {refused.group(1)} (only tensors, plain values and "
                "argparse.Namespace are read: a pickled class or function can run code)"
            ) from exc
        raise VitcError(f"{path}: not a readable PyTorch checkpoint (corrupt pickle)") from exc
    except (IndexError, KeyError, TypeError) as exc:  # torch's weights-only unpickler on a garbled opcode stream
        raise VitcError(f"{path}: not a readable PyTorch checkpoint (corrupt pickle)") from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        raise VitcError(f"{path}: not a readable PyTorch checkpoint (truncated or another format)") from exc
    return _unwrap(obj, path, ema, say)


@contextlib.contextmanager
def _allowing(safe: list[Any]) -> Iterator[None]:
    """`safe` allowed to `torch.load(weights_only=True)` for the duration: torch's own context manager from
    2.5; torch 2.4 (the minimum) has only the process-wide list, which is restored after (from a copy: 2.4's
    get_safe_globals returns the list itself, which add_safe_globals extends in place)."""
    serialization = torch.serialization
    if hasattr(serialization, "safe_globals"):
        with serialization.safe_globals(safe):
            yield
        return
    before = list(serialization.get_safe_globals())
    serialization.add_safe_globals(safe)
    try:
        yield
    finally:
        serialization.clear_safe_globals()
        serialization.add_safe_globals(before)


def _unwrap(
    obj: Any, path: Path, ema: bool = True, say: Callable[[str], None] | None = None
) -> dict[str, torch.Tensor]:
    for _ in range(3):  # {"model": {...}} or {"state_dict": {"module.x": ...}, "state_dict_ema": {...}}
        if isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
            entry = _entry(obj, path, ema, say)
            if entry is None:
                break
            obj = obj[entry]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise VitcError(f"{path}: no state dict of tensors found in the file")
    if not all(isinstance(k, str) for k in obj):
        raise VitcError(
            f"{path}: the state dict's keys are not all names (found {type(next(iter(obj))).__name__} keys)"
        )
    for prefix in _PREFIXES:
        if all(k.startswith(prefix) for k in obj):
            obj = {k[len(prefix) :]: v for k, v in obj.items()}
    _check_sizes(obj, path)
    return obj


def _entry(container: dict[Any, Any], path: Path, ema: bool, say: Callable[[str], None] | None) -> str | None:
    """The entry of `container` that holds the weights: its EMA weights first, as timm's load_checkpoint takes
    them (what its train.py --initial-checkpoint and validate.py load), unless `ema` is False."""
    averaged = next((k for k in _EMA_WRAPPERS if isinstance(container.get(k), dict)), None)
    plain = next((k for k in _WRAPPERS if isinstance(container.get(k), dict)), None)
    if averaged is None:
        return plain
    if not ema:
        if plain is None:
            raise VitcError(f"{path} holds only EMA weights ({averaged}): import it without --no-ema")
        if say:
            say(f"{path.name}: {plain}, not its EMA weights ({averaged}), as --no-ema asks")
        return plain
    if say:
        other = f"; vitc import --no-ema takes {plain}" if plain else ", the only weights it holds"
        say(f"{path.name}: {averaged} (the EMA weights, as timm loads them){other}")
    return averaged


def _check_sizes(state_dict: dict[str, torch.Tensor], path: Path) -> None:
    """A pickled tensor is a view (shape, strides) of a stored buffer: a zero stride repeats a few
    stored bytes into any shape, which the first copy (a finiteness check, a resampling) would
    allocate. Every tensor must be backed by its own bytes, and all of them within MAX_MODEL_BYTES."""
    total = 0
    for key, tensor in state_dict.items():
        claimed = tensor.numel() * tensor.element_size()
        stored = tensor.untyped_storage().nbytes()
        if claimed > stored:
            shape = "×".join(map(str, tensor.shape))
            raise VitcError(
                f"{path}: tensor {key} claims {shape} values ({claimed:,} bytes) but the file stores "
                f"{stored:,} bytes for it (a zero-stride view); refused"
            )
        total += claimed
    if total > MAX_MODEL_BYTES:
        raise VitcError(f"{path}: the tensors claim {total / 2**30:.1f} GiB, over {MAX_MODEL_BYTES >> 30} GiB; refused")


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
    """Apply the `checkpoint_filter_fn` of the module that registered the model (key renames, resampling)."""
    module = sys.modules[registered_module(model.vitc_name)]
    try:
        return module.checkpoint_filter_fn(state_dict, model)
    except (ValueError, IndexError, RuntimeError, KeyError) as exc:  # e.g. a position embedding of odd shape
        raise VitcError(f"{source}: cannot adapt these weights to {model.vitc_name} ({exc})") from exc


def layout_of(
    state_dict: dict[str, torch.Tensor], family: str, source: Path | None = None
) -> tuple[str, dict[str, Any]]:
    """(source format, constructor arguments that format implies).

    Hugging Face's CvT uses exact erf-GELU where Microsoft's release uses QuickGELU: the same
    weights only give Hugging Face's logits with act="gelu", so the layout decides it. A Hugging Face
    CvT of a shape no registered CvT has takes its architecture from the config.json beside `source`
    (`cvt_args_named_by`), as `CvtForImageClassification.from_pretrained` builds it.
    """
    if any(k.startswith(("cvt.", "encoder.stages.")) for k in state_dict):
        if family != "cvt":
            return "huggingface", {}
        shape = cvt_args_named_by(source) if source is not None else None
        return "huggingface", {"act": "gelu", **(shape or {})}
    return "official/timm", {}


def convert_file(
    source: str | os.PathLike[str],
    model_name: str,
    say: Callable[[str], None] | None = None,
    ema: bool = True,
    fresh_head: bool = False,
    **overrides: Any,
) -> tuple[nn.Module, str, Path]:
    """`model_name` built and loaded from a foreign file or Hugging Face folder, strictly (every key must
    fit); returns (model, source format, weights file). `say` receives one line per choice made for the user;
    `ema` False takes a training checkpoint's plain weights over its EMA ones; `fresh_head` keeps the model's
    own classifier where the file's has another class count (timm's `num_classes` with pretrained weights).
    crop_pct and crop_mode in `overrides` set the evaluation transform (`evaluated_as`)."""
    source = weights_file(source)
    given = {key: overrides.pop(key) for key in EVALUATION_SETTINGS if key in overrides}
    chans = {"in_chans": overrides["in_chans"]} if isinstance(overrides.get("in_chans"), int) else {}
    resolve_preprocess(given, model=model_cfg(model_name, **chans).to_record(), source="--set")  # before any reading
    state_dict = read_state_dict(source, ema, say)
    layout, implied = layout_of(state_dict, model_cfg(model_name).family, source)
    taken = {key: value for key, value in implied.items() if key not in overrides}
    overrides.update(taken)
    if say and "act" in taken:
        say(f"{source.name}: Hugging Face layout, so act={taken.pop('act')!r} (as it computes; --set act=… overrides)")
    if say and taken:  # a Hugging Face CvT of its own shape
        shape = ", ".join(f"{key}={value}" for key, value in taken.items())
        say(f"{source.name}: its folder's config.json gives {shape} (--set KEY=… overrides)")
    if say and "dist_token" in state_dict:
        say(
            f"{source.name}: a distilled DeiT; its distillation token and head (dist_token, head_dist) are left "
            "out, so this is the plain DeiT network, whose logits are not the distilled model's (both heads' mean)"
        )
    named = num_classes_named_by(source)
    if "num_classes" not in overrides and named is not None and named != model_cfg(model_name).num_classes:
        overrides["num_classes"] = named
        if say:
            say(f"{source.name}: num_classes={named} (its folder's config.json says; --set num_classes=N overrides)")
    trained_at = None if "img_size" in overrides else trained_size(source, state_dict, model_name, overrides)
    if trained_at is not None:
        overrides["img_size"], why = trained_at
        if say:
            say(f"{source.name}: img_size={overrides['img_size']} ({why}; --img-size N resamples to another)")
    model = build_within_limits(model_name, overrides, str(source))
    with same_family(state_dict, model, str(source)):
        check_tensors(state_dict, model, str(source))
        state_dict = convert_state_dict(state_dict, model, str(source))
        state_dict, adapted = adapt_input_channels(model, state_dict, str(source))
        if fresh_head and classifier_differs(model, state_dict):
            state_dict = with_fresh_classifier(model, state_dict)
        _load_with_count_hint(model, state_dict, str(source))
    if say and adapted:
        say(f"{source.name}: {adapted}")
    model.vitc_cfg = evaluated_as(source, get_model_cfg(model), given, say)
    return model, layout, source


def evaluated_as(
    source: Path, cfg: ModelCfg, given: dict[str, Any], say: Callable[[str], None] | None = None
) -> ModelCfg:
    """`cfg` with the evaluation transform its folder records (`recorded_preprocess`: timm's pretrained_cfg, a
    Hugging Face processor's mean, std, crop_pct), as timm's resolve_data_config and Hugging Face's processor
    take it. Hugging Face's CvT processor (ConvNextImageProcessor) squashes the image to size × size from 384 up,
    its crop_pct unused, so crop_mode "squash" at crop_pct 1 there. What the user `given` (--set crop_mode=center,
    --set mean=[...]) comes first, key by key. `say` receives a line for each thing taken or left."""
    recorded, origin = recorded_preprocess(source, cfg)
    resized = recorded.pop("interpolation", cfg.interpolation)
    implied: dict[str, Any] = {}
    if cfg.family == "cvt" and hf_processor_size(source) is not None and cfg.input_size[1] >= HF_SQUASH_FROM:
        implied = {"crop_mode": "squash", "crop_pct": 1.0}
    prep = resolve_preprocess(given, {**recorded, **implied}, cfg.to_record(), source="--set")
    if say is None:
        return cfg.evaluated_by(prep)
    taken = {
        k: v for k, v in recorded.items() if k not in given and k not in implied and getattr(prep, k) != getattr(cfg, k)
    }
    if taken:
        settings = ", ".join(
            f"{key}={list(value) if isinstance(value, tuple) else value}" for key, value in taken.items()
        )
        say(f"{source.name}: {settings} (what its {origin} records for these weights; --set key=… overrides)")
    if implied and prep.crop_mode == "squash" and "crop_mode" not in given:
        size = cfg.input_size[1]
        say(
            f"{source.name}: crop_mode='squash', crop_pct={prep.crop_pct:g} (Hugging Face's CvT processor squashes "
            f"the image to {size}×{size} from {HF_SQUASH_FROM} up, uncropped; --set crop_mode=center overrides)"
        )
    if resized != cfg.interpolation:
        say(
            f"{source.name}: its {origin} resizes {resized}; vitc evaluates {cfg.interpolation} (its only resize "
            f"filter), so the checkpoint records {cfg.interpolation} and its logits may differ a little from theirs"
        )
    return cfg.evaluated_by(prep)


def recorded_preprocess(source: Path, cfg: ModelCfg) -> tuple[dict[str, Any], str]:
    """What the folder of `source` records of its evaluation transform (`preprocess_named_by`) that vitc can
    honour for `cfg`'s model: finite mean and std (std above 0) of 1 or 3 values, as `cfg`'s channels take
    them (`per_channel`), crop_pct in (0, 1], a crop_mode vitc has, an interpolation named; (settings, file)."""
    found, origin = preprocess_named_by(source)
    kept: dict[str, Any] = {}
    for key, value in found.items():
        try:
            if key in ("mean", "std"):
                kept[key] = per_channel(check_norm(value, 3, key, positive=key == "std"), cfg.input_size[0])
            elif key == "crop_pct":
                kept[key] = check_crop_pct(value)
                eval_resize(cfg.input_size[1], value)  # not so small that images grow past every limit
            elif key == "crop_mode":
                kept[key] = check_crop_mode(value)
            elif isinstance(value, str):
                kept[key] = value
        except VitcError:
            continue
    return kept, origin


def other_family(source: str, model_name: str, family: str, held: str | None = None) -> VitcError:
    """Weights of `family` (of the model `held`, where the file names it) given for `model_name` of another
    family: the one line `vitc import` and `vitc train --pretrained` say."""
    mine = model_cfg(model_name).family
    what, use = (
        (f"{held} weights ({family} family)", f"--model {held}")
        if held
        else (f"{family} weights (by their tensor names)", f"--model with a {family} model (vitc models '{family}*')")
    )
    return VitcError(
        f"{source} holds {what}, not {model_name} ({mine} family): use {use} or weights of the {mine} family"
    )


@contextlib.contextmanager
def same_family(state_dict: dict[str, torch.Tensor], model: nn.Module, source: str) -> Iterator[None]:
    """Weights of another family fail to load on a detail (a token grid that is not square, a table of
    keys): a failure inside is said as the family mismatch it is, when the weights' tensor names are
    another family's."""
    try:
        yield
    except VitcError as exc:
        theirs = family_of_weights(state_dict, model)
        if theirs is None:
            raise
        raise other_family(source, model.vitc_name, theirs) from exc


def family_of_weights(state_dict: dict[str, torch.Tensor], model: nn.Module) -> str | None:
    """The family whose tensor names (block numbers aside) the weights share most, when it is not `model`'s
    (each other family's first model is built on the meta device to list its names); Hugging Face's layout
    is CvT's. None when `model`'s family fits as well as any."""
    mine = model_cfg(model.vitc_name).family
    if layout_of(state_dict, mine)[0] == "huggingface":
        return None if mine == "cvt" else "cvt"
    names = _name_patterns(state_dict)

    def fit(keys: Iterable[str]) -> float:
        theirs = _name_patterns(keys)
        return len(names & theirs) / max(len(names | theirs), 1)

    scores = {mine: fit(model.state_dict())}
    for family in dict.fromkeys(model_cfg(name).family for name in list_models()):
        if family not in scores:
            with torch.device("meta"):
                probe = build_within_limits(list_models(family=family)[0], {}, family)
            scores[family] = fit(probe.state_dict())
    best = max(scores, key=lambda family: scores[family])  # a tie keeps `model`'s own family
    return None if best == mine else best


def _name_patterns(keys: Iterable[str]) -> set[str]:
    """Tensor names with their block and stage numbers as #: the names a family's models all share."""
    return {re.sub(r"(?<=\.)\d+(?=\.)", "#", key) for key in keys}


def trained_size(
    source: Path, state_dict: dict[str, torch.Tensor], model_name: str, overrides: dict[str, Any]
) -> tuple[int, str] | None:
    """(input size, why) when the weights were trained at another size than the model's default: the grid of
    their position embedding (DeiT, ConViT, SP-ViT at 384: 24×24 patches of 16), or what their folder's
    config says (CvT has no position embedding). None when they match the default or nothing says."""
    from vitc.downloads import image_size_named_by

    with torch.device("meta"):
        probe = build_within_limits(model_name, overrides, str(source))
    default = get_model_cfg(probe).input_size[1]
    pos_embed = state_dict.get("pos_embed")
    grid = getattr(getattr(probe, "patch_embed", None), "grid_size", None)
    own = getattr(probe, "pos_embed", None)
    if isinstance(pos_embed, torch.Tensor) and pos_embed.dim() == 3 and grid is not None and own is not None:
        prefix = own.shape[1] - grid[0] * grid[1] + int("dist_token" in state_dict)  # class (+ distillation) token
        tokens = pos_embed.shape[1] - prefix
        side = math.isqrt(max(tokens, 0))
        if side * side == tokens and side != grid[0]:
            patch = default // grid[0]
            return side * patch, f"the weights' position embedding is a {side}×{side} grid of {patch}-pixel patches"
        return None
    named = image_size_named_by(source)
    if named is not None and named != default:
        return named, "what the folder's config says they were trained at"
    return None


def _load_with_count_hint(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """`load_strict`, whose table of misfits ends with the setting that fits a classifier of another class
    count than the model's (a fine-tuned file without a config.json saying its count)."""
    from vitc.models.loading import KeyMismatchError

    try:
        load_strict(model, state_dict, source=source)
    except KeyMismatchError as exc:
        rows = state_dict.get("head.weight")
        count = get_model_cfg(model).num_classes
        if not isinstance(rows, torch.Tensor) or rows.dim() != 2 or rows.shape[0] == count:
            raise
        theirs = rows.shape[0]
        hint = (
            f"its classifier has {theirs} classes, {model.vitc_name} {count}: load it with num_classes={theirs} "
            f"(vitc import: --set num_classes={theirs})"
        )
        raise KeyMismatchError(f"{exc}; {hint}", exc.report) from None


def folder_classes(source: Path, model: nn.Module) -> list[str] | None:
    """The classes the folder of `source` names (timm's label_names, Hugging Face's id2label), when they are
    as many as the model's classifier rows: in those rows' order."""
    names = class_names_named_by(source)
    return names if names is not None and len(names) == get_model_cfg(model).num_classes else None


def import_checkpoint(
    source: str | os.PathLike[str],
    model_name: str,
    out_dir: str | os.PathLike[str],
    force: bool = False,
    say: Callable[[str], None] | None = None,
    ema: bool = True,
    class_names: list[str] | None = None,
    **overrides: Any,
) -> Path:
    """Convert `source` (a file, or a Hugging Face folder) into `out_dir/model.safetensors` for `model_name`,
    with the class names its folder's config.json gives, or `class_names` (its rows' classes) instead."""
    target = Path(out_dir) / "model.safetensors"
    refuse_to_replace((target,), force)
    given = Path(source)
    model, layout, source = convert_file(source, model_name, say, ema, **overrides)
    provenance = {  # a folder's file under the folder's name as given (model.safetensors alone says nothing)
        "source": str(given / source.name) if given.is_dir() else source.name,
        "source_sha256": sha256_file(source),
        "source_format": layout,
        "imported_by": f"vitc {__version__}",
    }
    named = folder_classes(source, model)  # a timm hub or Hugging Face folder names its classes
    if class_names is not None:
        count = get_model_cfg(model).num_classes
        if len(class_names) != count:
            raise VitcError(f"--class-names: {len(class_names)} names for a classifier of {count} classes")
        if say and named is not None and named != class_names:
            say(f"{source.name}: class names from --class-names, not the {len(named)} its config.json gives")
        named = list(class_names)
    return write_checkpoint(target, model, meta_for(model, class_names=named, provenance=provenance))


__all__ = [
    "convert_file",
    "convert_state_dict",
    "folder_classes",
    "get_model_cfg",
    "import_checkpoint",
    "layout_of",
    "read_state_dict",
]
