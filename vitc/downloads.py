"""What weights say about themselves, read without torch: the weights file in a downloaded folder and
the model a file or its folder names.

A Hugging Face or timm hub folder holds the weights under a fixed name beside a config.json that
names the model, as `timm.create_model("hf-hub:...")` and `from_pretrained` read it; a vitc checkpoint
names its model in its own metadata. `vitc import`, `vitc train --pretrained` and `vitc.load_model`
read both here, so a model named once by the file need not be named again by the user.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vitc._model_sources import registered_names
from vitc._run_layout import BEST, is_run_folder, run_checkpoint
from vitc.artifacts.checkpoint_meta import checkpoint_model
from vitc.errors import VitcError

HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # what a Hugging Face model folder holds
TIMM_NAMES = {f"deit_{size}_patch16_224": f"deit_{size}" for size in ("tiny", "small", "base")}  # timm's → vitc's
HF_CVT = {  # a Hugging Face CvtConfig's (depth, embed_dim) → the vitc model (vitc/models/cvt.py)
    ((1, 2, 10), (64, 192, 384)): "cvt_13",
    ((1, 4, 16), (64, 192, 384)): "cvt_21",
    ((2, 2, 20), (192, 768, 1024)): "cvt_w24",
}
HF_CVT_BASE = "cvt_13"  # the registered CvT a CvtConfig of another shape is built as, with its arguments
HF_CVT_STAGES = {  # a CvtConfig's per-stage lists → vitc CvT's arguments (vitc/models/cvt.py)
    "depth": "depths",
    "embed_dim": "embed_dims",
    "num_heads": "num_heads",
    "patch_sizes": "patch_sizes",
    "patch_stride": "patch_strides",
    "patch_padding": "patch_paddings",
}
HF_CVT_FIXED = {  # a CvtConfig's per-stage settings that vitc's CvT builds as these, at every stage
    "kernel_qkv": 3,
    "stride_kv": 2,
    "padding_kv": 1,
    "stride_q": 1,
    "padding_q": 1,
    "qkv_projection_method": "dw_bn",
}
HF_SQUASH_FROM = 384  # Hugging Face's CvT processor (ConvNextImageProcessor) squashes from this size up, uncropped


def weights_file(source: str | os.PathLike[str]) -> Path:
    """The weights file itself, the one inside a Hugging Face or timm hub folder (config.json beside it),
    or a `vitc train` run folder's best.safetensors (as `vitc export` and `eval` read a run folder)."""
    path = Path(source)
    if not path.is_dir():
        return path
    for name in HF_WEIGHT_FILES:
        if (path / name).is_file():
            return path / name
    if is_run_folder(path):
        return run_checkpoint(path)
    raise VitcError(f"{path}: a folder without {', '.join(HF_WEIGHT_FILES)} or {BEST} (name the weights file itself)")


def model_named_by(source: str | os.PathLike[str]) -> str | None:
    """The vitc model a downloaded folder's config.json names, as `timm.create_model` and `from_pretrained`
    read it: timm's `architecture` (hub folders such as timm/convit_tiny.fb_in1k) or a Hugging Face CvT
    config's depths and widths. `source` is the folder or the weights file in it; None when nothing says."""
    record = _folder_record(source, "config.json")
    if not isinstance(record, dict):
        return None
    if isinstance(record.get("architecture"), str):
        name = record["architecture"].split(".")[0]  # a pretrained tag may follow the name
        name = TIMM_NAMES.get(name, name)
        return name if name in registered_names() else None
    if record.get("model_type") == "cvt":
        try:
            return HF_CVT.get((tuple(record["depth"]), tuple(record["embed_dim"])))
        except (KeyError, TypeError):
            return None
    return None


def class_names_named_by(source: str | os.PathLike[str]) -> list[str] | None:
    """The classes a downloaded folder's config.json names, in its head's row order: timm's `label_names`
    (top level, as timm's push_to_hub writes it, or in `pretrained_cfg`; a list, or a dict by row) or a
    Hugging Face config's `id2label`. None when it names none, names a row twice or skips one, or holds
    only the LABEL_0, LABEL_1, ... that transformers writes for a model given no names."""
    record = _folder_record(source, "config.json")
    if not isinstance(record, dict):
        return None
    inner = record.get("pretrained_cfg")
    for labels in (record.get("label_names"), inner.get("label_names") if isinstance(inner, dict) else None):
        names = _by_row(labels)
        if names is not None:
            return names
    names = _by_row(record.get("id2label"))
    return None if names is None or names == [f"LABEL_{i}" for i in range(len(names))] else names


def num_classes_named_by(source: str | os.PathLike[str]) -> int | None:
    """The class count a downloaded folder's config.json gives its head: timm's `num_classes`, a Hugging Face
    config's `num_labels` or the length of its `id2label`; None when it says none."""
    record = _folder_record(source, "config.json")
    if not isinstance(record, dict):
        return None
    for key in ("num_classes", "num_labels"):
        count = _size_in(record, lambda r, key=key: r[key])
        if count is not None:
            return count
    labels = record.get("id2label")
    return len(labels) if isinstance(labels, dict) and labels and _by_row(labels) is not None else None


def _by_row(labels: Any) -> list[str] | None:
    """Names listed by row (a list, or a dict keyed 0..N-1 as numbers or their text); None otherwise."""
    if isinstance(labels, dict):
        try:
            rows = {int(key): value for key, value in labels.items()}
        except (TypeError, ValueError):
            return None
        labels = [rows.get(i) for i in range(len(rows))]
    if not isinstance(labels, list) or not labels or not all(isinstance(n, str) and n for n in labels):
        return None
    return labels if len(set(labels)) == len(labels) else None


def image_size_named_by(source: str | os.PathLike[str]) -> int | None:
    """The input size a downloaded folder says its weights were trained at: timm's config.json
    `pretrained_cfg.input_size`, or a Hugging Face preprocessor_config.json's `size.shortest_edge`
    (microsoft/cvt-13-384: 384); None when neither says."""
    timm = _size_in(_folder_record(source, "config.json"), lambda r: (r.get("pretrained_cfg") or {})["input_size"][-1])
    return timm or hf_processor_size(source)


def hf_processor_size(source: str | os.PathLike[str]) -> int | None:
    """The size a downloaded folder's Hugging Face preprocessor_config.json resizes to (`size.shortest_edge`,
    or the plain number older folders write, which its processor reads as that), by which CvT's processor
    decides to squash (`HF_SQUASH_FROM`); None when it does not say."""
    record = _folder_record(source, "preprocessor_config.json")
    return _size_in(record, lambda r: r["size"] if isinstance(r["size"], int) else r["size"]["shortest_edge"])


PIL_FILTERS = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}  # HF's `resample`


def preprocess_named_by(source: str | os.PathLike[str]) -> tuple[dict[str, Any], str]:
    """The evaluation transform a downloaded folder records for its weights, as timm's `resolve_data_config`
    and Hugging Face's processor read it: timm's config.json `pretrained_cfg` (mean, std, crop_pct, crop_mode,
    interpolation) or a preprocessor_config.json (image_mean, image_std, do_normalize false meaning mean 0 and
    std 1, crop_pct, resample as a PIL filter code), as the folder spells them: `vitc.importers.recorded_preprocess`
    keeps those vitc can honour (this module sits below the checks of vitc.artifacts). Returns (the settings, the
    file that records them); empty when nothing says."""
    timm = _folder_record(source, "config.json")
    inner = timm.get("pretrained_cfg") if isinstance(timm, dict) else None
    if isinstance(inner, dict):
        found = {key: inner.get(key) for key in ("mean", "std", "crop_pct", "crop_mode", "interpolation")}
        origin = "config.json (timm's pretrained_cfg)"
    else:
        hf = _folder_record(source, "preprocessor_config.json")
        if not isinstance(hf, dict):
            return {}, ""
        origin = "preprocessor_config.json"
        unnormalised = hf.get("do_normalize") is False
        found = {
            "mean": [0.0] if unnormalised else _listed(hf.get("image_mean")),
            "std": [1.0] if unnormalised else _listed(hf.get("image_std")),
            "crop_pct": hf.get("crop_pct"),
            "interpolation": PIL_FILTERS.get(hf["resample"]) if type(hf.get("resample")) is int else None,
        }
    return {key: value for key, value in found.items() if value is not None}, origin


def _listed(values: Any) -> Any:
    """A processor's image_mean/image_std as a list: transformers also takes one number for every channel."""
    return [values] if isinstance(values, (int, float)) and not isinstance(values, bool) else values


def _folder_record(source: str | os.PathLike[str], name: str) -> Any:
    """The JSON file `name` beside the weights (or in the folder) `source`; None when unreadable."""
    path = Path(source)
    try:
        return json.loads(((path if path.is_dir() else path.parent) / name).read_text())
    except (OSError, ValueError, RecursionError):
        return None


def _size_in(record: Any, read: Callable[[dict[str, Any]], Any]) -> int | None:
    """What `read` finds in a JSON object when it is a positive integer (a size); None otherwise."""
    try:
        value = read(record) if isinstance(record, dict) else None
    except (KeyError, AttributeError, TypeError, IndexError):
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def held_model(source: str | os.PathLike[str]) -> str | None:
    """The model weights say they hold: a vitc checkpoint's own, else what its folder's config.json names
    (`folder_model`); None when neither says."""
    file = weights_file(source)
    return checkpoint_model(file) or folder_model(file)


def folder_model(source: str | os.PathLike[str]) -> str | None:
    """The vitc model to build for a downloaded folder: the one its config.json names, or HF_CVT_BASE for a
    Hugging Face CvT of another shape (its arguments: `cvt_args_named_by`); None when nothing says."""
    return model_named_by(source) or (HF_CVT_BASE if cvt_args_named_by(source) is not None else None)


def cvt_args_named_by(source: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The vitc CvT arguments of a folder's Hugging Face CvtConfig that no registered CvT is (`model_named_by`
    names those): its stages' depths, widths, heads and patch embeddings, its MLP ratio and qkv bias, as
    `CvtForImageClassification` builds them. None: not such a config, or one vitc's CvT cannot build (another
    attention projection, a class token before the last stage, a ratio or bias that differs by stage)."""
    record = _folder_record(source, "config.json")
    if not isinstance(record, dict) or record.get("model_type") != "cvt" or model_named_by(source) is not None:
        return None
    try:
        args: dict[str, Any] = {ours: [_whole(v) for v in record[theirs]] for theirs, ours in HF_CVT_STAGES.items()}
        stages = len(args["depths"])
        built = all(list(record.get(key, [value] * stages)) == [value] * stages for key, value in HF_CVT_FIXED.items())
        built = built and list(record.get("cls_token", [])) in ([], [False] * (stages - 1) + [True])
        ratios = {float(r) for r in record.get("mlp_ratio", [4.0])}
        biases = {bool(b) for b in record.get("qkv_bias", [True])}
    except (KeyError, TypeError, ValueError):
        return None
    if not built or len(ratios) != 1 or len(biases) != 1 or any(len(v) != stages for v in args.values()):
        return None
    return {**args, "mlp_ratio": ratios.pop(), "qkv_bias": biases.pop()}


def _whole(value: Any) -> int:
    """A config's integer (not a bool, not a float): anything else is no CvtConfig vitc reads."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {value!r}")
    return value
