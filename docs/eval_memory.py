"""Peak memory and wall time of `vitc eval` on a labelled folder of generated JPEGs (docs/benchmarks.md).

    python docs/eval_memory.py --images 2000 --workers 0,2

Writes N photos (320×256, four classes) and a 4-class deit_tiny checkpoint (random weights: the
figures are about the data path, not accuracy) under --work, then runs `vitc eval` on them in a
subprocess per setting, interleaved over --rounds, and prints the wall time and the largest resident
set of any one process (the eval process or a decoding worker; the last round's). `--eval-args` replaces the
options after the folder, so the same command times a vitc that has none of them.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLASSES = ["cat", "dog", "fox", "owl"]


def write_folder(root: Path, images: int) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, 320, dtype=np.float32)[None, :, None]
    for i in range(images):
        folder = root / CLASSES[i % len(CLASSES)]
        folder.mkdir(parents=True, exist_ok=True)
        noise = rng.normal(0, 20, (256, 320, 3)).astype(np.float32)
        pixels = np.clip(ramp * rng.uniform(0.3, 1.0, 3) + noise, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.jpg", quality=90)


def write_checkpoint(path: Path) -> None:
    import torch

    from vitc.checkpoint import meta_for, write_checkpoint
    from vitc.models import create_model

    torch.manual_seed(0)
    model = create_model("deit_tiny", num_classes=len(CLASSES))
    meta = meta_for(model, class_names=CLASSES, extra={"train_config": {"data": {"name": "imagefolder"}}})
    write_checkpoint(path, model, meta)


def run_eval(checkpoint: Path, folder: Path, extra: list[str]) -> tuple[float, float]:
    """(wall seconds, largest RSS in MiB of the process or any worker it waited for) of one `vitc eval`:
    wait4's usage of the child covers its reaped children too."""
    cmd = [sys.executable, "-m", "vitc.cli.main", "eval", str(checkpoint), "--data-dir", str(folder)]
    cmd += ["--out", str(folder.parent / "cm.png"), *extra]
    with tempfile.TemporaryFile() as log:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        if os.waitstatus_to_exitcode(status):
            log.seek(0)
            raise SystemExit(f"{shlex.join(cmd)} failed:\n{log.read().decode(errors='replace')}")
    return wall, usage.ru_maxrss / 1024  # KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--workers", default="0,2", help="comma-separated --workers values, each a setting")
    parser.add_argument("--eval-args", default="--device cpu --workers {w}", help="{w}: the setting")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--work", type=Path, default=Path("/tmp/vitc-eval-memory"))
    args = parser.parse_args()
    folder, checkpoint = args.work / f"photos{args.images}", args.work / "deit_tiny4.safetensors"
    if not folder.exists():
        write_folder(folder, args.images)
    if not checkpoint.exists():
        write_checkpoint(checkpoint)
    settings = args.workers.split(",")
    walls: dict[str, list[float]] = {w: [] for w in settings}
    peaks: dict[str, float] = {}
    for _ in range(args.rounds):
        for w in settings:
            wall, peak = run_eval(checkpoint, folder, shlex.split(args.eval_args.format(w=w)))
            walls[w].append(wall)
            peaks[w] = peak
    print(f"{args.images} images, `vitc eval ... {args.eval_args}`")
    print("| setting | wall s (median) | largest RSS MiB |")
    print("|---|---:|---:|")
    for w in settings:
        print(f"| {w} | {statistics.median(walls[w]):.1f} | {peaks[w]:.0f} |")


if __name__ == "__main__":
    main()
