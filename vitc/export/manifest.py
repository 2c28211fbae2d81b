"""The export manifest: one self-describing JSON per precision, mirrored in the ONNX metadata_props.

Layout of `export/<run>/`:
    model.<precision>.onnx      the artifact; metadata_props hold every manifest key (JSON strings)
                                except `onnx_sha256` (a file cannot contain its own hash)
    manifest.<precision>.json   the manifest below, `onnx_sha256` and `heldout_sha256` included
    heldout.<sha16>.npz         images (float32, normalised), labels (int64), reference_logits
                                (float32, PyTorch FP32); named by its content, so precisions exported
                                from one checkpoint share it and another checkpoint's never replaces it
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FORMAT = "vitc.export"
VERSION = 1
HELDOUT_GLOB = "heldout.*.npz"


def heldout_name(sha256: str) -> str:
    return f"heldout.{sha256[:16]}.npz"


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
        except (json.JSONDecodeError, RecursionError):  # not what vitc wrote: shown as the raw text
            out[prop.key] = prop.value
    return out


def prune_heldout(folder: Path) -> None:
    """Delete the held-out sets that no manifest of `folder` names any more."""
    named = set()
    for path in folder.glob("manifest.*.json"):
        try:
            named.add(json.loads(path.read_text()).get("heldout"))
        except (OSError, ValueError, AttributeError, RecursionError):
            return  # an unreadable manifest might name any of them: keep all
    for path in folder.glob(HELDOUT_GLOB):
        if path.name not in named:
            path.unlink(missing_ok=True)
