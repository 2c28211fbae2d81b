"""Time convit_tiny compiled with each GPSA lowering (and with/without the zero qkv bias) against deit_tiny.

A measurement aid for docs/benchmarks.md and the choices in vitc.compile.pipeline, not part of
vitc. The variants are pipelines built from the registered passes; every one is checked against
the uncompiled model (max |Δ logits| printed) before timing, in interleaved rounds.

    python docs/lowering_timing.py --batch 1,8 --iterations 32 --rounds 8                 # PyTorch eager
    python docs/lowering_timing.py --onnxruntime --batch 1,8,32 --iterations 24 --rounds 6  # exported, ORT CPU
    python docs/lowering_timing.py --gemm       # qkv GEMM alone: bias-free mm vs addmm with a zero bias
    python docs/lowering_timing.py --profile    # per-op self time, compiled deit_tiny vs convit_tiny, batch 1
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from reference_timing import interleaved_medians

from vitc.bench import timing
from vitc.compile import PIPELINES, compile_model
from vitc.models import create_model

VARIANTS = {  # label: (GPSA lowering, zero qkv bias)
    "sdpa, zero qkv bias (cpu target)": ("sdpa", True),
    "sdpa, no bias": ("sdpa", False),
    "mix, zero qkv bias": ("mix", True),
}
ORT_VARIANTS = {"sdpa (onnx target)": ("sdpa", False), "mix": ("mix", False)}


def trained_like_convit() -> torch.nn.Module:
    """convit_tiny with gates and positional weights moved off their init, as after training."""
    torch.manual_seed(0)
    convit = create_model("convit_tiny").eval()
    with torch.no_grad():
        for block in convit.blocks:
            if hasattr(block.attn, "gating_param"):
                block.attn.gating_param.normal_()
                block.attn.pos_proj.weight.normal_()
    return convit


def variant(convit: torch.nn.Module, lowering: str, bias: bool, plain_sdpa: bool) -> torch.nn.Module:
    steps = [("static_gpsa", {"lowering": lowering, "qkv_bias": bias})]
    if plain_sdpa:
        steps.append(("static_attention", {"qkv_bias": bias}))
    PIPELINES["variant"] = tuple(steps)
    try:
        compiled, report = compile_model(convit, target="variant")
    finally:
        del PIPELINES["variant"]
    print(f"  {lowering}, bias={bias}: max |Δ logits| {report.max_abs_diff:.2e}")
    return compiled


def print_table(medians: dict[int, dict[str, float]]) -> None:
    batches = list(medians)
    print("| model | " + " | ".join(f"batch {b} ms" for b in batches) + " |")
    print("|---|" + "---:|" * len(batches))
    for name in medians[batches[0]]:
        print(f"| {name} | " + " | ".join(f"{medians[b][name]:.1f}" for b in batches) + " |")


def eager(args: argparse.Namespace) -> None:
    convit, deit = trained_like_convit(), create_model("deit_tiny").eval()
    models = {"deit_tiny eager": deit, "deit_tiny compiled": compile_model(deit)[0]}
    for label, (lowering, bias) in VARIANTS.items():
        models[f"convit_tiny {label}"] = variant(convit, lowering, bias, plain_sdpa=True)
    batches = [int(b) for b in args.batch.split(",")]
    print_table({b: interleaved_medians(models, b, args.warmup, args.iterations, args.rounds) for b in batches})


def onnxruntime(args: argparse.Namespace) -> None:
    from vitc.artifacts import BatchRange
    from vitc.export.onnx_export import clean, export_onnx, session

    spec = BatchRange.from_options(None, "1:8:32")

    def ort(name: str, model: torch.nn.Module) -> Callable[[np.ndarray], object]:
        proto = clean(export_onnx(model, (3, 224, 224), 17, spec))[0]
        print(f"  {name} exported: {proto.ByteSize() / 2**20:.2f} MiB")
        sess = session(proto, threads=torch.get_num_threads())
        return lambda x: sess.run(None, {"input": x})

    convit, deit = trained_like_convit(), create_model("deit_tiny").eval()
    runners = {"deit_tiny (onnx target)": ort("deit_tiny", compile_model(deit, target="onnx")[0])}
    for label, (lowering, bias) in ORT_VARIANTS.items():
        name = f"convit_tiny {label}"
        runners[name] = ort(name, variant(convit, lowering, bias, plain_sdpa=False))
    medians = {}
    for b in (int(b) for b in args.batch.split(",")):
        x = np.random.default_rng(0).standard_normal((b, 3, 224, 224), dtype=np.float32)
        medians[b] = interleaved_calls(runners, x, args.warmup, args.iterations, args.rounds)
    print_table(medians)


def interleaved_calls(
    runners: dict[str, Callable[[np.ndarray], object]], x: np.ndarray, warmup: int, iterations: int, rounds: int
) -> dict[str, float]:
    calls = {name: (lambda run=run: run(x)) for name, run in runners.items()}
    return timing.interleaved_medians(calls, warmup, iterations, rounds)


def gemm(args: argparse.Namespace) -> None:
    weight, zero = torch.randn(576, 192), torch.zeros(576)
    print("| tokens × 192 by 192 × 576 | mm (no bias) µs | addmm (zero bias) µs |")
    print("|---|---:|---:|")
    with torch.inference_mode():
        for tokens in (196, 8 * 196):
            x = torch.randn(tokens, 192)
            runners = {"mm": lambda x: F.linear(x, weight), "addmm": lambda x: F.linear(x, weight, zero)}
            ms = interleaved_calls(runners, x, args.warmup, 20 * args.iterations, args.rounds)
            print(f"| {tokens} | {1e3 * ms['mm']:.1f} | {1e3 * ms['addmm']:.1f} |")


def profile(args: argparse.Namespace) -> None:
    from torch.profiler import profile as torch_profile

    x = torch.randn(1, 3, 224, 224)
    tables = {}
    with torch.inference_mode():
        for name in ("deit_tiny", "convit_tiny"):
            model = compile_model(create_model(name).eval(), target="cpu")[0]
            for _ in range(args.warmup):
                model(x)
            with torch_profile() as prof:
                for _ in range(args.iterations):
                    model(x)
            tables[name] = {e.key: (e.count, e.self_cpu_time_total) for e in prof.key_averages()}
    print("| op | deit_tiny calls | deit_tiny ms | convit_tiny calls | convit_tiny ms |")
    print("|---|---:|---:|---:|---:|")
    ops = sorted(
        set(tables["deit_tiny"]) | set(tables["convit_tiny"]), key=lambda k: -tables["convit_tiny"].get(k, (0, 0))[1]
    )
    for op in ops[:14]:
        cells = []
        for name in tables:
            count, micros = tables[name].get(op, (0, 0.0))
            cells += [str(count // args.iterations), f"{micros / 1e3 / args.iterations:.3f}"]
        print(f"| {op} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--onnxruntime", action="store_true", help="time the exported variants on ONNX Runtime CPU")
    mode.add_argument("--gemm", action="store_true", help="time the qkv GEMM alone, with and without a zero bias")
    mode.add_argument("--profile", action="store_true", help="per-op self time per forward, batch 1")
    parser.add_argument("--batch", default="1,8")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    run = onnxruntime if args.onnxruntime else gemm if args.gemm else profile if args.profile else eager
    run(args)


if __name__ == "__main__":
    main()
