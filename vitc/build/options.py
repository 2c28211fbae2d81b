"""What a TensorRT build is asked for: its options, and the input profile (min/opt/max shapes) they and the
ONNX input resolve to. Plain data, no TensorRT: vitc.build.tensorrt applies them to the builder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vitc.artifacts import BatchRange, ExportManifest, Precision
from vitc.errors import VitcError


@dataclass
class BuildOptions:
    onnx: Path
    output: Path
    precision: Precision = "fp32"
    batch: BatchRange | None = None  # overrides the manifest's range
    workspace_mb: int | None = None
    opt_level: int | None = None
    dla_core: int | None = None
    timing_cache: Path | None = None
    version_compatible: bool = False
    hardware_compat: str = "none"
    manifest: ExportManifest | None = None
    check: bool = True
    tf32: bool = False  # let FP32 layers compute in TF32 (TensorRT's default; vitc clears it)

    def options_record(self) -> dict[str, Any]:
        return {
            "workspace_mb": self.workspace_mb,
            "opt_level": self.opt_level,
            "dla_core": self.dla_core,
            "timing_cache": None if self.timing_cache is None else str(self.timing_cache),
            "version_compatible": self.version_compatible,
            "hardware_compat": self.hardware_compat,
            "tf32": self.tf32,
        }


@dataclass(frozen=True)
class Profile:
    input_name: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"input": self.input_name, "min": list(self.min), "opt": list(self.opt), "max": list(self.max)}


def make_profile(
    input_name: str,
    network_shape: tuple[int, ...],
    manifest: ExportManifest | None,
    override: BatchRange | None,
) -> Profile:
    """Min/opt/max input shapes from the ONNX input (-1 = dynamic), the manifest's batch range and --batch."""
    if len(network_shape) != 4:
        raise VitcError(f"input {input_name!r} has shape {network_shape}; vitc builds N×C×H×W image models")
    chw = list(network_shape[1:])
    if any(d < 0 for d in chw):
        if manifest is None:
            raise VitcError(f"input {input_name!r} has dynamic C/H/W {chw} and there is no manifest to fix them")
        chw = [d if d >= 0 else manifest.input_size[i] for i, d in enumerate(chw)]
    batch = override or (manifest.batch if manifest is not None else None)
    if network_shape[0] >= 0:  # static batch in the graph: the profile must be exactly it
        fixed = network_shape[0]
        if (override is not None and not override.static) or (override is not None and override.min != fixed):
            raise VitcError(f"the ONNX graph has a static batch of {fixed}; --batch {override} cannot change it")
        batch = BatchRange(fixed, fixed, fixed)
    if batch is None:
        batch = BatchRange(1, 1, 1)
    return Profile(
        input_name,
        (batch.min, *chw),
        (batch.opt, *chw),
        (batch.max, *chw),
    )
