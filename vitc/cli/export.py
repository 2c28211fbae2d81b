"""`vitc export` and its helpers: checkpoint → ONNX (fp32/fp16/int8) with a drift report."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table
from typing_extensions import Annotated

from vitc._terminal import Fitted
from vitc.cli._console import console, library_warnings_printed
from vitc.cli._options import ForceOpt


def export(
    ckpt: Annotated[Path, typer.Argument(help="A vitc checkpoint (.safetensors) or run folder (its best).")],
    precision: Annotated[
        Optional[List[str]], typer.Option("--precision", "-p", help="fp32, fp16 or int8; repeatable (default fp32).")
    ] = None,
    run: Annotated[Optional[str], typer.Option(help="Run folder name (default: the checkpoint's folder).")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Export root.")] = Path("export"),
    trt: Annotated[Optional[str], typer.Option("--trt", help="Target TensorRT: 8.5, 8.6, 10 or 11.")] = None,
    opset: Annotated[
        Optional[int], typer.Option(help="ONNX opset, 14..22 (default 17; 16 for --trt 8.5; int8: at most 20).")
    ] = None,
    batch: Annotated[Optional[int], typer.Option(help="Static batch size (default 1).")] = None,
    dynamic_batch: Annotated[Optional[str], typer.Option(help="Dynamic batch range min:opt:max, e.g. 1:8:32.")] = None,
    data: Annotated[
        Optional[str],
        typer.Option(
            help="Held-out data: digits, cifar10, imagefolder or generated (agreement only; the default when "
            "no local data has the model's classes)."
        ),
    ] = None,
    data_dir: Annotated[Optional[Path], typer.Option(help="Folder of the held-out data set.")] = None,
    calib_data: Annotated[
        Optional[str], typer.Option(help="digits, cifar10 or imagefolder (default: training data).")
    ] = None,
    calib_dir: Annotated[
        Optional[Path],
        typer.Option(help="Calibration images: any folder of images (subfolders read), or --calib-data's folder."),
    ] = None,
    calib_images: Annotated[int, typer.Option(help="Calibration images.")] = 512,
    calib_method: Annotated[
        str,
        typer.Option(help="minmax, entropy or percentile (these two hold every image's activations in memory)."),
    ] = "minmax",
    exclude: Annotated[Optional[List[str]], typer.Option(help="Node-name pattern kept in float (repeatable).")] = None,
    max_drop: Annotated[Optional[float], typer.Option(help="Max top-1 loss in points (fp16 0.1, int8 1.0).")] = None,
    explain: Annotated[bool, typer.Option(help="Compare block outputs; name the first with cosine < 0.99.")] = False,
    io: Annotated[str, typer.Option("--io", help="I/O dtype: fp32, or fp16 with --precision fp16.")] = "fp32",
    high_precision_dtype: Annotated[
        Optional[str],
        typer.Option(
            help="int8: type of what is not quantized, fp16 (default; for GPUs) or fp32 (ONNX Runtime on CPUs)."
        ),
    ] = None,
    no_compile: Annotated[bool, typer.Option("--no-compile", help="Export the uncompiled model (naive).")] = False,
    force: ForceOpt = False,
) -> None:
    """Export a checkpoint (or a run folder's best) to ONNX with its precision baked in, checked against PyTorch.

    Drift is measured on held-out data, or on generated inputs (agreement only) when none has its classes."""
    from vitc.checkpoint import resolve_checkpoint
    from vitc.cli._eval_report import drop_stale_reports
    from vitc.errors import VitcError
    from vitc.export import ExportOptions, export_checkpoint
    from vitc.export.pipeline import output_paths, prepare_export, validate

    if io not in ("fp32", "fp16"):
        raise VitcError(f"--io must be fp32 or fp16, got {io!r}")
    terminal = console()

    def say(message: str) -> None:
        terminal.print(message)

    base = ExportOptions(
        out=out, run=run, trt=trt, opset=opset, batch=batch, dynamic_batch=dynamic_batch, data=data,
        data_dir=str(data_dir) if data_dir else None, calib_data=calib_data,
        calib_dir=str(calib_dir) if calib_dir else None, calib_images=calib_images, calib_method=calib_method,
        exclude=tuple(exclude or ()), max_drop=max_drop, explain=explain, io_fp16=io == "fp16", force=force,
        compile=not no_compile,
    )  # fmt: skip
    names = precision or ["fp32"]
    if high_precision_dtype is not None and "int8" not in names:  # with -p int8 among others, it is int8's
        raise VitcError(f"--high-precision-dtype applies to --precision int8 only, not {', '.join(names)}")
    hpd = {"int8": high_precision_dtype}
    all_opts = [replace(base, precision=name, high_precision_dtype=hpd.get(name)) for name in names]
    ckpt = resolve_checkpoint(ckpt)  # a run folder: its best checkpoint
    replaced = []  # ONNX files this export replaces (--force): eval's reports of them go once it succeeds
    for opts in all_opts:  # every option and output checked before any work
        validate(opts)
        onnx_path = output_paths(ckpt, opts)[1]
        replaced += [onnx_path] if onnx_path.exists() else []
    results = []
    with library_warnings_printed():  # skipped images and warnings, on stderr
        prepared = prepare_export(ckpt, all_opts[0], say, also=all_opts[1:])  # compiled and exported once for all
        for opts in all_opts:
            result = export_checkpoint(ckpt, opts, say=say, prepared=prepared)
            if result.explain:
                for row in result.explain["blocks"]:
                    cosine, most = row["cosine"], row["max_abs_diff"]
                    terminal.print(f"  {row['block']:<20} cosine {cosine:.5f}  max |Δ| {most:.3g}")
                first = result.explain["first_bad"] or "none"
                terminal.print(f"first block below {result.explain['threshold']}: {first}")
            terminal.print(f"wrote {result.onnx_path} and {result.manifest_path}", soft_wrap=True)
            drop_stale_reports(p for p in replaced if p == result.onnx_path)  # as each lands: a later one may fail
            results.append(result)
    terminal.print(_drift_table(results))
    terminal.print(_next_command(results), markup=False, highlight=False, soft_wrap=True)  # one line to copy


def _next_command(results: list) -> str:
    """What to run next: build the fastest precision where TensorRT is installed, else bench the
    exports on ONNX Runtime with their held-out set (as Ctrl-C in `vitc train` names `vitc export`)."""
    import importlib.util

    from vitc._text import shell_word
    from vitc.artifacts import FASTEST_FIRST, onnx_name

    paths = [r.onnx_path for r in results]
    fastest = next((q for p in FASTEST_FIRST for q in paths if q.name == onnx_name(p)), paths[0])
    spec = importlib.util.find_spec("tensorrt")
    if spec is not None and spec.origin is not None:  # tensorrt-stubs alone is a namespace without an origin
        return f"next: vitc build {shell_word(str(fastest))}"  # quoted: a path with a space pastes as one word
    engines = " ".join(f"-e {shell_word(str(q))}" for q in paths)
    where = f"(vitc build {shell_word(str(fastest))} on a machine with TensorRT)"  # pasteable there
    return f"next: vitc bench {engines} --data {shell_word(str(fastest.parent))}   {where}"


def _drift_table(results: list) -> Fitted:
    """One row per exported precision: PyTorch FP32 vs the ONNX Runtime artifact on the held-out split
    (or on generated inputs without labels: agreement only, no top-1)."""
    unlabelled = any((r.manifest.drift or {}).get("labels") is False for r in results)
    caption = "agreement only: generated inputs (random pixels) have no labels, so no top-1" if unlabelled else None
    table = Table(title="accuracy drift on ONNX Runtime (reference: PyTorch FP32)", caption=caption)
    table.add_column("precision")
    for column in ("images", "top-1 ref", "top-1", "Δ top-1", "agreement", "max |Δ|", "cosine"):
        table.add_column(column, justify="right", no_wrap=True)
    for result in results:
        d = result.manifest.drift or {}
        labelled = d.get("top1") is not None
        table.add_row(
            result.manifest.precision,
            f"{d['samples']}" if labelled else f"{d['samples']} generated",
            f"{d['reference_top1']:.2f}%" if labelled else "-",
            f"{d['top1']:.2f}%" if labelled else "-",
            f"{d['delta_top1']:+.2f}" if labelled else "-",
            f"{d['agreement']:.1f}%",
            f"{d['max_abs_diff']:.2e}",
            f"{d['cosine']:.5f}",
        )
    return Fitted(table)  # the figures whole at any width
