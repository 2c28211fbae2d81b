"""Drive runners through a timing plan and a held-out set; build the report (no torch here).

`torch_runners` is the only function that touches torch, and only when `--model`/`--ckpt` is used.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from vitc.artifacts import Heldout
from vitc.bench.report import BenchReport, BenchRow, base_environment
from vitc.bench.timing import LatencyStats, Step, TimingPlan, collect
from vitc.engines.accuracy import heldout_accuracy
from vitc.engines.base import BaseRunner
from vitc.errors import CudaError, VitcError, gpu_failure
from vitc.limits import MAX_BATCH


def parse_batches(text: str) -> list[int]:
    """'1,8,32' → [1, 8, 32]."""
    try:
        batches = [int(p) for p in text.replace(" ", "").split(",") if p]
    except ValueError:
        raise VitcError(f"--batch expects a comma-separated list of sizes, e.g. 1,8,32; got {text!r}") from None
    if not batches or any(not 1 <= b <= MAX_BATCH for b in batches):
        raise VitcError(f"--batch expects sizes from 1 to {MAX_BATCH}, got {text!r}")
    return batches


def bench_runners(
    runners: Sequence[BaseRunner],
    batches: Sequence[int] | None,
    plan: TimingPlan,
    heldout: Heldout | None = None,
    rounds: int = 1,
    loaded: Callable[[], None] | None = None,
) -> BenchReport:
    """Time every runner at every batch size into one report (`batches` None: `default_batch`); `loaded` is
    called once every runner is loaded (the CLI's power-mode warnings: after a plan this machine refuses).

    With `rounds` > 1 the runners take turns, each round timing every (runner, batch) for a share of
    the iterations, so that a shared machine's slow phases hit all of them alike and the ratios hold.
    """
    if rounds < 1:
        raise VitcError(f"--rounds must be >= 1, got {rounds}")
    report = BenchReport(environment=base_environment())
    report.settings = {
        "batches": None if batches is None else list(batches),
        "warmup": plan.warmup,
        "iterations": None if plan.duration else plan.iterations,
        "duration_s": plan.duration,
        "rounds": rounds,
        "warmup_later_rounds": min(plan.warmup, 1) if rounds > 1 else None,  # as _measure warms them
    }
    share = TimingPlan(
        warmup=plan.warmup,
        iterations=max(1, -(-plan.iterations // rounds)),
        duration=None if plan.duration is None else plan.duration / rounds,
        min_iterations=max(1, plan.min_iterations // rounds),
    )
    doing = {"now": "loading the runners"}  # said by a CUDA failure
    try:
        _measure(runners, batches, share, rounds, heldout, report, doing, loaded)
        if batches is None:
            report.settings["batches"] = sorted({row.batch for row in report.rows})
        report.warnings += report.noisy_ratios()
    except (RuntimeError, CudaError) as exc:  # out of GPU memory or a lost GPU: one line with the batch that failed
        hint = "a smaller --batch, or --autocast fp16 for PyTorch"
        failure = gpu_failure(exc, doing["now"], hint)
        if failure is None:
            raise
        raise failure from exc
    return report


def default_batch(runners: Sequence[BaseRunner], runner: BaseRunner) -> int:
    """With no --batch: 1 where every runner takes it, else the smallest batch they all take (a static-batch
    export's), else `runner`'s smallest; trtexec, too, times a static engine at its shape. Valid after
    activate()."""
    for batch in sorted({1, *(r.min_batch() for r in runners)}):
        if all(r.supports_batch(batch) for r in runners):
            return batch
    return runner.min_batch()


def _measure(
    runners: Sequence[BaseRunner],
    batches: Sequence[int] | None,
    share: TimingPlan,
    rounds: int,
    heldout: Heldout | None,
    report: BenchReport,
    doing: dict[str, str],
    loaded: Callable[[], None] | None = None,
) -> None:
    """Activate every runner, measure accuracy, time every (runner, batch); rows go into `report`."""
    with contextlib.ExitStack() as stack:
        for runner in runners:  # all active at once, so that rounds can interleave them
            doing["now"] = f"loading {runner.name}"
            stack.enter_context(runner)
            report.warnings += runner.warnings
        if loaded is not None:
            loaded()
        drift = {}
        for runner in runners:
            doing["now"] = f"running {runner.name} on the held-out set at batch size 32"
            drift[runner.name] = heldout_accuracy(runner, heldout) if heldout is not None else None
        if heldout is not None and heldout.labels is None:
            report.warnings.append(
                "the held-out set is generated inputs without labels (an agreement-only export): "
                "no top-1; the accuracy column is top-1 agreement with PyTorch FP32 in %"
            )
        steps: dict[tuple[int, int], Step] = {}
        for index, runner in enumerate(runners):
            asked = [default_batch(runners, runner)] if batches is None else batches
            for batch in asked:
                if runner.supports_batch(batch):
                    doing["now"] = f"at batch size {batch} ({runner.name})"
                    steps[index, batch] = _step(runner, runner.make_feed(batch))
            skipped = [b for b in asked if (index, b) not in steps]
            if skipped:
                report.warnings.append(_skipped(runner, skipped, asked))
        samples: dict[tuple[int, int], dict[str, list[float]]] = {key: {} for key in steps}
        later = replace(share, warmup=min(share.warmup, 1))  # rounds after the first: the runners are warm
        for round_index in range(rounds):
            for key, step in steps.items():
                doing["now"] = f"at batch size {key[1]} ({runners[key[0]].name})"
                round_plan = share if round_index == 0 else later
                for name, times in collect(step, round_plan).items():
                    samples[key].setdefault(name, []).extend(times)
        for runner in runners:  # what running found (a CUDA graph TensorRT could not capture)
            report.warnings += [w for w in runner.warnings if w not in report.warnings]
        for (index, batch), named in samples.items():
            runner, info = runners[index], runners[index].info()
            stats = {name: LatencyStats.from_seconds(times, batch) for name, times in named.items()}
            report.rows.append(
                BenchRow(
                    runner=runner.name,
                    backend=info.backend,
                    device=info.device,
                    precision=info.precision,
                    batch=batch,
                    e2e=stats["e2e"],
                    gpu=stats.get("gpu"),
                    accuracy=None if drift[runner.name] is None else drift[runner.name].to_dict(),
                    detail=info.detail,
                )
            )


def _skipped(runner: BaseRunner, skipped: Sequence[int], batches: Sequence[int]) -> str:
    """Which batches were skipped and the export option that would run them all."""
    top = max(batches)
    opt = min((b for b in batches if b > 1), default=top)
    rebuild = " and rebuild the plan" if runner.info().backend == "tensorrt" else ""
    return (
        f"{runner.name}: skipped batch {', '.join(map(str, skipped))} (the engine's batch range excludes it): "
        f"re-export with --dynamic-batch 1:{opt}:{top}{rebuild} to measure every batch asked for"
    )


def _step(runner: BaseRunner, feed: dict[str, np.ndarray]) -> Step:
    def step() -> dict[str, float | None]:
        runner.infer(feed)
        return {"e2e": runner.inference_time, "gpu": runner.gpu_time}

    return step


def torch_runners(
    model: str | None,
    ckpt: Path | None,
    *,
    compare: bool,
    torch_compile: bool,
    device: str,
    autocast: str,
    seed: int = 0,
    cuda_graph: bool = False,
    threads: int | None = None,
) -> list[BaseRunner]:
    """Eager (and with --compare vitc-compiled) PyTorch runners sharing the same weights; with `cuda_graph`
    every one replays CUDA graphs (as --cuda-graph makes TensorRT runners do), named so in the table;
    `threads`: torch's CPU threads while each runs (None: torch's default)."""

    from vitc.engines.torch_runner import TorchRunner, model_from_checkpoint, model_from_zoo

    if device == "auto":  # as vitc train, eval and predict choose it: the GPU where torch sees one
        from vitc._device import pick_device

        device = pick_device(device).type

    # every variant loads its own copy: zoo models get the same seeded random weights in each
    loader = model_from_checkpoint(ckpt) if ckpt is not None else model_from_zoo(str(model), seed=seed)
    label = loader.label  # type: ignore[attr-defined]
    variants = [False, True] if compare else [False]
    runners: list[BaseRunner] = []
    for compiled in variants:
        for compiled_by_torch in [False, True] if torch_compile else [False]:
            name = (
                f"{label} {'vitc-compiled' if compiled else 'eager'}"
                + (" +torch.compile" if compiled_by_torch else "")
                + (" +cuda-graph" if cuda_graph else "")
            )
            runners.append(
                TorchRunner(
                    loader,
                    compiled=compiled,
                    torch_compile=compiled_by_torch,
                    cuda_graph=cuda_graph,
                    device=device,
                    autocast=autocast,
                    threads=threads,
                    name=name,
                )
            )
    return runners
