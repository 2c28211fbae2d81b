"""The description a vitc checkpoint stores with its weights (`CheckpointMeta`, under the safetensors header
key "vitc"), read without torch: `vitc info`, `build`'s and `check`'s path messages and `vitc.downloads` read it
here; vitc/checkpoint.py writes it with the weights and rebuilds the model it names."""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vitc._io import check_format, parse_json, read_safetensors_header, read_safetensors_metadata
from vitc.artifacts.model_cfg import POOLING_ARGS, ModelCfg, parse_model_cfg
from vitc.artifacts.preprocess import format_version
from vitc.artifacts.resume import refuse_resume_state
from vitc.errors import VitcError

FORMAT = "vitc.checkpoint"
FORMAT_VERSION = 1
# 2: a cfg with crop_mode "squash" (a vitc reading only version 1 would centre-crop its images), or a model
# that pools other than its class token (timm's global_pool, fc_norm: arguments version 1's vitc has not)
NEWER_VERSION = 2
META_KEY = "vitc"


@dataclass
class CheckpointMeta:
    """The self-description stored with the weights; `cfg` is the model's, typed (written by its
    `to_record`, read by `parse_model_cfg`)."""

    model: str
    args: dict[str, Any]
    cfg: ModelCfg
    class_names: list[str] | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_record(self) -> dict[str, Any]:
        """The fields as JSON values (what `vitc info` shows); `to_json` adds the format and version."""
        return {**self.__dict__, "cfg": self.cfg.to_record()}

    def to_json(self) -> str:
        fields = self.to_record()
        version = format_version(fields["cfg"], FORMAT_VERSION, NEWER_VERSION)
        if any(key in self.args for key in POOLING_ARGS):  # an older vitc says "upgrade vitc", not "no argument"
            version = max(version, NEWER_VERSION)
        return json.dumps({"format": FORMAT, "version": version, **fields}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str = "checkpoint") -> CheckpointMeta:
        record = parse_json(text, f"{source}: the vitc metadata")
        check_format(record, FORMAT, NEWER_VERSION, source, "vitc checkpoint")
        try:
            class_names = record.get("class_names")
            if class_names is not None and not (
                isinstance(class_names, list) and all(isinstance(c, str) for c in class_names)
            ):
                raise ValueError("class_names must be a list of strings")
            return cls(
                model=str(record["model"]),
                args=dict(record.get("args") or {}),
                cfg=parse_model_cfg(record.get("cfg") or {}),
                class_names=class_names,
                provenance=dict(record.get("provenance") or {}),
                extra=dict(record.get("extra") or {}),
            )
        except (KeyError, TypeError, ValueError, VitcError) as exc:
            raise VitcError(f"{source}: malformed vitc metadata ({exc})") from exc


def read_meta(path: str | os.PathLike[str]) -> CheckpointMeta:
    """The metadata of a vitc checkpoint, read from the header alone (no torch needed)."""
    return meta_in(read_safetensors_header(path), path)


def meta_in(header: dict[str, Any], path: str | os.PathLike[str]) -> CheckpointMeta:
    """The metadata in a safetensors header already read (`vitc.checkpoint.read_checkpoint` reads it once)."""
    metadata = header.get("__metadata__") or {}
    text = metadata.get(META_KEY)
    if text is None:
        refuse_resume_state(path, metadata)
        raise VitcError(f"{path}: a safetensors file without vitc metadata (use `vitc import` to convert it)")
    return CheckpointMeta.from_json(text, str(path))


def checkpoint_model(file: Path) -> str | None:
    """The model a vitc checkpoint file names in its own metadata; None for other weights (and for a folder:
    `vitc.downloads.weights_file` finds the file in one). A header that cannot be read says nothing here:
    reading the weights reports it."""
    if file.suffix == ".safetensors" and file.is_file():
        with contextlib.suppress(VitcError):
            text = read_safetensors_metadata(file).get(META_KEY)
            if text is not None:
                return CheckpointMeta.from_json(text, str(file)).model
    return None
