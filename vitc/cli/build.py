"""`vitc build`: a TensorRT plan (+ sidecar JSON) from an exported ONNX file, checked on the held-out set."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer
from typing_extensions import Annotated

from vitc.cli._console import console, warn
from vitc.cli._options import ForceOpt

if TYPE_CHECKING:
    from vitc.build.tensorrt import BuildResult


def build(
    onnx: Annotated[Path, typer.Argument(help="export/<run>/model.<precision>.onnx")],
    out: Annotated[
        Optional[Path], typer.Option("--out", "-o", help="Plan path (default engines/<run>.<precision>.plan).")
    ] = None,
    batch: Annotated[Optional[str], typer.Option(help="MIN:OPT:MAX (or N) overriding the manifest's range.")] = None,
    workspace: Annotated[Optional[int], typer.Option(help="Workspace memory limit in MB (at least 1).")] = None,
    opt_level: Annotated[Optional[int], typer.Option(help="Builder optimisation level 0-5 (TensorRT 8.6+).")] = None,
    dla: Annotated[Optional[int], typer.Option("--dla", help="Run on DLA core N with GPU fallback (Jetson).")] = None,
    timing_cache: Annotated[
        Optional[Path], typer.Option(help="Timing cache file (default engines/timing-trt<ver>.cache).")
    ] = None,
    version_compatible: Annotated[
        bool, typer.Option("--version-compatible", help="Plan runs on later TensorRT (8.6+).")
    ] = False,
    hardware_compat: Annotated[str, typer.Option(help="none, ampere+ or same-cc (10.9+).")] = "none",
    precision: Annotated[
        Optional[str],
        typer.Option(
            "--precision",
            "-p",  # as `vitc export -p fp16`
            help="fp32, fp16 or int8: the precision of a file without a manifest or one in its name; it must be"
            " the one the ONNX file holds (an export's own, Q/DQ nodes for int8, float16 tensors for fp16).",
        ),
    ] = None,
    tf32: Annotated[
        bool,
        typer.Option(
            "--tf32", help="Let FP32 layers compute in TF32 (faster on Ampere+ and Orin, less exact; off by default)."
        ),
    ] = False,
    no_check: Annotated[
        bool, typer.Option("--no-check", help="Skip the held-out drift check after the build.")
    ] = False,
    force: ForceOpt = False,
) -> None:
    """Build a TensorRT engine for this machine's TensorRT and GPU; the drift check runs the held-out set."""
    from vitc.artifacts import BatchRange
    from vitc.build.options import BuildOptions, resolve_options
    from vitc.build.tensorrt import build_engine
    from vitc.cli._eval_report import say_removed

    opts = resolve_options(  # the defaults (precision, plan path) as a Python caller of build_engine gets them
        BuildOptions(
            onnx=onnx,
            output=out,
            precision=precision,  # type: ignore[arg-type]  # checked by resolve_options
            batch=BatchRange.parse(batch) if batch else None,
            workspace_mb=workspace,
            opt_level=opt_level,
            dla_core=dla,
            timing_cache=timing_cache,
            version_compatible=version_compatible,
            hardware_compat=hardware_compat,
            check=not no_check,
            tf32=tf32,
            replace_plan=force,  # an earlier plan is refused once the machine is checked (build_engine's preflight)
        )
    )
    result = build_engine(opts)
    terminal = console()
    for line in result.warnings:
        warn(line)  # one line each
    side = result.sidecar
    terminal.print(f"wrote {result.plan} (TensorRT {side.tensorrt}, {side.precision}, {side.build_seconds} s)")
    if result.removed_reports is not None:  # eval's reports of the plan it replaced (their failures: warnings)
        say_removed(result.removed_reports)
    if result.dla_fallback:
        count = len(result.dla_fallback)
        layers = "1 layer falls" if count == 1 else f"{count} layers fall"
        terminal.print(f"{layers} back to the GPU: " + _fallback_reasons(result))
    for label, key in (
        ("export drift (ONNX vs PyTorch)", "export_drift"),
        ("engine drift (TensorRT vs PyTorch)", "engine_drift"),
    ):
        drift = getattr(side, key)
        if drift:  # an older manifest may lack some of these figures
            parts = [
                template.format(drift[field])
                for field, template in DRIFT_FIELDS
                if isinstance(drift.get(field), (int, float))
            ]
            unlabelled = " (agreement only: generated inputs, no labels)" if drift.get("labels") is False else ""
            terminal.print(f"{label}{unlabelled}: " + ", ".join(parts))


def _fallback_reasons(result: BuildResult) -> str:
    """The GPU layers of a --dla build, grouped by why they are there."""
    pinned = set(result.dla_pinned)
    refused = [name for name in result.dla_fallback if name not in pinned]
    groups = (
        (refused, "DLA cannot run it" if len(refused) == 1 else "DLA cannot run them"),
        (result.dla_pinned, "pinned to FP32, which DLA does not run: it runs FP16 and INT8"),
    )
    return "; ".join(f"{', '.join(names)} ({why})" for names, why in groups if names)


DRIFT_FIELDS = (
    ("top1", "top-1 {:.2f}%"),
    ("delta_top1", "Δ top-1 {:+.2f}"),
    ("agreement", "agreement {:.2f}%"),
    ("max_abs_diff", "max |Δ| {:.3g}"),
    ("cosine", "cosine {:.5f}"),
)
