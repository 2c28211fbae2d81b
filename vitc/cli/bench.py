"""`vitc bench`: latency and throughput of engines and models, side by side, with optional accuracy.

`--engine x.plan` / `--engine x.onnx` imports no torch: this command runs on a Jetson with only
numpy, TensorRT, cuda-python (or pycuda), typer and rich.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from typing_extensions import Annotated

from vitc.cli._console import console, labelled
from vitc.errors import VitcError


def bench(
    engine: Annotated[
        Optional[List[Path]],
        typer.Option("--engine", "-e", help="A .plan (TensorRT) or .onnx (ONNX Runtime) file. Repeatable."),
    ] = None,
    model: Annotated[
        Optional[List[str]], typer.Option("--model", "-m", help="A zoo model name, run in PyTorch. Repeatable.")
    ] = None,
    ckpt: Annotated[Optional[Path], typer.Option("--ckpt", help="A vitc checkpoint, run in PyTorch.")] = None,
    compare: Annotated[
        bool, typer.Option("--compare", help="PyTorch: uncompiled vs vitc-compiled side by side.")
    ] = False,
    torch_compile: Annotated[
        bool, typer.Option("--torch-compile", help="PyTorch: also run each variant under torch.compile.")
    ] = False,
    device: Annotated[str, typer.Option(help="cpu or cuda (PyTorch; ONNX Runtime: cpu forces the CPU EP).")] = "cpu",
    precision: Annotated[str, typer.Option(help="PyTorch autocast: fp32, fp16 or bf16.")] = "fp32",
    batch: Annotated[str, typer.Option("--batch", "-b", help="Batch sizes, e.g. 1,8,32.")] = "1",
    warmup: Annotated[int, typer.Option(help="Warm-up calls per batch size (not timed).")] = 5,
    iterations: Annotated[int, typer.Option("--iterations", "-n", help="Timed calls per batch size.")] = 30,
    rounds: Annotated[
        int, typer.Option(help="Interleave the runners in this many rounds (fair ratios on a shared machine).")
    ] = 1,
    duration: Annotated[
        Optional[float], typer.Option(help="Time for this many seconds instead of --iterations.")
    ] = None,
    data: Annotated[
        Optional[Path],
        typer.Option(help="heldout.npz or an export folder: also measure accuracy through each runner."),
    ] = None,
    cuda_graph: Annotated[bool, typer.Option("--cuda-graph", help="TensorRT: launch through a CUDA graph.")] = False,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads (default: all cores available).")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the figures as JSON.")] = None,
    markdown: Annotated[
        Optional[Path], typer.Option("--markdown", help="Write the figures as a Markdown table.")
    ] = None,
) -> None:
    """Benchmark engines (--engine, repeatable) and/or a PyTorch model (--model/--ckpt); the first is the baseline."""
    from vitc._io import atomic_write
    from vitc.artifacts import load_heldout, manifest_for
    from vitc.bench.runner import bench_runners, parse_batches, torch_runners
    from vitc.bench.timing import TimingPlan
    from vitc.engines import backend_for_path, runner_for_path
    from vitc.engines.base import BaseRunner
    from vitc.engines.platform import jetson_info, jetson_power_warnings

    if not engine and not model and ckpt is None:
        raise VitcError("nothing to benchmark: give --engine PATH (repeatable) and/or --model NAME / --ckpt PATH")
    if (compare or torch_compile) and not model and ckpt is None:
        raise VitcError("--compare and --torch-compile apply to PyTorch: give --model NAME or --ckpt PATH")
    batches = parse_batches(batch)
    plan = TimingPlan(warmup=warmup, iterations=iterations, duration=duration)
    heldout = load_heldout(data) if data is not None else None

    runners: list[BaseRunner] = []
    precisions: dict[str, str] = {}
    for path in engine or []:
        backend = backend_for_path(path)
        if backend == "onnxrt":
            runner = runner_for_path(path, device="cpu" if device == "cpu" else "auto", threads=threads)
        else:
            runner = runner_for_path(path, cuda_graph=cuda_graph)
        runner.name = _unique(
            f"{path.parent.name}/{path.name}" if path.parent.name else path.name, [r.name for r in runners]
        )
        manifest = manifest_for(path) if backend == "onnxrt" else None
        if manifest is not None:
            precisions[runner.name] = manifest.precision
        runners.append(runner)
    sources = [(None, ckpt)] if ckpt is not None else []
    sources += [(name, None) for name in model or []]
    for name, path in sources:  # torch is imported only here, when PyTorch runners are asked for
        runners += torch_runners(
            name, path, compare=compare, torch_compile=torch_compile, device=device, precision=precision
        )

    terminal = console()
    warnings: list[str] = []
    jetson = jetson_info()
    if jetson is not None:
        facts, warnings = jetson_power_warnings()
        jetson.update({k: str(v) for k, v in facts.items()})
    for line in warnings:
        terminal.print(labelled("warning:", "yellow", line), soft_wrap=True)  # one line each

    report = bench_runners(runners, batches, plan, heldout=heldout, precisions=precisions, rounds=rounds)
    report.warnings[:0] = warnings
    if jetson is not None:
        report.environment["jetson"] = jetson
    for line in report.warnings[len(warnings) :]:
        terminal.print(labelled("warning:", "yellow", line), soft_wrap=True)  # one line each
    terminal.print(report.to_table())
    if json_out is not None:
        with atomic_write(json_out) as tmp:
            tmp.write_text(report.to_json())
        terminal.print(f"wrote {json_out}")
    if markdown is not None:
        with atomic_write(markdown) as tmp:
            tmp.write_text(report.to_markdown())
        terminal.print(f"wrote {markdown}")


def _unique(name: str, taken: list[str]) -> str:
    candidate, n = name, 2
    while candidate in taken:
        candidate, n = f"{name} #{n}", n + 1
    return candidate
