"""Time convit_tiny compiled with each GPSA lowering (and with/without the zero qkv bias) against deit_tiny.

A measurement aid for docs/benchmarks.md and the choice in vitc.compile.pipeline, not part of vitc.
The variants are pipelines built from the registered passes; every one is checked against the
uncompiled model (max |Δ logits| printed) before timing, in interleaved rounds.

    python docs/lowering_timing.py --batch 1,8 --iterations 32 --rounds 8
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from reference_timing import interleaved_medians

from vitc.compile import PIPELINES, compile_model
from vitc.models import create_model

VARIANTS = {
    "sdpa, zero qkv bias (cpu target)": ("sdpa", True),
    "sdpa, no bias": ("sdpa", False),
    "mix, zero qkv bias": ("mix", True),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", default="1,8")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()

    torch.manual_seed(0)
    convit = create_model("convit_tiny").eval()
    with torch.no_grad():  # gates and positional weights away from their init, as after training
        for block in convit.blocks:
            if hasattr(block.attn, "gating_param"):
                block.attn.gating_param.normal_()
                block.attn.pos_proj.weight.normal_()
    deit = create_model("deit_tiny").eval()
    models: dict[str, torch.nn.Module] = {"deit_tiny eager": deit, "deit_tiny compiled": compile_model(deit)[0]}
    for label, (lowering, bias) in VARIANTS.items():
        PIPELINES["variant"] = (
            ("static_gpsa", {"lowering": lowering, "qkv_bias": bias}),
            ("static_attention", {"qkv_bias": bias}),
        )
        compiled, report = compile_model(convit, target="variant")
        print(f"convit_tiny {label}: max |Δ logits| {report.max_abs_diff:.2e}")
        models[f"convit_tiny {label}"] = compiled
    del PIPELINES["variant"]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    batches = [int(b) for b in args.batch.split(",")]
    medians = {b: interleaved_medians(models, b, args.warmup, args.iterations, args.rounds) for b in batches}
    print("| model | " + " | ".join(f"batch {b} ms" for b in batches) + " |")
    print("|---|" + "---:|" * len(batches))
    for name in models:
        print(f"| {name} | " + " | ".join(f"{medians[b][name]:.1f}" for b in batches) + " |")


if __name__ == "__main__":
    main()
