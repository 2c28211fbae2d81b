"""Time and peak memory of the images an export reads: its held-out set and its INT8 calibration draw.

`vitc export` keeps at most HELDOUT_MAX test images for drift and draws --calib-images (512) training images
to calibrate INT8. Both read through `vitc.data.datasets.load_dataset`; this writes an image folder of N
JPEGs per split (320×256, `--classes` classes) and, in a fresh process per measurement, calls
`heldout_set` and `calibration_set` as `vitc export -p int8` does for a 224×224 model, recording the
wall time, the peak resident set and which classes the held-out set covers. Rounds are interleaved
between this checkout and `--old-tree` (a checkout of an earlier commit: git worktree add /tmp/oldwt C).

    python docs/heldout_timing.py --images 5000 --classes 20 --rounds 3 --old-tree /tmp/oldwt
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

CHILD = r"""
import json, resource, sys, time
import numpy as np
from vitc.checkpoint import meta_for
from vitc.export.heldout import heldout_set
from vitc.models import create_model
from vitc.quant.calib import calibration_set

folder, classes = sys.argv[1], json.loads(sys.argv[2])
model = create_model("deit_micro", depth=1, embed_dim=32, num_heads=2, img_size=224, num_classes=len(classes))
meta = meta_for(model, class_names=classes)
start = time.perf_counter()
held = heldout_set(meta, meta.cfg.preprocess, "imagefolder", folder)
middle = time.perf_counter()
calibration_set("imagefolder", 512, meta.cfg.preprocess, folder, classes=classes)
end = time.perf_counter()
print(json.dumps({
    "heldout_s": middle - start, "calib_s": end - middle, "images": len(held.labels),
    "classes": int(len(np.unique(held.labels))), "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
}))
"""


def write_folder(root: Path, images: int, classes: int) -> list[str]:
    """`images` 320×256 JPEGs in each of train/ and val/, spread over `classes` class folders."""
    from PIL import Image

    rng = np.random.default_rng(0)
    names = [f"class{c:03d}" for c in range(classes)]
    tile = rng.integers(0, 256, (256, 320, 3), dtype=np.uint8)
    for split in ("train", "val"):
        for i in range(images):
            folder = root / split / names[i % classes]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.roll(tile, i, axis=1)).save(folder / f"{i:06d}.jpg", quality=90)
    return names


def measure(tree: Path, folder: Path, names: list[str]) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(folder), json.dumps(names)],
        capture_output=True, text=True, env=env, check=True, cwd=folder,  # not a checkout: `-c` imports the cwd's first
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=5000, help="JPEGs per split")
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--old-tree", type=Path, default=None)
    args = ap.parse_args()
    trees = {"this checkout": Path(__file__).resolve().parents[1]}
    if args.old_tree is not None:
        trees = {"old tree": args.old_tree.resolve(), **trees}
    with tempfile.TemporaryDirectory() as tmp:
        names = write_folder(Path(tmp), args.images, args.classes)
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
        for _ in range(args.rounds):
            for name, tree in trees.items():
                runs[name].append(measure(tree, Path(tmp), names))
    print(f"{args.images} JPEGs (320×256) per split, {args.classes} classes, 224×224, {args.rounds} rounds, median")
    print("| tree | held-out s | held-out images | its classes | calibration s (512) | peak RSS MiB |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, rows in runs.items():
        med = {key: statistics.median(row[key] for row in rows) for key in rows[0]}
        print(
            f"| {name} | {med['heldout_s']:.1f} | {med['images']:.0f} | {med['classes']:.0f} of {args.classes} "
            f"| {med['calib_s']:.1f} | {med['peak_mib']:.0f} |"
        )


if __name__ == "__main__":
    main()
