"""The export manifest: one self-describing JSON per precision, mirrored in the ONNX metadata_props.

Layout of `export/<run>/`:
    model.<precision>.onnx      the artifact; metadata_props hold every manifest key (JSON strings)
                                except `onnx_sha256` (a file cannot contain its own hash)
    manifest.<precision>.json   the manifest below, `onnx_sha256` included
    heldout.npz                 images (float32, normalised), labels (int64), reference_logits
                                (float32, PyTorch FP32), shared by all precisions of the run
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vitc.errors import VitcError

FORMAT = "vitc.export"
VERSION = 1
HELDOUT = "heldout.npz"


def onnx_name(precision: str) -> str:
    return f"model.{precision}.onnx"


def manifest_name(precision: str) -> str:
    return f"manifest.{precision}.json"


def set_metadata(model: Any, manifest: dict[str, Any]) -> None:
    """Write every manifest entry (but the file's own hash) into `model.metadata_props` as JSON strings."""
    del model.metadata_props[:]
    for key, value in manifest.items():
        if key == "onnx_sha256":
            continue
        prop = model.metadata_props.add()
        prop.key, prop.value = key, json.dumps(value)


def get_metadata(model: Any) -> dict[str, Any]:
    out = {}
    for prop in model.metadata_props:
        try:
            out[prop.key] = json.loads(prop.value)
        except json.JSONDecodeError:
            out[prop.key] = prop.value
    return out


def read_manifest(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise VitcError(f"{path}: not a readable manifest ({exc})") from exc
    if record.get("format") != FORMAT:
        raise VitcError(f"{path}: not a vitc export manifest")
    return record
