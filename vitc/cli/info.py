"""`vitc info ARTIFACT`: what a checkpoint, ONNX file, export folder or TensorRT plan says about itself."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from vitc.errors import VitcError


def describe(path: Path) -> dict[str, Any]:
    """The metadata of an artifact, as a JSON-able record (no torch; onnx only for .onnx)."""
    if not path.exists():
        raise VitcError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if path.is_dir() or (path.name.startswith("manifest.") and path.suffix == ".json"):
        from vitc.engines.manifest import load_manifest

        return {"kind": "vitc export", **load_manifest(path).raw}
    if suffix == ".safetensors":
        from vitc.checkpoint import read_meta

        meta = read_meta(path)
        return {"kind": "vitc checkpoint", **meta.__dict__}
    if suffix == ".onnx":
        from vitc._lazy import lazy_import
        from vitc.engines.manifest import manifest_for
        from vitc.export.onnx_export import read_onnx

        onnx = lazy_import("onnx")
        model = read_onnx(path, external_data=False)

        def io(values: Any) -> list[dict[str, Any]]:
            return [
                {
                    "name": v.name,
                    "shape": [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim],
                    "elem_type": onnx.TensorProto.DataType.Name(v.type.tensor_type.elem_type),
                }
                for v in values
            ]

        manifest = manifest_for(path)
        return {
            "kind": "onnx",
            "ir_version": model.ir_version,
            "opsets": {o.domain or "ai.onnx": o.version for o in model.opset_import},
            "producer": f"{model.producer_name} {model.producer_version}".strip(),
            "metadata": {p.key: p.value for p in model.metadata_props},
            "inputs": io(model.graph.input),
            "outputs": io(model.graph.output),
            "nodes": len(model.graph.node),
            "manifest": None if manifest is None else str(manifest.path),
        }
    if suffix in (".plan", ".engine", ".trt"):
        from vitc.engines.tensorrt import plan_summary

        return {"kind": "tensorrt plan", **plan_summary(path)}
    raise VitcError(f"{path}: unknown artifact (expected .safetensors, .onnx, .plan or an export folder)")


def info(
    artifact: Annotated[Path, typer.Argument(help="A checkpoint, ONNX file, export folder or .plan.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Show an artifact's metadata without loading it into a framework."""
    record = describe(artifact)
    if json_out:
        typer.echo(json.dumps(record, indent=2, default=str))
        return
    from rich.table import Table

    table = Table(title=f"{artifact} ({record['kind']})", show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value")
    for key, value in record.items():
        if key == "kind":
            continue
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        table.add_row(key, text if len(text) < 400 else text[:400] + " …")
    Console().print(table)
