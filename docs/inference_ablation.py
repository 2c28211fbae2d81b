"""PyTorch inference ablation (issue 20): where compiled CvT's time goes, and what CUDA graphs buy.

A measurement aid for vitc.compile.pipeline's per-target choices, not part of vitc; docs/gpu_check.py
runs it as its `inference` section on a lent GPU.

CvT (`--cvt`, cvt_13): uncompiled, then the device's compile target (cuda on a GPU, cpu otherwise)
with CvT's k/v convs merged into one multiplier-2 grouped conv or kept as two depthwise convs, each
with plain attention going to SDPA or not (compile_model's `pass_options`; every variant is checked
against the uncompiled model, max |Δ logits| in fp32 in the table). On CUDA also the uncompiled and
the target's model replayed from CUDA graphs (vitc.compile.CUDAGraphs, what `vitc bench --cuda-graph`
runs) and both under torch.compile (`--torch-compile fp16:64`: the cells to compile; compiling is slow,
so the cells are few and come last, in the `--compile-reserve-s` that the other cells leave them).

ConViT (`--peer-size tiny`, needs timm; first, issue 20's target): timm's DeiT-Ti eager against
vitc's compiled ConViT-Ti (and compiled DeiT-Ti, and ConViT-Ti in GPSA's other candidate lowerings,
"sdpa" and "heads"), each also through CUDA graphs. Models are loaded by docs/peer_timing.py (timm's
weights in vitc's model, max |Δ logits| printed) and timed as everywhere in docs/: median ms per call
(a CUDA call ends with a synchronize), the variants of a cell in interleaved rounds. The first call
of each variant (torch.compile compiles, a CUDA graph is captured) is timed apart ("1st call s").

    python docs/inference_ablation.py --device cuda --precisions fp16,fp32 --batches 8,64
    python docs/inference_ablation.py --device cpu --precisions fp32 --batches 1,8 --no-peers  # the cpu target
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "docs")]

import peer_timing  # noqa: E402  (docs/peer_timing.py: timm and vitc models loaded with equal weights)

from vitc.bench.timing import interleaved_medians  # noqa: E402
from vitc.compile import PIPELINES, CUDAGraphs, compile_model  # noqa: E402
from vitc.models import create_model  # noqa: E402

AMP = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}
# label → compile_model pass_options on the device's target (None: the uncompiled model)
CVT_VARIANTS: dict[str, dict[str, Any] | None] = {
    "eager": None,
    "vitc merged kv, SDPA": {"fold_cvt_projections": {"merge_kv": True}},
    "vitc separate kv, SDPA": {"fold_cvt_projections": {"merge_kv": False}},
    "vitc merged kv, no SDPA": {"fold_cvt_projections": {"merge_kv": True}, "static_attention": None},
    "vitc separate kv, no SDPA": {"fold_cvt_projections": {"merge_kv": False}, "static_attention": None},
}

ALTERNATIVE_LOWERINGS = ("sdpa", "heads")  # GPSA lowerings timed beside the target's own


def graphs_on(device: torch.device) -> bool:
    """CUDA graphs replay GPU work: the graphed variants exist on CUDA only."""
    return device.type == "cuda"


def target_of(device: torch.device) -> str:
    return "cuda" if device.type == "cuda" else "cpu"


def target_label(target: str) -> str:
    """The CVT_VARIANTS label that is `target`'s own pipeline."""
    steps = dict(PIPELINES[target])
    merged = steps["fold_cvt_projections"].get("merge_kv", True)
    sdpa = "static_attention" in steps
    return f"vitc {'merged' if merged else 'separate'} kv{', SDPA' if sdpa else ', no SDPA'}"


def caller(
    model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, amp: torch.dtype | None, graphs: bool
) -> Callable[[], Any]:
    """One timed call: the forward (eager under autocast, or a CUDA graph replay), then a synchronize."""
    if graphs:
        run = CUDAGraphs(model, autocast=amp)
        forward: Callable[[], Any] = lambda: run(x)  # noqa: E731
    else:

        def forward() -> Any:
            with torch.inference_mode(), torch.autocast(x.device.type, dtype=amp, enabled=amp is not None):
                return model(x)

    def call() -> Any:
        out = forward()
        if x.is_cuda:
            torch.cuda.synchronize(x.device)
        return out

    return call


def time_cell(
    models: dict[str, tuple[Any, bool]], batch: int, img: int, amp: torch.dtype | None, opts: argparse.Namespace
) -> dict[str, dict[str, float]]:
    """{label: {"ms": median ms, "first_s": seconds of the first call, "replay_delta": max |Δ| of a CUDA-graph
    replay against the same model's plain call (graphed variants only)}} for one precision and batch."""
    x = torch.randn(batch, 3, img, img, device=opts.device)
    calls = {label: caller(model, x, amp, graphs) for label, (model, graphs) in models.items()}
    results: dict[str, dict[str, float]] = {}
    for label, call in calls.items():  # compilation and capture, outside the timed rounds
        start = time.perf_counter()
        out = call()
        results[label] = {"first_s": time.perf_counter() - start}
        model, graphs = models[label]
        if graphs:  # the replay computes what the model computes
            plain = caller(model, x, amp, False)()
            results[label]["replay_delta"] = float((out.float() - plain.float()).abs().max())
    medians = interleaved_medians(calls, opts.warmup, opts.iterations, opts.rounds)
    del calls
    if x.is_cuda:
        torch.cuda.empty_cache()
    return {label: {"ms": medians[label], **results[label]} for label in models}


def cells(opts: argparse.Namespace) -> list[tuple[str, int]]:
    return [(p, b) for p in opts.precisions for b in opts.batches]


def cvt_part(opts: argparse.Namespace, deadline: float) -> dict[str, Any]:
    """Every CVT_VARIANTS model (and on CUDA the graphed ones) timed per precision and batch."""
    device = torch.device(opts.device)
    target = target_of(device)
    torch.manual_seed(opts.seed)
    eager = create_model(opts.cvt, img_size=opts.img).to(device).eval()
    models: dict[str, Any] = {}
    deltas: dict[str, float | None] = {}
    chosen = target_label(target)
    wanted = {"eager", chosen, *(opts.variants or CVT_VARIANTS)}
    if wanted - set(CVT_VARIANTS):
        raise SystemExit(f"--variants: unknown {sorted(wanted - set(CVT_VARIANTS))}; known: {list(CVT_VARIANTS)}")
    for label, options in CVT_VARIANTS.items():
        if label not in wanted:
            continue
        if options is None:
            models[label], deltas[label] = eager, 0.0
            continue
        models[label], report = compile_model(eager, target=target, pass_options=options)
        deltas[label] = report.max_abs_diff
        print(f"{opts.cvt} {label}: max |Δ logits| {report.max_abs_diff:.2e} ({report.seconds:.1f} s)", flush=True)
    plain = {label: (model, False) for label, model in models.items()}
    graphed = (
        {f"{label} +cuda-graph": (models[label], True) for label in ("eager", chosen)} if graphs_on(device) else {}
    )
    rows: dict[str, dict[str, Any]] = {label: {"model": label, "max_abs_diff": d} for label, d in deltas.items()}
    rows |= {label: {"model": label, "max_abs_diff": deltas[label.split(" +")[0]]} for label in graphed}
    skipped: list[str] = []
    for precision, batch in _within(cells(opts), deadline, skipped):
        for label, value in time_cell({**plain, **graphed}, batch, opts.img, AMP[precision], opts).items():
            rows[label][f"{precision} b{batch}"] = value["ms"]
            if label in graphed:
                rows[label][f"{precision} b{batch} 1st s"] = value["first_s"]
                _replay_delta(rows[label], value)
    return {
        "model": opts.cvt,
        "target": target,
        "target_variant": chosen,
        "rows": list(rows.values()),
        "compile_rows": [],
        "skipped": skipped,
        "_models": {label: models[label] for label in ("eager", chosen)},
    }


def cvt_compile(opts: argparse.Namespace, deadline: float, cvt: dict[str, Any]) -> None:
    """The uncompiled and the target's CvT, each also under torch.compile, in the `--torch-compile` cells."""
    models, chosen, skipped = cvt.pop("_models"), cvt["target_variant"], cvt["skipped"]
    plain = {label: (model, False) for label, model in models.items()}
    compile_rows: dict[str, dict[str, Any]] = {}
    for spec in opts.torch_compile:  # each cell compiles both models again (static shapes)
        precision, batch = spec.split(":")[0], int(spec.split(":")[1])
        if deadline - time.monotonic() < opts.compile_reserve_s:
            skipped.append(f"+torch.compile {spec}: less than {opts.compile_reserve_s:.0f} s of the budget left")
            continue
        cell = dict(plain)
        for label in ("eager", chosen):
            graph = torch.compile(models[label], backend=opts.compile_backend, dynamic=False)
            cell[f"{label} +torch.compile"] = (graph, False)
        for label, value in time_cell(cell, batch, opts.img, AMP[precision], opts).items():
            row = compile_rows.setdefault(label, {"model": label})
            row[f"{precision} b{batch}"] = value["ms"]
            if label.endswith("+torch.compile"):
                row[f"{precision} b{batch} 1st s"] = value["first_s"]
    cvt["compile_rows"] = list(compile_rows.values())


def convit_part(
    opts: argparse.Namespace, deadline: float, peer: Callable[[str, int], torch.nn.Module] | None
) -> dict[str, Any]:
    """timm's DeiT of the size eager, vitc's compiled DeiT and ConViT of the size; each through CUDA graphs."""
    pt = peer_timing
    device = torch.device(opts.device)
    loaded = pt.build_variants(
        [opts.peer_size], opts.img, argparse.Namespace(device=opts.device, seed=opts.seed), peer or pt.timm_factory()
    )
    (deit_peer, deit), (_, convit) = pt.PAIRS[opts.peer_size][:2]
    models = {f"timm {deit_peer}": loaded[f"timm {deit_peer}"]["model"].to(device).eval()}
    for name in (deit, convit):
        models[f"vitc {name} compiled"] = compile_model(
            loaded[f"vitc {name}"]["model"].to(device).eval(), target=target_of(device)
        )[0]
    # beside the target's lowering: "sdpa", which the cuda target left for "eager" (fewer launches), and
    # "heads", a plain attention block's launches for a third more FLOPs (vitc.compile.static_gpsa)
    for lowering in ALTERNATIVE_LOWERINGS:
        models[f"vitc {convit} compiled {lowering}-lowering"] = compile_model(
            loaded[f"vitc {convit}"]["model"].to(device).eval(),
            target=target_of(device),
            pass_options={"static_gpsa": {"lowering": lowering}},
        )[0]
    variants = {label: (model, False) for label, model in models.items()}
    if graphs_on(device):
        variants |= {f"{label} +cuda-graph": (model, True) for label, model in models.items()}
    rows: dict[str, dict[str, Any]] = {label: {"model": label} for label in variants}
    skipped: list[str] = []
    for precision, batch in _within([(p, b) for p in opts.precisions for b in opts.peer_batches], deadline, skipped):
        for label, value in time_cell(variants, batch, opts.img, AMP[precision], opts).items():
            rows[label][f"{precision} b{batch}"] = value["ms"]
            _replay_delta(rows[label], value)
    return {"deit_peer": f"timm {deit_peer}", "rows": list(rows.values()), "skipped": skipped}


def _within(todo: list[tuple[str, int]], deadline: float, skipped: list[str]) -> Iterator[tuple[str, int]]:
    """The cells that fit before `deadline`: one starts only while the last one's time is left (a cell
    is not stopped once started, and the torch.compile cell's reserve comes after the deadline)."""
    last_s = 0.0
    for precision, batch in todo:
        if time.monotonic() + last_s > deadline:
            skipped.append(f"{precision} b{batch}: time budget spent")
            continue
        start = time.monotonic()
        yield precision, batch
        last_s = time.monotonic() - start


def _replay_delta(row: dict[str, Any], value: dict[str, float]) -> None:
    if "replay_delta" in value:
        row["replay_max_abs_diff"] = max(row.get("replay_max_abs_diff", 0.0), value["replay_delta"])


def _table(rows: list[dict[str, Any]], extra: list[str]) -> list[str]:
    columns = list(dict.fromkeys(k for row in rows for k in row if k not in ("model", *extra)))
    extra = [e for e in extra if any(e in row for row in rows)]  # no replay column off the GPU
    head = [c if c.endswith(" 1st s") else f"{c} ms" for c in columns] + [EXTRA.get(e, e) for e in extra]
    lines = ["| variant | " + " | ".join(head) + " |", "|---|" + "---:|" * len(head)]
    for row in rows:
        cells = [_fmt(row.get(c)) for c in columns] + [_fmt(row.get(e), ".1e") for e in extra]
        lines.append(f"| {row['model']} | " + " | ".join(cells) + " |")
    return lines


EXTRA = {"max_abs_diff": "max Δ fp32", "replay_max_abs_diff": "replay Δ"}


def _fmt(value: Any, spec: str = ".3g") -> str:
    return "" if value is None else format(value, spec)


def markdown(result: dict[str, Any], opts: argparse.Namespace) -> str:
    lines = [
        f"{opts.img}×{opts.img}, {opts.device}, torch {torch.__version__}, median ms per call, "
        f"{opts.rounds} interleaved rounds of {opts.iterations} calls",
        "",
    ]
    if "cvt" in result:
        cvt = result["cvt"]
        lines += [
            f"{cvt['model']}: the {cvt['target']} target is `{cvt['target_variant']}`; max Δ: max |Δ logits| vs "
            "eager in fp32 at batch 1 (compile_model's check); replay Δ: a CUDA-graph replay vs the same model's "
            "plain call, at the cell's precision and batch (the largest):",
            "",
        ]
        lines += [*_table(cvt["rows"], ["max_abs_diff", "replay_max_abs_diff"]), ""]
        if cvt["compile_rows"]:
            lines += ["torch.compile (static shapes; 1st s: the first call, which compiles):", ""]
            lines += [*_table(cvt["compile_rows"], []), ""]
        lines += [f"- skipped {s}" for s in cvt["skipped"]]
    if "convit" in result:
        convit = result["convit"]
        lines += ["", f"Compiled ConViT against {convit['deit_peer']} (speed = its ms / ours):", ""]
        lines += _table(convit["rows"], ["replay_max_abs_diff"])
        base = next(r for r in convit["rows"] if r["model"] == convit["deit_peer"])
        for row in convit["rows"]:
            if row["model"].startswith("vitc") and "convit" in row["model"]:
                peer_row = next(
                    r
                    for r in convit["rows"]
                    if r["model"] == convit["deit_peer"] + row["model"].removeprefix(row["model"].split(" +")[0])
                )
                ratios = [f"{k} {peer_row[k] / row[k]:.2f}×" for k in row if k != "model" and k in base]
                lines.append(f"- {row['model']} vs {peer_row['model']}: " + ", ".join(ratios))
        lines += [f"- skipped {s}" for s in convit["skipped"]]
    if "peers_skipped" in result:
        lines += ["", f"ConViT against timm: skipped ({result['peers_skipped']})"]
    return "\n".join(lines) + "\n"


def parser() -> argparse.ArgumentParser:
    csv = lambda kind: lambda s: [kind(v) for v in s.split(",") if v]  # noqa: E731
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--img", type=int, default=224)
    ap.add_argument("--cvt", default="cvt_13", help="the CvT model of the k/v and SDPA ablation")
    ap.add_argument(
        "--variants",
        type=lambda s: [v for v in s.split(";") if v],
        help="CvT variants to time, ';'-separated (default all; eager and the target's always)",
    )
    ap.add_argument("--precisions", type=csv(str), default=["fp16", "fp32"], help="autocast: fp32, fp16, bf16")
    ap.add_argument("--batches", type=csv(int), default=[8, 64], help="CvT batch sizes")
    ap.add_argument("--peer-size", default="tiny", help="docs/peer_timing.py's PAIRS size for the ConViT part")
    ap.add_argument("--peer-batches", type=csv(int), default=[1, 64])
    ap.add_argument("--no-peers", action="store_true", help="CvT only (no timm needed)")
    ap.add_argument("--torch-compile", type=csv(str), default=["fp16:64"], help="precision:batch cells to compile")
    ap.add_argument("--compile-backend", default="inductor")
    ap.add_argument(
        "--compile-reserve-s", type=float, default=45.0,
        help="of --budget-s, kept for the torch.compile cells (the others stop short of it)",
    )  # fmt: skip
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--iterations", type=int, default=20, help="timed calls per variant, over all rounds")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--budget-s", type=float, default=90.0, help="stop starting new cells after this long")
    ap.add_argument("--json", type=Path, help="also write the tables as JSON")
    return ap


def measure(opts: argparse.Namespace, peer: Callable[[str, int], torch.nn.Module] | None = None) -> dict[str, Any]:
    """Both parts within `opts.budget_s` but the `--compile-reserve-s` kept for the torch.compile cells, which
    come last; first the ConViT part (issue 20's ConViT-Ti vs timm DeiT-Ti target), skipped without timm
    (unless `peer` builds it), then the CvT ablation. With `--json` the file is written after each part (a run
    stopped later keeps the parts before); a ConViT part that fails is raised once the CvT part is written."""
    deadline = time.monotonic() + opts.budget_s
    if any(p.split(":")[0] not in AMP for p in opts.precisions + opts.torch_compile):
        raise SystemExit(f"precisions are {', '.join(AMP)}, got {opts.precisions} and {opts.torch_compile}")
    cells_deadline = deadline - (opts.compile_reserve_s if opts.torch_compile else 0.0)
    result: dict[str, Any] = {}
    failure: Exception | None = None
    if opts.no_peers:
        result["peers_skipped"] = "--no-peers"
    elif peer is None and importlib.util.find_spec("timm") is None:
        result["peers_skipped"] = "timm is not installed"
    else:
        try:
            result["convit"] = convit_part(opts, cells_deadline, peer)
        except Exception as exc:  # the CvT part still runs; the failure is raised after it
            failure, result["peers_skipped"] = exc, f"{type(exc).__name__}: {exc}"[:300]
        _write(result, opts)
    result["cvt"] = cvt_part(opts, cells_deadline)
    _write(result, opts)
    cvt_compile(opts, deadline, result["cvt"])
    _write(result, opts)
    if failure is not None:
        raise failure
    return result


def _write(result: dict[str, Any], opts: argparse.Namespace) -> None:
    result["markdown"] = markdown(result, opts)
    if opts.json:
        figures = {**result, "cvt": {k: v for k, v in result.get("cvt", {}).items() if not k.startswith("_")}}
        opts.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    args = parser().parse_args()
    print(measure(args)["markdown"])
