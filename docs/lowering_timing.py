"""Time convit_tiny compiled with each GPSA lowering (and with/without the zero qkv bias) against deit_tiny.

A measurement aid for docs/benchmarks.md and the choices in vitc.compile.pipeline, not part of
vitc. The variants are pipelines built from the registered passes; every one is checked against
the uncompiled model (max |Δ logits| printed) before timing, in interleaved rounds.

    python docs/lowering_timing.py --batch 1,8 --iterations 32 --rounds 8                 # PyTorch eager
    python docs/lowering_timing.py --onnxruntime --batch 1,8,32 --iterations 24 --rounds 6  # exported, ORT CPU
    python docs/lowering_timing.py --gemm       # qkv GEMM alone: bias-free mm vs addmm with a zero bias
    python docs/lowering_timing.py --subnormals # one positional product, subnormal table entries flushed vs kept
    python docs/lowering_timing.py --profile --batch 1,8 --iterations 40 --rounds 8  # per-op self ms vs deit_tiny
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from reference_timing import interleaved_medians

from vitc.bench import timing
from vitc.compile import PIPELINES, compile_model
from vitc.models import create_model

VARIANTS = {  # label: (GPSA lowering, zero qkv bias)
    "eager, zero qkv bias (cpu target)": ("eager", True),
    "sdpa, zero qkv bias": ("sdpa", True),
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
    from vitc._ort import ort_session
    from vitc.artifacts import BatchRange
    from vitc.export.onnx_export import clean, export_onnx

    spec = BatchRange.from_options(None, "1:8:32")

    def ort(name: str, model: torch.nn.Module) -> Callable[[np.ndarray], object]:
        proto = clean(export_onnx(model, (3, 224, 224), 17, spec))[0]
        print(f"  {name} exported: {proto.ByteSize() / 2**20:.2f} MiB")
        sess = ort_session(proto, threads=torch.get_num_threads())
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
    runners: Mapping[str, Callable[[Any], object]], x: Any, warmup: int, iterations: int, rounds: int
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


def subnormals(args: argparse.Namespace) -> None:
    """convit_tiny's first positional product (cpu target) with its tables as compiled, subnormal
    entries flushed to zero, and as rounded from float64 with them kept (what the pass did before)."""
    from vitc.compile.static_gpsa import StaticGPSA, separable_positional_attention
    from vitc.models.convit import GPSA

    convit = create_model("convit_tiny").eval()
    flushed = next(m for m in compile_model(convit, target="cpu")[0].modules() if isinstance(m, StaticGPSA))
    kept = copy.deepcopy(flushed)
    rows, cols = separable_positional_attention(next(m for m in convit.modules() if isinstance(m, GPSA)))
    side = rows.shape[-1]
    with torch.no_grad():
        kept.pos_rows.copy_(rows)
        kept.pos_cols.copy_(cols.unsqueeze(1).expand(-1, side, -1, -1).reshape(-1, side, side))
    tiny = torch.finfo(torch.float32).tiny
    count = sum(int(((t != 0) & (t.abs() < tiny)).sum()) for t in (kept.pos_rows, cols.float()))
    print(f"block 0: {count} subnormal entries in P_y and P_x (of {2 * rows.numel()}), none after the flush")
    print("| batch | flushed µs | subnormals kept µs | kept / flushed |")
    print("|---|---:|---:|---:|")
    with torch.inference_mode():
        for batch in (int(b) for b in args.batch.split(",")):
            qkv = torch.randn(batch, side * side, 3 * flushed.dim)
            runners = {"flushed": flushed._positional_heads_first, "kept": kept._positional_heads_first}
            ms = interleaved_calls(runners, qkv, args.warmup, 20 * args.iterations, args.rounds)
            print(
                f"| {batch} | {1e3 * ms['flushed']:.1f} | {1e3 * ms['kept']:.1f} | {ms['kept'] / ms['flushed']:.1f}× |"
            )


def profile(args: argparse.Namespace) -> None:
    """Per-op self time per forward, compiled deit_tiny vs convit_tiny, profiled in interleaved rounds.

    Each round profiles iterations/rounds forwards of each model in turn; an op's figure is its
    median over the rounds, so a burst of load from other processes moves both models alike.
    """
    from torch.profiler import profile as torch_profile

    models = {name: compile_model(create_model(name).eval(), target="cpu")[0] for name in ("deit_tiny", "convit_tiny")}
    per_round = max(1, args.iterations // args.rounds)
    for batch in (int(b) for b in args.batch.split(",")):
        x = torch.randn(batch, 3, 224, 224)
        rounds: dict[str, list[dict[str, tuple[int, float]]]] = {name: [] for name in models}
        with torch.inference_mode():
            for model in models.values():
                for _ in range(args.warmup):
                    model(x)
            for _ in range(args.rounds):
                for name, model in models.items():
                    with torch_profile() as prof:
                        for _ in range(per_round):
                            model(x)
                    rounds[name].append({e.key: (e.count, e.self_cpu_time_total) for e in prof.key_averages()})
        print(f"\nbatch {batch}: self ms per forward, median of {args.rounds} interleaved rounds")
        print_profile(rounds, per_round)


def print_profile(rounds: dict[str, list[dict[str, tuple[int, float]]]], per_round: int) -> None:
    """A table of calls and median self ms per forward for each op, largest convit_tiny − deit_tiny first."""

    def cell(name: str, op: str) -> tuple[int, float]:
        counts = [r.get(op, (0, 0.0)) for r in rounds[name]]
        return counts[0][0] // per_round, float(np.median([micros for _, micros in counts])) / 1e3 / per_round

    ops = set().union(*(r.keys() for runs in rounds.values() for r in runs))
    cells = {op: {name: cell(name, op) for name in rounds} for op in ops}
    names = list(rounds)
    print("| op | " + " | ".join(f"{n} calls | {n} ms" for n in names) + " | difference ms |")
    print("|---|" + "---:|---:|" * len(names) + "---:|")
    order = sorted(ops, key=lambda op: -max(ms for _, ms in cells[op].values()))[:14]
    for op in sorted(order, key=lambda op: -(cells[op][names[-1]][1] - cells[op][names[0]][1])):
        row = " | ".join(f"{calls} | {ms:.3f}" for calls, ms in cells[op].values())
        print(f"| {op} | {row} | {cells[op][names[-1]][1] - cells[op][names[0]][1]:+.3f} |")
    totals = {
        name: float(np.median([sum(ms for _, ms in r.values()) for r in runs])) / 1e3 / per_round
        for name, runs in rounds.items()
    }
    row = " | ".join(f"— | {ms:.2f}" for ms in totals.values())
    print(f"| all ops (median round) | {row} | {totals[names[-1]] - totals[names[0]]:+.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--onnxruntime", action="store_true", help="time the exported variants on ONNX Runtime CPU")
    mode.add_argument("--gemm", action="store_true", help="time the qkv GEMM alone, with and without a zero bias")
    mode.add_argument("--profile", action="store_true", help="per-op self time, compiled deit_tiny vs convit_tiny")
    mode.add_argument("--subnormals", action="store_true", help="the positional product with subnormals flushed/kept")
    parser.add_argument("--batch", default="1,8")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    modes = {"onnxruntime": onnxruntime, "gemm": gemm, "profile": profile, "subnormals": subnormals}
    run = next((function for name, function in modes.items() if getattr(args, name)), eager)
    run(args)


if __name__ == "__main__":
    main()
