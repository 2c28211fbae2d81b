"""`vitc doctor`: what this machine has for each command, and what is missing."""

from __future__ import annotations

import importlib.metadata
import platform
import sys
from typing import Any

import typer
from rich.table import Table
from rich.text import Text
from typing_extensions import Annotated


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def gather() -> dict[str, Any]:
    """Facts, importing only what is installed (torch and tensorrt only when present)."""
    from vitc._lazy import has_module
    from vitc.engines.platform import jetson_info, nvidia_smi_gpus

    facts: dict[str, Any] = {"python": platform.python_version(), "platform": sys.platform + " " + platform.machine()}
    facts["torch"] = None
    if has_module("torch"):
        import torch

        facts["torch"] = {
            "version": torch.__version__,
            "cuda": torch.version.cuda,
            "cuda_available": torch.cuda.is_available(),
        }
    facts["onnx"] = _version("onnx")
    facts["onnxruntime"] = None
    if has_module("onnxruntime"):
        import onnxruntime

        facts["onnxruntime"] = {"version": onnxruntime.__version__, "providers": onnxruntime.get_available_providers()}
    facts["tensorrt"] = None
    if has_module("tensorrt"):
        try:
            import tensorrt

            if not hasattr(tensorrt, "__version__"):
                raise ImportError("only tensorrt-stubs is installed, not TensorRT")

            facts["tensorrt"] = {"version": tensorrt.__version__}
            try:
                facts["tensorrt"]["dla_cores"] = int(tensorrt.Builder(tensorrt.Logger()).num_DLA_cores)
            except Exception:  # no GPU or driver: the version is still worth showing
                facts["tensorrt"]["dla_cores"] = None
        except ImportError as exc:  # e.g. the stubs-only package or missing libnvinfer
            facts["tensorrt"] = {"version": None, "error": str(exc).splitlines()[0]}
    facts["cuda_binding"] = binding_facts()
    facts["gpus"] = [g.to_dict() for g in nvidia_smi_gpus()]
    facts["jetson"] = jetson_info()
    return facts


def binding_facts() -> dict[str, Any]:
    """Which CUDA bindings `vitc bench --engine` would use, for which driver, and why the others were not."""
    from vitc.engines.cuda import choose_bindings

    facts = choose_bindings().to_dict()
    dist = {"cuda-python": ("cuda-bindings", "cuda-python"), "pycuda": ("pycuda",)}.get(facts["kind"] or "", ())
    facts["version"] = next((v for v in map(_version, dist) if v), None)
    return facts


def _binding_text(facts: dict[str, Any]) -> Text:
    """Plain text (the install hint's 'vitc[trt-cu11]' is no markup) with 'missing' in red."""
    if facts["kind"] is None:
        return Text.assemble(("missing", "red"), f" ({facts['reason']})")
    text = f"{facts['kind']} {facts['version'] or ''} ({facts['module']}): {facts['reason']}"
    return Text(text + "".join(f"; not chosen: {why}" for why in facts["rejected"]))


def requirements(facts: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(command, what it needs, present?) rows."""
    from vitc import _lazy

    training = _lazy.TRAINING_PYTHON
    py = f"Python >= {training[0]}.{training[1]}, "  # the training side; the runtime rows also run on 3.8
    torch_ok = facts["torch"] is not None and sys.version_info[:2] >= training
    trt_ok = bool(facts["tensorrt"] and facts["tensorrt"].get("version"))
    gpu_ok = bool(facts["gpus"]) or facts["jetson"] is not None
    ort_ok = facts["onnxruntime"] is not None
    return [
        ("train / compile / eval ckpt", py + "torch", torch_ok),
        ("export", py + "torch, onnx, onnxruntime", torch_ok and facts["onnx"] is not None and ort_ok),
        (
            "build",
            "tensorrt, cuda-python or pycuda, an NVIDIA GPU",
            trt_ok and facts["cuda_binding"]["kind"] is not None and gpu_ok,
        ),
        ("bench / predict / eval x.onnx", "onnxruntime", ort_ok),
        (
            "bench / predict / eval x.plan",
            "tensorrt, cuda-python or pycuda, an NVIDIA GPU",
            trt_ok and facts["cuda_binding"]["kind"] is not None and gpu_ok,
        ),
        ("bench --model / --compare", py + "torch", torch_ok),
        ("bench --device cuda", py + "torch with CUDA and a GPU", torch_ok and facts["torch"]["cuda_available"]),
    ]


def doctor(json_out: Annotated[bool, typer.Option("--json", help="Print the facts as JSON.")] = False) -> None:
    """Check Python, torch, ONNX Runtime, TensorRT, CUDA bindings, GPUs and Jetson/DLA for each command."""
    facts = gather()
    if json_out:
        import json

        typer.echo(
            json.dumps(
                {
                    "facts": facts,
                    "commands": [dict(zip(("command", "needs", "ok"), r)) for r in requirements(facts)],
                },
                indent=2,
            )
        )
        return
    from vitc.cli._console import console as plain_console

    console = plain_console()
    missing = Text("missing", style="red")
    table = Table(title="vitc doctor: this machine")
    table.add_column("component")
    table.add_column("status")
    for key, value in facts.items():
        if key == "cuda_binding":
            table.add_row(key, _binding_text(value))
            continue
        if value in (None, [], {}):
            text: str | Text = missing
        elif isinstance(value, dict):
            text = ", ".join(f"{k}: {v}" for k, v in value.items())
        elif isinstance(value, list):
            text = "; ".join(", ".join(f"{k}: {v}" for k, v in g.items() if v) for g in value)
        else:
            text = str(value)
        table.add_row(key, text)
    console.print(table)
    needs = Table(title="what each command needs")
    for column in ("command", "needs", "status"):
        needs.add_column(column)
    for command, what, ok in requirements(facts):
        needs.add_row(command, what, Text("ready", style="green") if ok else missing)
    console.print(needs)
