"""`vitc check`: lint an ONNX file against what a TensorRT version's ONNX parser accepts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console


def check(
    model: Annotated[Path, typer.Argument(help="ONNX file.")],
    trt: Annotated[str, typer.Option("--trt", help="TensorRT version: 8.5, 8.6, 10 or 11.")] = "10",
) -> None:
    """List ops, Q/DQ layouts and dynamic dims TensorRT would reject; exit 2 when there are any."""
    from vitc.errors import VitcError
    from vitc.export.onnx_export import read_onnx
    from vitc.export.trt_rules import check_onnx, check_version

    check_version(trt)
    if not model.is_file():
        raise VitcError(f"{model}: no such file")
    proto = read_onnx(model)
    findings = check_onnx(proto, trt)
    console = Console()
    for finding in findings:
        console.print(f"  {finding}", highlight=False)
    if findings:
        raise VitcError(f"{model}: {len(findings)} problem(s) for TensorRT {trt}")
    console.print(f"{model}: OK for TensorRT {trt} ({len(proto.graph.node)} nodes)")
