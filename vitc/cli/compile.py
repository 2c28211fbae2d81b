"""`vitc compile`: run the compiler passes on a checkpoint or a zoo model and show what they did."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer
from rich.table import Table
from typing_extensions import Annotated

from vitc._io import ReportKind, json_report
from vitc._terminal import Fitted
from vitc.cli._console import console as plain_console
from vitc.cli._options import ForceOpt

if TYPE_CHECKING:
    from torch import nn

COMPILE_JSON = ReportKind("vitc compile report", ".json", json_report("target", "rows", "max_abs_diff", "tolerance"))
PROGRAM_FILES = ("model.pt2", "compile_report.json", "compile_report.md")  # what --out DIR receives
COMPILE_HINT = "freeing the GPU (other processes on it) or compiling on the CPU"  # out of GPU memory: what to try


def compile_(
    source: Annotated[str, typer.Argument(help="A vitc checkpoint (.safetensors) or a model name (random weights).")],
    target: Annotated[str, typer.Option("--target", "-t", help="cpu, cuda, onnx or tensorrt.")] = "cpu",
    json_path: Annotated[
        Optional[Path], typer.Option("--json", help="Also write the report as JSON here (- for stdout).")
    ] = None,
    out: Annotated[
        Optional[Path],
        typer.Option("--out", help="Folder for the compiled model as a torch.export program and its report."),
    ] = None,
    force: ForceOpt = False,
) -> None:
    """Rewrite GPSA, spatial priors and CvT projections into static modules; check the logits are unchanged.

    With --out DIR: DIR/model.pt2 (torch.export.save; Torch-TensorRT takes it) and compile_report.json/.md.
    """
    import time

    from vitc._io import atomic_write, json_text, refuse_to_replace, report_path, to_stdout, write_json, write_report
    from vitc.compile import TARGETS, compile_model
    from vitc.compile.pipeline import CHECK_BATCH
    from vitc.compile.program import CHECK_BATCHES
    from vitc.errors import VitcError, gpu_errors

    if target not in TARGETS:
        raise VitcError(f"unknown compile target {target!r} (choose one of: {', '.join(TARGETS)})")
    if json_path is not None:
        report_path(json_path, COMPILE_JSON, "--json", force, stdout=True)
    if out is not None:  # a compiled model there is replaced only with --force, as export's ONNX files
        refuse_to_replace((out / name for name in PROGRAM_FILES), force)
    started = time.perf_counter()
    model, class_names = _load(source)
    loaded = time.perf_counter() - started
    with gpu_errors(f"checking the compiled model at batch size {CHECK_BATCH}", COMPILE_HINT):
        compiled, report = compile_model(model, target=target)
    total = time.perf_counter() - started

    table = Table(title=f"vitc compile {report.model} → {target}")
    table.add_column("pass", overflow="fold")
    for column in ("fired", "max |Δ logits|"):
        table.add_column(column, justify="right", no_wrap=True)
    for row in report.rows:
        table.add_row(row.name, str(row.fired), "-" if row.max_abs_diff is None else f"{row.max_abs_diff:.2e}")
    table.add_section()
    table.add_row("pipeline", str(sum(r.fired for r in report.rows)), f"{report.max_abs_diff:.2e}")
    console = plain_console(stderr=to_stdout(json_path))  # `--json -`: stdout carries the JSON alone
    console.print(Fitted(table))  # the figures whole at any width
    size = "x".join(str(s) for s in report.input_size)
    inputs = f"{report.check_batch} random {size} input{'s' * (report.check_batch != 1)}"
    console.print(
        f"checked on {inputs} (tolerance {report.tolerance:g}); "
        f"load {loaded:.2f} s, compile+check {report.seconds:.2f} s, total {total:.2f} s"
    )
    record = {**report.to_dict(), "source": source, "load_seconds": loaded, "total_seconds": total}
    if out is not None:
        from vitc.compile.program import export_program, program_meta

        meta = program_meta(model, class_names, record)
        program, report_json, report_md = (out / name for name in PROGRAM_FILES)
        checked = ", ".join(map(str, CHECK_BATCHES))
        with gpu_errors(f"exporting the program (checked at batch sizes {checked})", COMPILE_HINT):
            record["export"] = export_program(compiled, report.input_size, program, meta)
        write_json(report_json, record)
        with atomic_write(report_md) as tmp:
            tmp.write_text(report.to_markdown())
        console.print(f"wrote {program} (batch 1..N, checked at batch 1 and 3) and compile_report.json/.md")
    if json_path is not None:
        write_report(json_path, json_text(record))
        if not to_stdout(json_path):
            console.print(f"wrote {json_path}")


def _load(source: str) -> tuple[nn.Module, list[str] | None]:
    """(model, class names) from a checkpoint path (anything that exists or ends in .safetensors), a run
    folder (its best checkpoint) or a registered model name (random weights, no class names)."""
    from vitc.errors import VitcError

    path = Path(source)
    if path.suffix == ".safetensors" or path.exists():
        from vitc.checkpoint import read_checkpoint, resolve_checkpoint

        path = resolve_checkpoint(path)
        if not path.is_file():
            raise VitcError(f"checkpoint {path} not found")
        model, meta = read_checkpoint(path)
        return model, meta.class_names
    from vitc.models import create_model

    return create_model(source).eval(), None  # an unknown name is a VitcError with suggestions
