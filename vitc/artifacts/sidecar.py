"""The engine sidecar: `<plan>.json` beside every plan `vitc build` writes.

A TensorRT plan cannot carry metadata of its own that older TensorRT versions would let vitc read,
so what the next step needs (TensorRT version, GPU, precision, batch profile, the export it came
from, the drift measured on the engine) sits in this JSON file.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from vitc._io import parse_json
from vitc.errors import VitcError

FORMAT = "vitc.engine"


def sidecar_path(plan: str | os.PathLike[str]) -> Path:
    plan = Path(plan)
    return plan.with_name(plan.name + ".json")


def load_sidecar(plan: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The sidecar of `plan`, or None when there is none; anything else than vitc's record is an error."""
    path = sidecar_path(plan)
    if not path.is_file():
        return None
    record = parse_json(path.read_bytes(), f"{path}: the engine sidecar")
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise VitcError(f"{path}: not a vitc engine sidecar")
    return record


def plan_record(blob: bytes) -> dict[str, Any]:
    """What the sidecar records of its plan: enough to tell that it sits beside another plan."""
    return {"sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob)}


def check_sidecar_matches(plan: str | os.PathLike[str], sidecar: dict[str, Any] | None, blob: bytes) -> None:
    """A one-line VitcError when the sidecar describes another plan (older sidecars, without the plan record, pass)."""
    recorded = (sidecar or {}).get("plan")
    if not isinstance(recorded, dict) or "sha256" not in recorded:
        return
    actual = plan_record(blob)
    if recorded.get("bytes") != actual["bytes"] or recorded["sha256"] != actual["sha256"]:
        raise VitcError(
            f"{sidecar_path(plan)}: this sidecar describes another plan (sha256 {str(recorded['sha256'])[:12]}…, "
            f"{plan} is {actual['sha256'][:12]}…): rebuild with `vitc build`, or copy the plan's own sidecar beside it"
        )
