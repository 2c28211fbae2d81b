"""vitc's checkpoint format: safetensors weights with the model's description in the header.

One file, `model.safetensors`, holds the weights and, under the header key "vitc", a JSON record:
model name, constructor arguments, data config (input size, mean/std), class names and
provenance. Everything later (export, bench, eval) rebuilds the model from it with no extra flags.
safetensors never executes code on load, so a downloaded vitc checkpoint is safe to open.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from vitc._io import atomic_write, read_safetensors_header
from vitc._modules import unwrap_model
from vitc._run_layout import BEST, CONFIG, is_run_folder, run_checkpoint
from vitc.artifacts.checkpoint_meta import META_KEY, CheckpointMeta, meta_in
from vitc.artifacts.checkpoint_meta import read_meta as read_meta  # the format's readers, here with its writers
from vitc.artifacts.manifest import manifest_paths
from vitc.artifacts.model_cfg import ModelCfg
from vitc.artifacts.preprocess import resolve_preprocess
from vitc.artifacts.sidecar import PLAN_SUFFIXES
from vitc.errors import VitcError


def meta_for(model: Any, **fields: Any) -> CheckpointMeta:
    """Metadata describing a model built by `vitc.create_model` (or a torch.compile or DDP wrapper of one).

    Class names default to the ones the model carries (`vitc.load_model` sets them): a checkpoint loaded and
    saved again keeps naming its classes. Names for another number of classes than the head's are left out.
    Provenance and `extra` are not carried over: they describe how the loaded weights were made, not these.
    """
    from vitc.models import get_model_cfg

    model = unwrap_model(model)
    cfg = get_model_cfg(model)
    if "class_names" not in fields:
        names = getattr(model, "vitc_class_names", None)
        fields["class_names"] = list(names) if names is not None and len(names) == cfg.num_classes else None
    return CheckpointMeta(model=model.vitc_name, args=dict(model.vitc_args), cfg=cfg, **fields)


def require_pooled(args: dict[str, Any], what: str) -> None:
    """A VitcError for a model that pools nothing (timm's global_pool=''): it gives every token's logits, and
    what reads a checkpoint (eval, export, compile, predict, training's loss) needs one row per image."""
    if args.get("global_pool") == "":
        raise VitcError(
            f"{what}: global_pool='' gives every token's logits, not one row per image as vitc's checkpoints and "
            "commands need: use 'token' or 'avg' (forward_features(x) gives every token)"
        )


def check_class_names(names: list[str] | None, classes: int, said: str) -> None:
    """Class names name a head's rows: as many as its outputs (a model without a head, 0 classes, has none)."""
    if names is not None and classes > 0 and len(names) != classes:
        raise VitcError(f"{said} {len(names):,} class names for a head of {classes} outputs")


def write_checkpoint(path: str | os.PathLike[str], model: Any, meta: CheckpointMeta | None = None) -> Path:
    """Write the model's weights and metadata atomically to `path` (a .safetensors file). A torch.compile or
    DDP wrapper is saved as the model inside it, whose keys `read_checkpoint` reads. The public form, which
    takes class names rather than a `CheckpointMeta`, is `vitc.save_checkpoint`."""
    from safetensors.torch import save_file

    from vitc.models.layers import classifier_of
    from vitc.models.loading import KeyMismatchError, check_skeleton

    model = unwrap_model(model)
    compiled_for = getattr(model, "vitc_compiled", None)
    if compiled_for is not None:
        raise VitcError(
            f"{path}: not saved: this model was rewritten by vitc.compile.compile_model (for {compiled_for}), whose "
            "static tables no checkpoint holds: save the model you compiled, or write a .pt2 with vitc compile --out"
        )
    meta = meta or meta_for(model)
    require_pooled(meta.args, str(path))
    check_class_names(meta.class_names, meta.cfg.num_classes, f"{path}: not saved:")  # read_checkpoint would refuse it
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    try:
        # read_checkpoint would refuse it
        check_skeleton(meta.model, meta.args, f"{path}: not saved: the model", shapes)
    except KeyMismatchError as exc:
        heads = tuple(f"{module}." for module in classifier_of(model))
        report = exc.report
        if report.missing or report.unexpected or not all(k.startswith(heads) for k, *_ in report.wrong_shape):
            raise
        classes = report.wrong_shape[0][2][0]
        raise KeyMismatchError(
            f"{exc}: a head replaced by hand is not recorded; model.reset_classifier({classes}) replaces it and "
            "records its class count",
            report,
        ) from None
    with atomic_write(path) as tmp:
        save_file(tensors, str(tmp), metadata={META_KEY: meta.to_json()})
    return Path(path)


def load_state_dict(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The tensors of a safetensors file (validated header first, so truncation is a clear error)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    read_safetensors_header(path)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise VitcError(f"{path}: cannot read the weights ({exc})") from exc


def read_checkpoint(path: str | os.PathLike[str], **overrides: Any) -> tuple[Any, CheckpointMeta]:
    """Rebuild a model from a vitc checkpoint and load its weights strictly; returns (model, meta). The public
    form, which returns the model (its class names on it) and reads foreign files too, is `vitc.load_model`.

    The file's claims are checked before anything is allocated: the model described by its metadata
    is built on the meta device first and must have exactly the tensors of its header.
    """
    from vitc.models import get_model_cfg
    from vitc.models.loading import adapt_input_channels, build_within_limits, load_strict, resample_to_grid

    header = read_safetensors_header(path)
    meta = meta_in(header, path)
    classes = overrides.get("num_classes", meta.cfg.num_classes)
    if classes != meta.cfg.num_classes:
        raise VitcError(
            f"{path} has a head of {meta.cfg.num_classes} classes, not {classes}: load it as it is, then "
            f"model.reset_classifier({classes}) gives a new head (vitc train --pretrained fine-tunes it)"
        )
    shapes = {k: v["shape"] for k, v in header.items() if k != "__metadata__"}
    resampled = "img_size" in overrides  # another input size: the position embedding resampled, as timm's
    model = build_within_limits(meta.model, {**meta.args, **overrides}, str(path), shapes, resampled)
    model_cfg = get_model_cfg(model)
    stored, expected = list(meta.cfg.input_size), list(model_cfg.input_size)
    if not overrides and stored != expected:
        raise VitcError(f"{path}: the metadata's input_size {stored} is not the model's {expected}")
    check_class_names(meta.class_names, model_cfg.num_classes, f"{path}: its metadata has")
    state_dict = load_state_dict(path)
    for key, tensor in state_dict.items():
        if tensor.is_floating_point() and not bool(tensor.isfinite().all()):
            raise VitcError(f"{path}: tensor {key} holds NaN or Inf values")
    state_dict, _ = adapt_input_channels(model, state_dict, str(path))  # RGB weights for another in_chans
    state_dict = resample_to_grid(model, state_dict, str(path)) if resampled else state_dict
    load_strict(model, state_dict, source=str(path))
    model.vitc_cfg = _resolved_cfg(model_cfg, meta.cfg, bool(overrides), str(path))
    model.eval()
    return model, meta


def _resolved_cfg(model_cfg: ModelCfg, stored: ModelCfg, overridden: bool, source: str) -> ModelCfg:
    """The model's config with its preprocessing resolved once, as timm's resolve_data_config does:
    the arguments (an input size changed by `overrides`), then the checkpoint's record, then the
    model's registered defaults; `vitc.preprocess`, `vitc eval` and export then all read the same. For
    another channel count (in_chans) the checkpoint's mean and std are averaged, as create_model's are."""
    from vitc.models._registry import per_channel

    args = {"input_size": list(model_cfg.input_size)} if overridden else None
    chans = model_cfg.input_size[0]
    stored = replace(stored, mean=per_channel(stored.mean, chans), std=per_channel(stored.std, chans))
    stored_prep = asdict(stored.preprocess)  # every setting, those its record leaves out read as their defaults
    prep = resolve_preprocess(args, stored_prep, model_cfg.to_record(), source=source)
    return model_cfg.evaluated_by(prep)


def resolve_checkpoint(path: str | os.PathLike[str]) -> Path:
    """A checkpoint file as given, or a `vitc train` run folder's best.safetensors (what `vitc eval`,
    `export`, `compile` and `info` measure when given a run folder)."""
    path = Path(path)
    if path.is_dir():
        if is_run_folder(path):
            return run_checkpoint(path)
        if manifest_paths(path):  # what `vitc export` makes from a checkpoint
            raise VitcError(
                f"{path} is an export folder, not a vitc checkpoint: name the checkpoint or run folder it was made from"
            )
        raise VitcError(f"{path} is a folder without {BEST} (not a vitc train run folder)")
    made = MADE_FROM_CHECKPOINTS.get(path.suffix.lower())
    if made is not None and path.is_file():
        raise VitcError(f"{path} is {made}, not a vitc checkpoint: name the checkpoint or run folder it was made from")
    return path


# what `vitc export`, `build` and `compile --out` make from a checkpoint, by suffix: given where a checkpoint
# is taken, named in one line (read as weights, an ONNX file said "not a safetensors file (bad header length)")
MADE_FROM_CHECKPOINTS = {
    ".onnx": "an ONNX file",
    **dict.fromkeys(PLAN_SUFFIXES, "a TensorRT plan"),
    ".pt2": "an exported PyTorch program",
}


def training_data(
    path: str | os.PathLike[str], meta: CheckpointMeta, data: str | None = None, data_dir: str | None = None
) -> tuple[str, str | None]:
    """(data set name, folder) to measure a checkpoint on: what the user named, else what it was trained on.

    A folder named only inside a file is used only when the file is the user's own run: it sits in a
    `vitc train` run folder whose config.json names the same data. A checkpoint from someone else
    cannot make vitc read (and copy images from) another folder of this machine.
    """
    if data_dir is not None:
        return _given_folder(data, data_dir), data_dir
    trained = (meta.extra.get("train_config") or {}).get("data") or {}
    trained = trained if isinstance(trained, dict) else {}
    name = str(data or trained.get("name") or "digits")  # weights that name no data: the bundled digits
    if name == "digits":
        return name, None
    folder = trained.get("dir") if name == trained.get("name") else None
    if isinstance(folder, str) and _own_run(Path(path), name, folder):
        if not Path(folder).is_absolute() and not Path(folder).is_dir():  # a run of an older vitc
            raise VitcError(
                f"{path} was trained on {folder}, a folder named relative to where vitc train ran, and there is "
                f"no {folder} from here: run this from that folder, or pass --data-dir"
            )
        return name, folder
    if trained.get("name") and name != trained.get("name"):
        raise VitcError(f"{path} was trained on {trained['name']}, not {name}: pass --data-dir to name the {name} data")
    raise VitcError(
        f"{path} does not say where its {name} data is on this machine (it is not a vitc train run here): "
        "pass --data-dir (and --data) to name the data to measure it on"
    )


def _given_folder(data: str | None, data_dir: str) -> str:
    """The kind of data a --data-dir is read as: --data's, else the kind the folder holds, as `vitc train`
    reads it (a missing folder, or one of neither kind, is one line), and class folders without splits an
    image folder, measured whole as `vitc eval` measures it: never the run's own kind, which would measure
    digits for a run trained on digits and say it read the folder, even one that does not exist."""
    from vitc.data.files import check_data_dir, detect_kind

    if data == "digits":
        check_data_dir(data, data_dir)  # refuses: digits take no folder
    return data or detect_kind(Path(data_dir), measured=True)


def _own_run(path: Path, name: str, folder: str) -> bool:
    config = path.parent / CONFIG
    try:
        record = json.loads(config.read_text()) if config.is_file() else None
    except (OSError, ValueError, RecursionError):
        return False
    data = record.get("data") if isinstance(record, dict) else None
    return isinstance(data, dict) and data.get("name") == name and data.get("dir") == folder


# This module's names before vitc.load_model and vitc.save_checkpoint took them for the public API, with other
# arguments and results: a user who imported these got a tuple, or a TypeError for class names. They still
# import, with a warning that names both (old name: the new one, what it differs in, the public one).
_RENAMED = {
    "load_model": ("read_checkpoint", "returns (model, meta)", "vitc.load_model(path, model_name=None, **overrides)"),
    "save_checkpoint": (
        "write_checkpoint",
        "takes a CheckpointMeta",
        "vitc.save_checkpoint(path, model, class_names=None)",
    ),
}


def __getattr__(name: str) -> Any:
    if name not in _RENAMED:
        raise AttributeError(f"module 'vitc.checkpoint' has no attribute {name!r}")
    new, differs, public = _RENAMED[name]
    warnings.warn(
        f"vitc.checkpoint.{name} is deprecated: it is vitc.checkpoint.{new}, which {differs}; the public one is "
        f"{public}",
        FutureWarning,
        stacklevel=2,
    )
    return globals()[new]
