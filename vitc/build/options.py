"""What a TensorRT build is asked for: its options, the defaults `resolve_options` decides for them (for
`vitc build` and a Python caller alike), and the input profile (min/opt/max shapes) they and the ONNX
input resolve to. Plain data, no TensorRT: vitc.build.tensorrt applies them to the builder."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from vitc.artifacts import BatchRange, ExportManifest, Precision, manifest_for, parse_precision, precision_in_name
from vitc.artifacts.manifest import onnx_name
from vitc.artifacts.sidecar import PLAN_SUFFIXES
from vitc.errors import VitcError


@dataclass
class BuildOptions:
    """`vitc build`'s options as fields. Those left None are decided by `resolve_options` as the CLI decides
    them: the manifest read from beside the ONNX file, the precision taken from it or the file name, the
    plan written to engines/<run>.<precision>.plan."""

    onnx: Path
    output: Path | None = None  # default engines/<run>.<precision>.plan
    precision: Precision | None = None  # default the manifest's (another is refused), else the file name's, else fp32
    batch: BatchRange | None = None  # overrides the manifest's range
    workspace_mb: int | None = None
    opt_level: int | None = None
    dla_core: int | None = None
    timing_cache: Path | None = None
    version_compatible: bool = False
    hardware_compat: str = "none"
    manifest: ExportManifest | None = None  # default the ONNX file's (manifest_for)
    check: bool = True
    tf32: bool = False  # let FP32 layers compute in TF32 (TensorRT's default; vitc clears it)
    replace_plan: bool = True  # False (`vitc build` without --force): an earlier plan is refused, once the machine is

    @property
    def plan(self) -> Path:
        """The plan path, once `resolve_options` has decided it (build_engine resolves first)."""
        if self.output is None:
            raise VitcError("the plan path is not decided yet: resolve_options(opts) decides it")
        return self.output

    @property
    def chosen_precision(self) -> Precision:
        """The precision, once `resolve_options` has decided it (build_engine resolves first)."""
        if self.precision is None:
            raise VitcError("the precision is not decided yet: resolve_options(opts) decides it")
        return self.precision

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


def resolve_options(opts: BuildOptions) -> BuildOptions:
    """`opts` with every default decided, in one place for `vitc build` and a Python caller of build_engine,
    so the same arguments build the same plan at the same path: the ONNX file checked, its manifest read
    (its sha256 checked), the precision given, else the manifest's, else the file name's
    (model.int8.onnx), else fp32, and the plan path given, else engines/<run>.<precision>.plan, refused
    unless its name ends as a plan's. Resolving resolved options changes nothing."""
    from vitc.artifacts.given import FILE, not_taken, path_kind

    onnx = Path(opts.onnx)  # a Python caller may give strings
    if path_kind(onnx) != FILE:
        raise not_taken(onnx, "an ONNX file", (".onnx",))
    if opts.precision is not None:
        parse_precision(opts.precision, "--precision")
    manifest = opts.manifest if opts.manifest is not None else manifest_for(onnx)
    if opts.precision is not None and manifest is not None and manifest.onnx_path.resolve() == onnx.resolve():
        _check_export_precision(onnx, opts.precision, manifest)
    precision = parse_precision(
        opts.precision or (manifest.precision if manifest else None) or precision_in_name(onnx) or "fp32"
    )
    output = default_plan_path(onnx, precision) if opts.output is None else Path(opts.output)
    check_plan_name(output)
    return replace(opts, onnx=onnx, output=output, precision=precision, manifest=manifest)


def _check_export_precision(onnx: Path, precision: Precision, manifest: ExportManifest) -> None:
    """--precision must be the export's own: precision lives in the ONNX file (casts, Q/DQ nodes) that `vitc export`
    wrote and measured, and TensorRT builds what the file holds. `-p int8` on an fp16 export built an fp16 engine
    that the sidecar called int8, `-p fp16` on an fp32 one an fp32 engine called fp16."""
    if precision == manifest.precision:
        return
    raise VitcError(
        f"{onnx} is the {manifest.precision} export ({manifest.path.name} says so), not {precision}: vitc builds the "
        f"precision an export holds, which `vitc export` verified; {export_fix(onnx, precision, manifest)}"
    )


def export_fix(onnx: Path, precision: Precision, manifest: ExportManifest | None) -> str:
    """What to build for `precision` instead of `onnx`: the export's file of that precision when it lies beside it,
    else the `vitc export` that writes one (from the checkpoint and for the TensorRT the manifest names)."""
    sibling = onnx.parent / onnx_name(precision)
    if sibling.is_file() and sibling.resolve() != onnx.resolve():
        return f"build {sibling}"
    source = (manifest.source_checkpoint.get("path") if manifest is not None else None) or "CHECKPOINT"
    target = f" --trt {manifest.trt_target}" if manifest is not None and manifest.trt_target else ""
    return f"write one with `vitc export {source} --precision {precision}{target}`"


def default_plan_path(onnx: Path, precision: Precision) -> Path:
    """engines/<run>.<precision>.plan: <run> the export folder's name for vitc's own file names
    (export/<run>/model.<precision>.onnx, also given from inside the folder), else the file's name without
    its precision (convit.fp16.onnx: convit), so no plan is named model.int8.int8.plan."""
    tag = precision_in_name(onnx)
    stem = onnx.stem[: -len(tag) - 1] if tag else onnx.stem
    run = onnx.resolve().parent.name if stem == "model" else stem
    return Path("engines") / f"{run or stem}.{precision}.plan"


def check_plan_name(output: Path) -> None:
    """A plan's file name ends as the engines' runners read it (.plan, .engine or .trt): a plan path naming
    a checkpoint or the ONNX file would put a plan over it."""
    if output.suffix.lower() not in PLAN_SUFFIXES:
        raise VitcError(
            f"--out {output}: a TensorRT plan is written to a file whose name ends in {' or '.join(PLAN_SUFFIXES)}"
        )


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
