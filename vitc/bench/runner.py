"""Drive runners through a timing plan and a held-out set; build the report (no torch here).

`torch_runners` is the only function that touches torch, and only when `--model`/`--ckpt` is used.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vitc.bench.drift import DriftReport, compare_logits
from vitc.bench.report import BenchReport, BenchRow, base_environment
from vitc.bench.timing import TimingPlan, measure
from vitc.engines.base import BaseRunner
from vitc.engines.manifest import Heldout
from vitc.errors import VitcError


def parse_batches(text: str) -> list[int]:
    """'1,8,32' → [1, 8, 32]."""
    try:
        batches = [int(p) for p in text.replace(" ", "").split(",") if p]
    except ValueError:
        raise VitcError(f"--batch expects a comma-separated list of sizes, e.g. 1,8,32; got {text!r}") from None
    if not batches or any(b < 1 for b in batches):
        raise VitcError(f"--batch expects sizes >= 1, got {text!r}")
    return batches


def accuracy(runner: BaseRunner, heldout: Heldout, batch: int = 32) -> DriftReport:
    """Run the held-out images through an active runner and compare with the reference logits."""
    meta = runner.get_input_metadata()[0]
    output = runner.get_output_metadata()[0].name
    step = meta.static_batch or batch
    images = heldout.images.astype(meta.dtype)
    chunks = []
    for start in range(0, len(heldout), step):
        part = images[start : start + step]
        real = part.shape[0]
        if meta.static_batch and real < step:  # pad the last chunk of a static-batch engine
            pad = np.zeros((step - real, *part.shape[1:]), dtype=part.dtype)
            part = np.concatenate([part, pad])
        chunks.append(np.asarray(runner.infer({meta.name: part})[output], dtype=np.float32)[:real])
    return compare_logits(heldout.reference_logits, np.concatenate(chunks), heldout.labels)


def bench_runners(
    runners: Sequence[BaseRunner],
    batches: Sequence[int],
    plan: TimingPlan,
    heldout: Heldout | None = None,
    precisions: dict[str, str] | None = None,
) -> BenchReport:
    """Time every runner at every batch size (one runner active at a time) into one report."""
    report = BenchReport(environment=base_environment())
    report.settings = {
        "batches": list(batches),
        "warmup": plan.warmup,
        "iterations": None if plan.duration else plan.iterations,
        "duration_s": plan.duration,
    }
    for runner in runners:
        with runner:
            info = runner.info()
            drift = accuracy(runner, heldout) if heldout is not None else None
            for batch in batches:
                if not runner.supports_batch(batch):
                    report.warnings.append(
                        f"{runner.name}: skipped batch {batch} (the engine's batch range excludes it)"
                    )
                    continue
                feed = runner.make_feed(batch)

                def step(runner: BaseRunner = runner, feed: dict[str, np.ndarray] = feed) -> dict[str, float | None]:
                    runner.infer(feed)
                    return {"e2e": runner.inference_time, "gpu": runner.gpu_time}

                stats = measure(step, plan, batch)
                report.rows.append(
                    BenchRow(
                        runner=runner.name,
                        backend=info.backend,
                        device=info.device,
                        precision=(precisions or {}).get(runner.name, info.precision),
                        batch=batch,
                        e2e=stats["e2e"],
                        gpu=stats.get("gpu"),
                        accuracy=None if drift is None else drift.to_dict(),
                        detail=info.detail,
                    )
                )
    return report


def torch_runners(
    model: str | None,
    ckpt: Path | None,
    *,
    compare: bool,
    torch_compile: bool,
    device: str,
    precision: str,
    seed: int = 0,
) -> list[BaseRunner]:
    """Eager (and with --compare vitc-compiled) PyTorch runners sharing the same weights."""
    import copy

    from vitc._lazy import lazy_import
    from vitc.engines.torch_runner import TorchRunner

    torch = lazy_import("torch")
    torch.manual_seed(seed)  # zoo models without --ckpt get the same random weights in every variant
    if ckpt is not None:
        from vitc.checkpoint import load_model

        module: Any = load_model(ckpt)[0]
        label = module.vitc_name
    else:
        from vitc.models import create_model

        module = create_model(str(model))
        label = str(model)
    variants = [False, True] if compare else [False]
    runners: list[BaseRunner] = []
    for compiled in variants:
        for compiled_by_torch in [False, True] if torch_compile else [False]:
            name = f"{label} {'vitc-compiled' if compiled else 'eager'}" + (
                " +torch.compile" if compiled_by_torch else ""
            )
            runners.append(
                TorchRunner(
                    label,
                    module=copy.deepcopy(module),
                    compiled=compiled,
                    torch_compile=compiled_by_torch,
                    device=device,
                    precision=precision,
                    name=name,
                )
            )
    return runners
