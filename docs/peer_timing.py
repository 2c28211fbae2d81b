"""vitc beside timm in one process: training steps and inference, eager and torch.compile, per family.

A measurement aid for issue 20 ("train and run every family on CUDA at least as fast as timm"), not
part of vitc; docs/gpu_check.py runs it as its `peers` section on a lent GPU, where timm is
installed. Every pair is the same architecture (timm's weights are loaded into vitc's model and
max |Δ logits| is printed first); SP-ViT and CvT have no timm model and are compared with timm's
DeiT of their size per GMAC, as the issue's table does.

Training: one step = forward in training mode, cross-entropy, backward, AdamW (docs/training_timing.py's
`Variant`), every variant in turn for `--rounds` rounds; img/s is batch over the median step time,
per GMAC = (img/s × GMACs) / (timm DeiT's img/s × its GMACs), and MFU = img/s × 6 × GMACs / peak
(6 × MACs per image for forward and backward, against `--peak-tflops`: issue 20's 790 TFLOP/s for the
H200's dense bf16; this workplace's 8192³ bf16 matrix products ran at 788 on its H200 and 798 on its H100,
and docs/gpu_check.py records the lent GPU's own rate beside). `--models` keeps some pairs of a size (its
DeiT stays: the ratios divide by it); `--compile-side vitc` compiles vitc's models only, whose compiled rows
then compare with the peer's eager DeiT (and no other peer is built). Models are built on `--device`.
With `--json` the training rows are written as they are measured
(each model's first round as soon as it is built and compiled, then after every round), so a run stopped
during a later compile or the inference rows keeps them. MFU is n/a for fp32 rows (`--amp off`): the peak
is the tensor cores' bf16 rate.
With `--ops` each eager training row also counts the aten operators one step dispatches (forward,
backward and AdamW; docs/operator_counts.py): on a GPU each is at least one kernel launch, so a
pair with the same maths and more operators has a cost the timings alone do not explain; every
operator whose count differs within a pair is listed. Without torchvision (timm imports it for its
data pipelines only), a stand-in module lets timm's models load. `--gpu-branches` makes a CPU run
vitc's GPU code paths, so that the operators a GPU step launches can be counted without one.
Inference: median ms per forward at each `--infer-batch`, timm eager against vitc compiled (the
`cuda` compile target), each also under torch.compile with `--compile`. torch.compile's first
call (the compilation) is timed separately and reported as compile seconds.

    python docs/peer_timing.py --device cuda --amp bf16 --batch 128 --compile
    python docs/peer_timing.py --device cuda --amp bf16 --batch 256 --compile --sizes small --train-only
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
# size → (timm name or None, vitc name); the first pair of each size is the DeiT every ratio divides by.
PAIRS: dict[str, tuple[tuple[str | None, str], ...]] = {
    "tiny": (("deit_tiny_patch16_224", "deit_tiny"), ("convit_tiny", "convit_tiny")),
    "small": (
        ("deit_small_patch16_224", "deit_small"),
        ("convit_small", "convit_small"),
        (None, "cvt_13"),  # before SP-ViT-S: a run stopped in SP-ViT's FlexAttention warm-up keeps CvT's rows
        (None, "spvit_s"),
    ),
}
ISSUE_BF16_PEAK_TFLOPS = 790.0  # issue 20: "the H200's dense bf16 peak (790 TFLOP/s)"


def _doc_script(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, ROOT / "docs" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _training_timing() -> Any:
    return _doc_script("training_timing")


def timm_factory() -> Callable[[str, int], torch.nn.Module]:
    timm = _doc_script("operator_counts").import_timm()  # with a torchvision stand-in where it is missing
    if timm is None:
        raise SystemExit("timm is not installed: the peers are timm's models")

    return lambda name, img: timm.create_model(name, img_size=img)


def vitc_factory() -> Callable[[str, int], torch.nn.Module]:
    from vitc.models import create_model

    return lambda name, img: create_model(name, img_size=img)


def equal_weights(peer: torch.nn.Module, ours: torch.nn.Module, img: int, device: torch.device) -> float:
    """Load the peer's weights into vitc's model; max |Δ logits| on two images (fp32)."""
    ours.load_state_dict(peer.state_dict())
    x = torch.randn(2, 3, img, img, device=device)
    with torch.no_grad():
        return float((ours.to(device).eval()(x) - peer.to(device).eval()(x)).abs().max())


class Timed:
    """A callable that records the seconds of its first call (torch.compile compiles there)."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn, self.first_s = fn, None

    def __call__(self) -> Any:
        if self.first_s is None:
            start = time.perf_counter()
            out = self.fn()
            self.first_s = time.perf_counter() - start
            return out
        return self.fn()


def build_variants(
    sizes: list[str],
    img: int,
    opts: argparse.Namespace,
    peer: Callable[[str, int], torch.nn.Module] | None,
    models: list[str] | None = None,
    pair_peers: bool = True,
) -> dict[str, dict[str, Any]]:
    """label → {model, side, size, gmacs, name}, built on the device (no CPU copy to move); peer models first
    within each size; `models` (vitc names) keeps those pairs and each size's first (its DeiT); without
    `pair_peers` only that DeiT's peer is built (the ratios' base), not the other pairs' peers."""
    timing = _training_timing()
    ours = vitc_factory()
    device = torch.device(opts.device)
    out: dict[str, dict[str, Any]] = {}
    for size in sizes:
        for i, (peer_name, name) in enumerate(PAIRS[size]):
            if models and i > 0 and name not in models:  # the first pair (DeiT) is every ratio's base
                continue
            gmacs = timing.architecture_gmacs(name, img)
            torch.manual_seed(opts.seed)
            with device:
                model = ours(name, img)
            if peer_name is not None and peer is not None and (pair_peers or i == 0):
                with device:
                    reference = peer(peer_name, img)
                delta = equal_weights(reference, model, img, device)
                print(f"{name}: max |Δ logits| vitc vs peer {peer_name}: {delta:.2e}", flush=True)
                out[f"timm {peer_name}"] = {"model": reference, "side": "timm", "size": size, "gmacs": gmacs}
            out[f"vitc {name}"] = {"model": model, "side": "vitc", "size": size, "gmacs": gmacs}
    return out


def train_rows(
    variants: dict[str, dict[str, Any]],
    img: int,
    opts: argparse.Namespace,
    save: Callable[[list[dict[str, Any]]], None] | None = None,
) -> list[dict[str, Any]]:
    """Training img/s, per GMAC against the peer DeiT of the size, MFU; eager and (with --compile) compiled.

    vitc's GPSA and SP-SA run the formulation vitc.models.formulation chooses here, as `vitc train` does.
    Each model takes its warm-up and the first round's sample as soon as it is built (and compiled), and
    `save` gets the rows so far then and after every later round: a run stopped mid-way keeps them.
    """
    from vitc.models.formulation import apply_choices, choose_formulations, describe

    timing = _training_timing()
    runs: dict[str, Any] = {}
    compile_s: dict[str, float] = {}
    for label, spec in variants.items():
        chosen: list[dict[str, Any]] | None = None
        compiles = opts.compile and (opts.compile_side == "both" or spec["side"] == "vitc")
        for compiled in (False, True) if compiles else (False,):
            variant = timing.Variant(spec["model"], {}, opts.batch, img, opts)
            if spec["side"] == "vitc" and chosen is None:  # the formulation `vitc train` would run here
                chosen = choose_formulations(variant.model, opts.batch, variant.autocast())
                for row in chosen:
                    print(f"{label}: {describe(row)}", flush=True)
            elif chosen:  # the compiled copy runs the same choice
                apply_choices(variant.model, chosen)
            key = f"{label}{' +compile' if compiled else ''}"
            if compiled:
                variant.model = torch.compile(variant.model, backend=opts.compile_backend, **compile_mode(opts))
                start = time.perf_counter()
                variant.step()  # the compilation
                compile_s[key] = time.perf_counter() - start
            runs[key] = variant
            timing.interleave([variant], argparse.Namespace(**{**vars(opts), "rounds": 1}))  # round 1
            if save is not None:
                save(_train_table(variants, runs, compile_s, {}, opts))
    ops = {key: operators(key, variant) for key, variant in runs.items() if opts.ops and "+compile" not in key}
    show_operator_differences(variants, ops)
    rest = argparse.Namespace(**{**vars(opts), "warmup": 0, "rounds": opts.rounds - 1})
    after = (lambda: save(_train_table(variants, runs, compile_s, ops, opts))) if save is not None else None
    timing.interleave(runs.values(), rest, after_round=after)
    return _train_table(variants, runs, compile_s, ops, opts)


def _train_table(
    variants: dict[str, dict[str, Any]],
    runs: dict[str, Any],
    compile_s: dict[str, float],
    ops: dict[str, Counter[str] | None],
    opts: argparse.Namespace,
) -> list[dict[str, Any]]:
    """The rows of the runs timed so far; MFU only where the peak applies (bf16/fp16, not fp32: None)."""
    rows = []
    for key, variant in runs.items():
        label = key.removesuffix(" +compile")
        spec = variants[label]
        base = next(k for k, v in variants.items() if v["size"] == spec["size"])  # the size's first: DeiT
        base_key = base + " +compile" if key.endswith(" +compile") and base + " +compile" in runs else base
        ips = opts.batch / float(np.median(variant.times))
        base_ips = opts.batch / float(np.median(runs[base_key].times))
        mfu = None if opts.amp == "off" else ips * 6 * spec["gmacs"] * 1e9 / (opts.peak_tflops * 1e12)
        rows.append({
            "model": key, "side": spec["side"], "gmacs": spec["gmacs"], "img_s": ips,
            "per_gmac": ips * spec["gmacs"] / (base_ips * variants[base]["gmacs"]), "vs": base_key,
            "mfu": mfu, "compile_s": compile_s.get(key), "ops": sum(ops[key].values()) if ops.get(key) else None,
            "rounds": len(variant.times),
        })  # fmt: skip
    return rows


def compile_mode(opts: argparse.Namespace) -> dict[str, str]:
    """torch.compile's `mode` argument, as `vitc train`'s run.compile_mode passes it."""
    return {} if opts.compile_mode == "default" else {"mode": opts.compile_mode}


def operators(label: str, variant: Any) -> Counter[str] | None:
    """The aten operators of one training step (after a first, untimed one: lazy state is made once);
    None, said in one line, where a kernel does not run under a dispatch mode: the timings go on."""
    variant.step()
    try:
        with _doc_script("operator_counts").OperatorCount() as count:
            variant.step()
    except Exception as exc:  # e.g. a compiled FlexAttention formulation
        print(f"{label}: operators not counted ({type(exc).__name__}: {str(exc)[:200]})", flush=True)
        return None
    return count.counts


def show_operator_differences(variants: dict[str, dict[str, Any]], ops: dict[str, Counter[str] | None]) -> None:
    """Per pair counted (timm's model, vitc's of the same name): the totals and each operator whose count differs."""
    for size in dict.fromkeys(v["size"] for v in variants.values()):
        labels = [k for k, v in variants.items() if v["size"] == size]
        for peer in (k for k in labels if variants[k]["side"] == "timm"):
            ours = labels[labels.index(peer) + 1]  # build_variants puts vitc's model right after its peer
            a, b = ops.get(peer), ops.get(ours)
            if a is None or b is None:
                continue
            print(f"operators per step: {peer} {sum(a.values())}, {ours} {sum(b.values())}", flush=True)
            for name in sorted(set(a) | set(b)):
                if a[name] != b[name]:
                    print(f"    {name}: timm {a[name]}, vitc {b[name]}", flush=True)


def infer_rows(variants: dict[str, dict[str, Any]], img: int, opts: argparse.Namespace) -> list[dict[str, Any]]:
    """Median ms per forward: peers eager, vitc compiled (cuda target); each also under torch.compile."""
    from vitc.bench.timing import interleaved_medians
    from vitc.compile import compile_model

    device = torch.device(opts.device)
    amp = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[opts.amp]
    models: dict[str, torch.nn.Module] = {}
    for label, spec in variants.items():
        model = spec["model"].to(device).eval()
        if spec["side"] == "vitc":
            model = compile_model(model, target="cuda" if device.type == "cuda" else "cpu")[0]
            label += " vitc-compiled"
        models[label] = model
        if opts.compile and (opts.compile_side == "both" or spec["side"] == "vitc"):
            models[label + " +compile"] = torch.compile(model, backend=opts.compile_backend, **compile_mode(opts))
    rows: dict[str, dict[str, Any]] = {label: {"model": label} for label in models}
    for batch in opts.infer_batch:
        x = torch.randn(batch, 3, img, img, device=device)

        def call(model: torch.nn.Module, x: torch.Tensor = x) -> Callable[[], Any]:
            def run() -> Any:
                with torch.inference_mode(), torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                    out = model(x)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                return out

            return Timed(run)

        calls = {label: call(model) for label, model in models.items()}
        for label, fn in calls.items():  # the compilation, outside the timed rounds
            fn()
            if label.endswith(" +compile"):
                rows[label][f"compile_s_b{batch}"] = fn.first_s
        medians = interleaved_medians(calls, opts.warmup, opts.iterations, opts.rounds)
        for label, ms in medians.items():
            rows[label][f"ms_b{batch}"] = ms
    return list(rows.values())


def markdown(train: list[dict[str, Any]], infer: list[dict[str, Any]], img: int, opts: argparse.Namespace) -> str:
    lines = [
        f"{img}×{img}, {opts.device}, {opts.amp}, torch {torch.__version__}, {opts.rounds} rounds (interleaved)",
        "",
    ]
    if train:
        lines += [
            f"Training, batch {opts.batch}, median step time:",
            "",
            "| model | GMACs | img/s | per GMAC | vs | MFU | compile s | ops/step | rounds |",
            "|---|---:|---:|---:|---|---:|---:|---:|---:|",
        ]
        lines += [  # rounds: a run stopped at its time keeps rows of fewer rounds than the header's
            f"| {r['model']} | {r['gmacs']:.3g} | {r['img_s']:.4g} | {r['per_gmac']:.2f}× | {r['vs']} "
            f"| {_mfu(r['mfu'])} | {_seconds(r['compile_s'])} | {r['ops'] or ''} | {r['rounds']} |"
            for r in train
        ]
        lines.append("")
    if infer:
        batches = opts.infer_batch
        lines += [
            "Inference, median ms per forward:",
            "",
            "| model | " + " | ".join(f"batch {b} ms" for b in batches) + " |",
            "|---|" + "---:|" * len(batches),
        ]
        lines += [f"| {r['model']} | " + " | ".join(f"{r[f'ms_b{b}']:.3g}" for b in batches) + " |" for r in infer]
    return "\n".join(lines)


def _mfu(value: float | None) -> str:
    """n/a for fp32 rows: the peak (`--peak-tflops`) is the tensor cores' bf16/fp16 rate."""
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.0f}"


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--amp", default="bf16", choices=("off", "bf16", "fp16"))
    ap.add_argument("--batch", type=int, default=128, help="training batch")
    ap.add_argument("--infer-batch", type=lambda s: [int(b) for b in s.split(",")], default=[1, 64])
    ap.add_argument("--img", type=int, default=224)
    ap.add_argument("--sizes", default="tiny,small")
    ap.add_argument("--compile", action="store_true", help="also run every model under torch.compile")
    ap.add_argument("--compile-side", default="both", choices=("both", "vitc"), help="whose models --compile compiles")
    ap.add_argument("--models", type=lambda s: s.split(","), help="vitc names of the pairs to keep (DeiT always)")
    ap.add_argument("--compile-backend", default="inductor")
    ap.add_argument("--compile-mode", default="default", help="inductor's mode: reduce-overhead = CUDA graphs")
    ap.add_argument("--train-only", action="store_true")
    ap.add_argument("--infer-only", action="store_true")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=4, help="training steps per variant per round")
    ap.add_argument("--iterations", type=int, default=30, help="inference calls per model, over all rounds")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--peak-tflops", type=float, default=ISSUE_BF16_PEAK_TFLOPS)
    ap.add_argument("--ops", action="store_true", help="count each step's operators; list those that differ in a pair")
    ap.add_argument(
        "--gpu-branches", action="store_true", help="on a CPU, run vitc's GPU code paths (SDPA, no subnormal flush)"
    )
    ap.add_argument("--json", type=Path, help="also write both tables as JSON")
    return ap


def measure(opts: argparse.Namespace, peer: Callable[[str, int], torch.nn.Module] | None = None) -> dict[str, Any]:
    """Both tables for `opts`; `peer` builds the timm side (timm_factory() by default)."""
    sys.path.insert(0, str(ROOT))
    if opts.gpu_branches:
        _doc_script("operator_counts").use_gpu_branches()
    # --compile-side vitc compares vitc's compiled models with the peer's eager DeiT: no other peer is needed
    pair_peers = not (opts.compile and opts.compile_side == "vitc")
    variants = build_variants(opts.sizes.split(","), opts.img, opts, peer or timm_factory(), opts.models, pair_peers)

    def save(train: list[dict[str, Any]], infer: list[dict[str, Any]], stopped_before: str | None) -> None:
        if opts.json:  # written as the rows come: a run stopped later keeps them
            table = {"train": train, "infer": infer, "markdown": markdown(train, infer, opts.img, opts)}
            part = opts.json.with_name(opts.json.name + ".part")  # whole or not at all: read after a stop
            part.write_text(json.dumps({**table, **({"stopped_before": stopped_before} if stopped_before else {})}))
            part.replace(opts.json)

    train = [] if opts.infer_only else train_rows(variants, opts.img, opts, lambda rows: save(rows, [], "the rest"))
    result = {"train": train, "infer": [], "markdown": markdown(train, [], opts.img, opts)}
    if not opts.train_only:
        save(train, [], "inference")
        result["infer"] = infer_rows(variants, opts.img, opts)
        result["markdown"] = markdown(train, result["infer"], opts.img, opts)
    save(result["train"], result["infer"], None)
    return result


if __name__ == "__main__":
    print(measure(parser().parse_args())["markdown"])
