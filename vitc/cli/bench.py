"""`vitc bench`: latency and throughput of engines and models, side by side, with optional accuracy.

`--engine x.plan` / `--engine x.onnx` imports no torch: this command runs on a Jetson with only
numpy, TensorRT, cuda-python (or pycuda), typer and rich.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import typer
from rich.console import Console
from typing_extensions import Annotated

from vitc._lazy import require_training
from vitc.cli._console import console, warn
from vitc.cli._options import ForceOpt
from vitc.errors import DEVICES, VitcError, unknown_device


def bench(
    engine: Annotated[
        Optional[List[Path]],
        typer.Option("--engine", "-e", help="A .plan (TensorRT) or .onnx (ONNX Runtime) file. Repeatable."),
    ] = None,
    model: Annotated[
        Optional[List[str]], typer.Option("--model", "-m", help="A zoo model name, run in PyTorch. Repeatable.")
    ] = None,
    ckpt: Annotated[
        Optional[Path], typer.Option("--ckpt", help="A vitc checkpoint or run folder (its best), run in PyTorch.")
    ] = None,
    compare: Annotated[
        bool, typer.Option("--compare", help="PyTorch: uncompiled vs vitc-compiled side by side.")
    ] = False,
    torch_compile: Annotated[
        bool, typer.Option("--torch-compile", help="PyTorch: also run each variant under torch.compile.")
    ] = False,
    device: Annotated[
        str,
        typer.Option(
            help="cpu, cuda or auto (the GPU where the backend has one, as in eval and predict): PyTorch's device, "
            "ONNX Runtime's CPU or GPU provider (plans: the GPU)."
        ),
    ] = "cpu",
    autocast: Annotated[
        Optional[str],
        typer.Option(help="PyTorch runners: autocast to fp16 or bf16 (default fp32). Artifacts keep their own."),
    ] = None,
    precision: Annotated[
        Optional[str], typer.Option("--precision", hidden=True, help="Deprecated alias of --autocast.")
    ] = None,
    batch: Annotated[
        Optional[str],
        typer.Option("--batch", "-b", help="Batch sizes, e.g. 1,8,32 (default 1, or a static-batch engine's)."),
    ] = None,
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
    cuda_graph: Annotated[
        bool,
        typer.Option(
            "--cuda-graph",
            help="Launch through CUDA graphs (one per batch size): TensorRT plans, and PyTorch with --device cuda.",
        ),
    ] = False,
    threads: Annotated[
        Optional[int], typer.Option(min=1, max=4096, help="CPU threads (default: all cores available).")
    ] = None,
    json_out: Annotated[
        Optional[Path], typer.Option("--json", help="Write the figures as JSON (- for stdout).")
    ] = None,
    markdown: Annotated[
        Optional[Path], typer.Option("--markdown", help="Write the figures as a Markdown table (- for stdout).")
    ] = None,
    force: ForceOpt = False,
) -> None:
    """Benchmark engines (--engine, repeatable) and/or a PyTorch model (--model/--ckpt); the first is the baseline."""
    from vitc._io import report_path, to_stdout
    from vitc.artifacts import load_heldout
    from vitc.bench.report import JSON_REPORT, MARKDOWN_REPORT
    from vitc.bench.runner import bench_runners, parse_batches
    from vitc.bench.timing import TimingPlan

    if to_stdout(json_out) and to_stdout(markdown):
        raise VitcError("--json - and --markdown - both ask for stdout: write one of them to a file")
    terminal = console(stderr=to_stdout(json_out) or to_stdout(markdown))  # `-`: stdout carries the report alone
    dtype = _autocast(autocast, precision, terminal)
    if not engine and not model and ckpt is None:
        raise VitcError("nothing to benchmark: give --engine PATH (repeatable) and/or --model NAME / --ckpt PATH")
    if (compare or torch_compile) and not model and ckpt is None:
        raise VitcError("--compare and --torch-compile apply to PyTorch: give --model NAME or --ckpt PATH")
    if device not in DEVICES:  # a typo would pass unseen: the engines' runners read "cpu" and "cuda"
        raise unknown_device(device, DEVICES)
    if model or ckpt is not None:  # before any engine is loaded: one line on a Jetson's runtime install
        require_training("vitc bench --model / --ckpt")
    for path, kind, option in ((json_out, JSON_REPORT, "--json"), (markdown, MARKDOWN_REPORT, "--markdown")):
        if path is not None:
            report_path(path, kind, option, force, stdout=True)
    batches = None if batch is None else parse_batches(batch)
    plan = TimingPlan(warmup=warmup, iterations=iterations, duration=duration)
    heldout = load_heldout(data) if data is not None else None
    runners = _engine_runners(engine or [], device=device, threads=threads, cuda_graph=cuda_graph)
    runners += _pytorch_runners(
        model or [], ckpt, compare=compare, torch_compile=torch_compile, device=device, autocast=dtype,
        cuda_graph=cuda_graph, threads=threads,
    )  # fmt: skip
    jetson, warnings = _platform()

    def loaded() -> None:  # a machine that cannot run the engines says so first, not after the clock warnings
        for line in warnings:
            warn(line)  # one line each

    report = bench_runners(runners, batches, plan, heldout=heldout, rounds=rounds, loaded=loaded)
    report.warnings[:0] = warnings
    if jetson is not None:
        report.environment["jetson"] = jetson
    for line in report.warnings[len(warnings) :]:
        warn(line)  # one line each
    if not report.rows:  # every batch asked was skipped (said above): no table, no report files
        raise VitcError(f"nothing was timed: no runner takes batch {batch} (the warnings above say which they take)")
    terminal.print(report.to_table())
    _write_report(report, json_out, markdown, terminal)


def _autocast(autocast: Optional[str], precision: Optional[str], terminal: Console) -> str:
    """--autocast, or the deprecated --precision it replaces (kept for one release, with a warning), checked
    whatever is benched (with engines alone, `--autocast fp8` was accepted and ignored)."""
    from vitc.engines import AUTOCAST

    given = autocast if autocast is not None else precision
    if given is not None and given not in AUTOCAST:
        option = "--autocast" if autocast is not None else "--precision"
        raise VitcError(f"{option} takes {', '.join(AUTOCAST)}, not {given!r}")
    if precision is not None:
        if autocast is not None and autocast != precision:
            raise VitcError(
                f"--precision is the old name of --autocast: give one of them, not {precision} and {autocast}"
            )
        warn(f"vitc bench --precision is deprecated: use --autocast {precision}")
    return given or "fp32"


def _engine_runners(paths: List[Path], *, device: str, threads: Optional[int], cuda_graph: bool) -> list:
    """One runner per --engine file, named by folder/file; an export's precision comes from its manifest."""
    from vitc.artifacts import manifest_for
    from vitc.artifacts.given import FILE, MISSING, not_taken, path_kind
    from vitc.engines import SUFFIXES, backend_for_path, runner_for_path

    runners: list = []
    for path in paths:
        if path_kind(path) not in (FILE, MISSING):  # a missing file: its suffix is checked first, below
            raise not_taken(path, "an .onnx or .plan file", tuple(SUFFIXES), pytorch="--ckpt")
        if backend_for_path(path) == "onnxrt":
            manifest = manifest_for(path)
            runner = runner_for_path(
                path,
                device=device,  # cuda: ONNX Runtime's CUDA provider, or one line where it has none
                threads=threads,
                precision=manifest.precision if manifest is not None else None,
                cuda_graph=cuda_graph,
            )
        else:
            runner = runner_for_path(path, cuda_graph=cuda_graph)
        runner.name = _unique(
            f"{path.parent.name}/{path.name}" if path.parent.name else path.name, [r.name for r in runners]
        )
        runners.append(runner)
    return runners


def _pytorch_runners(
    models: List[str],
    ckpt: Optional[Path],
    *,
    compare: bool,
    torch_compile: bool,
    device: str,
    autocast: str,
    cuda_graph: bool = False,
    threads: Optional[int] = None,
) -> list:
    """PyTorch runners for --ckpt and each --model (on --threads CPU threads, as ONNX Runtime's); torch is
    imported only here, when they are asked for."""
    from vitc.bench.runner import torch_runners
    from vitc.checkpoint import resolve_checkpoint

    sources = [(None, resolve_checkpoint(ckpt))] if ckpt is not None else []  # a run folder: its best
    sources += [(name, None) for name in models]
    runners: list = []
    for name, path in sources:
        runners += torch_runners(
            name, path, compare=compare, torch_compile=torch_compile, device=device, autocast=autocast,
            cuda_graph=cuda_graph, threads=threads,
        )  # fmt: skip
    return runners


def _platform() -> Tuple[Optional[Dict[str, str]], List[str]]:
    """On a Jetson: its facts for the report and the power-mode warnings (MAXN, clocks); elsewhere nothing."""
    from vitc.engines.platform import jetson_info, jetson_power_warnings

    jetson = jetson_info()
    if jetson is None:
        return None, []
    facts, warnings = jetson_power_warnings()
    jetson.update({k: str(v) for k, v in facts.items()})
    return jetson, list(warnings)


def _write_report(report: Any, json_out: Optional[Path], markdown: Optional[Path], terminal: Console) -> None:
    from vitc._io import to_stdout, write_report

    for path, text in ((json_out, report.to_json), (markdown, report.to_markdown)):
        if path is not None:
            write_report(path, text())
            if not to_stdout(path):
                terminal.print(f"wrote {path}")


def _unique(name: str, taken: list[str]) -> str:
    candidate, n = name, 2
    while candidate in taken:
        candidate, n = f"{name} #{n}", n + 1
    return candidate
