"""Would a worker thread hide the device augmentation's launches? A measurement for the feed (issue 20).

On a GPU `vitc train` augments batch i+1 on a side stream (vitc.data.prefetch) from the training
thread: the host issues the augmentation's operators (about 886 for DeiT's recipe,
docs/benchmarks.md) and then the step's (975 for DeiT-Ti), one after the other. Where a step waits
on its launches, the pair takes about their sum, on the side stream or not. A worker thread could
issue the augmentation while the training thread issues the step, to the extent that each
operator's host time runs without the GIL (PyTorch releases it while an operator dispatches;
argument parsing and the augmentation's own Python hold it). This times, per training step:

    step only      the step alone, on a batch already on the device
    augment only   one batch's augmentation alone
    same thread    augment the next batch (side stream on CUDA), then the step: what vitc train does
    worker thread  the same pair, the augmentation issued from a second Python thread

Each call runs `--steps` steps and ends with a synchronize; the four are timed in interleaved rounds
(vitc.bench.timing.interleaved_medians) and reported in ms per step. Not part of vitc.

    python docs/feed_timing.py --device cuda --model deit_tiny --batch 128 --img 224 --amp bf16
    python docs/feed_timing.py --device cpu --model deit_micro --batch 4 --img 16 --threads 1  # host-bound proxy
"""

from __future__ import annotations

import argparse
import json
import queue
import sys
import threading
from collections.abc import Callable
from itertools import repeat
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vitc.bench.timing import interleaved_medians
from vitc.data.prefetch import Prefetcher, Ready
from vitc.data.transforms import TrainAugment
from vitc.models import create_model
from vitc.train.config import parse_auto_augment

AMP = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}
DEIT_RECIPE = {  # DeiT's training recipe, as `vitc train --set aug.auto_augment=...` runs it
    "crop_scale": (0.08, 1.0),
    "flip_prob": 0.5,
    "mixup_alpha": 0.8,
    "cutmix_alpha": 1.0,
    "erase_prob": 0.25,
    "label_smoothing": 0.1,
    "auto_augment": parse_auto_augment("rand-m9-mstd0.5-inc1"),
}


def variants(opts: argparse.Namespace) -> dict[str, Callable[[], Any]]:
    """The four calls, each `opts.steps` steps long, sharing one model, optimiser and input batch, fed
    by vitc.data.prefetch.Prefetcher as in `vitc train`."""
    device, amp, classes = torch.device(opts.device), AMP[opts.amp], 10
    model = create_model(opts.model, img_size=opts.img, num_classes=classes).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    augment = TrainAugment(num_classes=classes, mean=(0.5,) * 3, std=(0.5,) * 3, **DEIT_RECIPE)
    generator = torch.Generator().manual_seed(opts.seed)
    images = torch.randint(0, 256, (opts.batch, 3, opts.img, opts.img), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, classes, (opts.batch,), generator=generator)
    if device.type == "cuda":
        images, labels = images.pin_memory(), labels.pin_memory()

    def batches(ahead: int, count: int = opts.steps, hand_over: bool = True) -> Prefetcher:
        """`count` batches as `vitc train` feeds them: augmented on a side stream on CUDA, `ahead` early."""
        return Prefetcher(repeat((images, labels, []), count), augment, generator, device, ahead, hand_over)

    def step(batch: Ready) -> None:
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            logits = model(batch.x)
        loss = torch.sum(-batch.targets * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    fixed = next(batches(0, count=1))

    def step_only() -> None:
        for _ in range(opts.steps):
            step(fixed)
        synchronize()

    def augment_only() -> None:
        for _ in batches(0):
            pass
        synchronize()

    def same_thread() -> None:
        for batch in batches(1):
            step(batch)
        synchronize()

    def worker_thread() -> None:
        worker_feed(batches(0, hand_over=False), step)
        synchronize()

    return {"step only": step_only, "augment only": augment_only, "same thread": same_thread,
            "worker thread": worker_thread}  # fmt: skip


def worker_feed(feed: Prefetcher, step: Callable[[Ready], None]) -> None:
    """`step` on each batch of `feed` (made with hand_over=False), which a second thread iterates one batch
    ahead, as vitc train would; the training thread claims each batch (its stream waits for the batch's
    event) at the hand-over, so that step i never waits for the augmentation of batch i+1."""
    ready: queue.Queue[Any] = queue.Queue(maxsize=1)

    def produce() -> None:
        try:
            for batch in feed:
                ready.put(batch)
            ready.put(None)
        except BaseException as error:  # handed to the training thread, which raises it
            ready.put(error)

    worker = threading.Thread(target=produce)
    worker.start()
    while (item := ready.get()) is not None:
        if isinstance(item, BaseException):
            raise item
        step(feed.hand_over(item))
    worker.join()


def measure(opts: argparse.Namespace) -> dict[str, Any]:
    if opts.threads:
        torch.set_num_threads(opts.threads)
    ms = interleaved_medians(variants(opts), opts.warmup, opts.rounds * opts.calls, opts.rounds)
    per_step = {name: value / opts.steps for name, value in ms.items()}
    sequential = per_step["step only"] + per_step["augment only"]
    return {
        "setting": f"{opts.model}, batch {opts.batch}, {opts.img}×{opts.img}, {opts.device}, amp {opts.amp}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads",
        "ms_per_step": per_step,
        "worker_vs_same_thread": per_step["worker thread"] / per_step["same thread"],
        "hidden_by_worker": (per_step["same thread"] - per_step["worker thread"]) / per_step["augment only"],
        "same_thread_vs_sum": per_step["same thread"] / sequential,
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [result["setting"], "", "| variant | ms per step |", "|---|---:|"]
    lines += [f"| {name} | {ms:.2f} |" for name, ms in result["ms_per_step"].items()]
    lines += [
        "",
        f"worker thread / same thread: {result['worker_vs_same_thread']:.2f}; share of the augmentation's time the "
        f"worker hides: {result['hidden_by_worker']:.0%}; same thread / (step + augment): "
        f"{result['same_thread_vs_sum']:.2f}",
    ]
    return "\n".join(lines) + "\n"


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--model", default="deit_tiny")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--img", type=int, default=224)
    ap.add_argument("--amp", choices=list(AMP), default="bf16")
    ap.add_argument("--steps", type=int, default=8, help="steps per timed call")
    ap.add_argument("--calls", type=int, default=3, help="timed calls per variant and round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2, help="untimed calls per variant")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: leave as is)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="also write the result as JSON")
    return ap


if __name__ == "__main__":
    options = parser().parse_args()
    figures = measure(options)
    figures["markdown"] = markdown(figures)
    if options.json:
        options.json.write_text(json.dumps(figures, indent=2))
    print(figures["markdown"])
