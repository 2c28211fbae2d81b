"""vitc's checkpoint format: safetensors weights with the model's description in the header.

One file, `model.safetensors`, holds the weights and, under the header key "vitc", a JSON record:
model name, constructor arguments, data config (input size, mean/std), class names and
provenance. Everything later (export, bench, eval) rebuilds the model from it with no extra flags.
safetensors never executes code on load, so a downloaded vitc checkpoint is safe to open.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vitc._io import atomic_write, read_safetensors_header
from vitc.errors import VitcError

FORMAT = "vitc.checkpoint"
FORMAT_VERSION = 1
META_KEY = "vitc"


@dataclass
class CheckpointMeta:
    """The self-description stored with the weights."""

    model: str
    args: dict[str, Any]
    cfg: dict[str, Any]
    class_names: list[str] | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        record = {"format": FORMAT, "version": FORMAT_VERSION, **self.__dict__}
        return json.dumps(record, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str = "checkpoint") -> CheckpointMeta:
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            raise VitcError(f"{source}: the vitc metadata is not valid JSON") from exc
        if not isinstance(record, dict) or record.get("format") != FORMAT:
            raise VitcError(f"{source}: not a vitc checkpoint (no vitc metadata)")
        version = record.get("version", 0)
        if not isinstance(version, int) or isinstance(version, bool):
            raise VitcError(f"{source}: the vitc metadata version must be an integer, got {version!r}")
        if version > FORMAT_VERSION:
            raise VitcError(f"{source}: written by a newer vitc (format {record['version']}); upgrade vitc")
        try:
            class_names = record.get("class_names")
            if class_names is not None and not (
                isinstance(class_names, list) and all(isinstance(c, str) for c in class_names)
            ):
                raise ValueError("class_names must be a list of strings")
            return cls(
                model=str(record["model"]),
                args=dict(record.get("args") or {}),
                cfg=dict(record.get("cfg") or {}),
                class_names=class_names,
                provenance=dict(record.get("provenance") or {}),
                extra=dict(record.get("extra") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise VitcError(f"{source}: malformed vitc metadata ({exc})") from exc


def read_meta(path: str | os.PathLike[str]) -> CheckpointMeta:
    """The metadata of a vitc checkpoint, read from the header alone (no torch needed)."""
    header = read_safetensors_header(path)
    text = (header.get("__metadata__") or {}).get(META_KEY)
    if text is None:
        raise VitcError(f"{path}: a safetensors file without vitc metadata (use `vitc import` to convert it)")
    return CheckpointMeta.from_json(text, str(path))


def meta_for(model: Any, **fields: Any) -> CheckpointMeta:
    """Metadata describing a model built by `vitc.create_model`."""
    from vitc.models import get_model_cfg

    return CheckpointMeta(
        model=model.vitc_name, args=dict(model.vitc_args), cfg=get_model_cfg(model).to_dict(), **fields
    )


def save_checkpoint(path: str | os.PathLike[str], model: Any, meta: CheckpointMeta | None = None) -> Path:
    """Write the model's weights and metadata atomically to `path` (a .safetensors file)."""
    from safetensors.torch import save_file

    meta = meta or meta_for(model)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
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


def load_model(path: str | os.PathLike[str], **overrides: Any) -> tuple[Any, CheckpointMeta]:
    """Rebuild a model from a vitc checkpoint and load its weights strictly; returns (model, meta)."""
    from vitc.models import create_model
    from vitc.models.loading import load_strict

    meta = read_meta(path)
    model = create_model(meta.model, **{**meta.args, **overrides})
    load_strict(model, load_state_dict(path), source=str(path))
    model.eval()
    return model, meta
