"""The engine sidecar: `<plan>.json` beside every plan `vitc build` writes.

A TensorRT plan cannot carry metadata of its own that older TensorRT versions would let vitc read,
so what the next step needs (TensorRT version, GPU, precision, batch profile, the export it came
from, the drift measured on the engine) sits in this JSON file.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vitc._io import ENGINE_FORMAT, check_format, parse_json
from vitc.artifacts.preprocess import format_version
from vitc.errors import VitcError

FORMAT_VERSION = 1
SQUASH_VERSION = 2  # its preprocess record squashes (crop_mode), which a reader of version 1 would centre-crop
# the names a TensorRT plan is read under (`vitc build` writes .plan; trtexec users name theirs .engine or .trt):
# the runners' suffixes (vitc.engines.SUFFIXES), `vitc info`'s and the checkpoint readers' refusal of a plan
PLAN_SUFFIXES = (".plan", ".engine", ".trt")


def sidecar_path(plan: str | os.PathLike[str]) -> Path:
    plan = Path(plan)
    return plan.with_name(plan.name + ".json")


@dataclass(frozen=True)
class EngineSidecar:
    """What `vitc build` records of a plan: `build.tensorrt.make_sidecar` fills it and writes
    `to_record()`, `load_sidecar`/`parse_sidecar` read it back for the runner, `vitc bench` and `vitc info`.

    Every field may be missing from a sidecar of an older vitc (or one written by hand), so each
    reader says what it does without it.
    """

    tensorrt: str | None = None
    gpu: dict[str, str] | None = None
    jetson: dict[str, str] | None = None
    precision: str | None = None  # a Precision in everything vitc build writes
    strongly_typed: bool | None = None
    network_flags: list[str] = field(default_factory=list)
    builder_flags: list[str] = field(default_factory=list)
    fp32_layers: int | None = None  # layers pinned to FP32 (weakly typed fp16/int8 builds: TensorRT 8.5/8.6)
    profile: dict[str, Any] | None = None
    onnx: dict[str, Any] | None = None  # {"path", "sha256"} of the ONNX file it was built from
    model: str | None = None
    input_name: str | None = None
    output_name: str | None = None
    io_dtype: str | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    class_names: list[str] | None = None
    export_drift: dict[str, Any] | None = None
    engine_drift: dict[str, Any] | None = None
    build_seconds: float | None = None
    built_at: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    dla_fallback_layers: list[str] = field(default_factory=list)
    plan: dict[str, Any] | None = None  # {"sha256", "bytes"} of the plan it describes
    preprocess: dict[str, Any] | None = None  # the export's evaluation transform (Preprocess.to_record)
    raw: dict[str, Any] = field(default_factory=dict)  # the record as read, keys of later releases included

    @property
    def dla_core(self) -> int | None:
        core = self.options.get("dla_core")
        return None if core is None else int(core)

    @property
    def version_compatible(self) -> bool:
        return bool(self.options.get("version_compatible"))

    @property
    def hardware_compat(self) -> str:
        return str(self.options.get("hardware_compat", "none"))

    @property
    def onnx_sha256(self) -> str | None:
        return None if self.onnx is None else self.onnx.get("sha256")

    def to_record(self) -> dict[str, Any]:
        """The JSON record, in the key order vitc build has always written (later keys kept after them)."""
        version = format_version(self.preprocess, FORMAT_VERSION, SQUASH_VERSION)
        record: dict[str, Any] = {"format": ENGINE_FORMAT, "version": version}
        written = [name for name in _FIELDS if name not in _ADDED or getattr(self, name) not in (None, {})]
        record.update({name: getattr(self, name) for name in written})
        record.update({k: v for k, v in self.raw.items() if k not in record})
        return record


_FIELDS = [name for name in EngineSidecar.__dataclass_fields__ if name != "raw"]
# fields added since 0.1.0, written only when set (0 layers pinned is set): older sidecars read back byte for byte
_ADDED = ("preprocess", "fp32_layers")
_DICTS = ("gpu", "jetson", "profile", "onnx", "export_drift", "engine_drift", "options", "plan", "preprocess")
_LISTS = ("network_flags", "builder_flags", "mean", "std", "class_names", "dla_fallback_layers")


def parse_sidecar(record: Any, source: str = "sidecar") -> EngineSidecar:
    """Validate a sidecar record (already parsed JSON): the reader of what `EngineSidecar.to_record` writes."""
    record = check_format(record, ENGINE_FORMAT, SQUASH_VERSION, source, "vitc engine sidecar")
    for key in _DICTS:
        if record.get(key) is not None and not isinstance(record[key], dict):
            raise VitcError(f"{source}: {key} must be a JSON object, got {str(record[key])[:80]!r}")
    for key in _LISTS:
        if record.get(key) is not None and not isinstance(record[key], list):
            raise VitcError(f"{source}: {key} must be a JSON list, got {str(record[key])[:80]!r}")
    values = {name: record[name] for name in _FIELDS if record.get(name) is not None}
    if "tensorrt" in values:
        values["tensorrt"] = str(values["tensorrt"])
    return EngineSidecar(**values, raw=record)


def load_sidecar(plan: str | os.PathLike[str]) -> EngineSidecar | None:
    """The sidecar of `plan`, or None when there is none; anything else than vitc's record is an error."""
    path = sidecar_path(plan)
    if not path.is_file():
        return None
    return parse_sidecar(parse_json(path.read_bytes(), f"{path}: the engine sidecar"), str(path))


def plan_record(blob: bytes) -> dict[str, Any]:
    """What the sidecar records of its plan: enough to tell that it sits beside another plan."""
    return {"sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob)}


def check_sidecar_matches(plan: str | os.PathLike[str], sidecar: EngineSidecar | None, blob: bytes) -> None:
    """A one-line VitcError when the sidecar describes another plan (older sidecars, without the plan record, pass)."""
    recorded = sidecar.plan if sidecar is not None else None
    if not isinstance(recorded, dict) or "sha256" not in recorded:
        return
    actual = plan_record(blob)
    if recorded.get("bytes") != actual["bytes"] or recorded["sha256"] != actual["sha256"]:
        raise VitcError(
            f"{sidecar_path(plan)}: this sidecar describes another plan (sha256 {str(recorded['sha256'])[:12]}…, "
            f"{plan} is {actual['sha256'][:12]}…): rebuild with `vitc build`, or copy the plan's own sidecar beside it"
        )
