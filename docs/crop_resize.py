"""The random-resized crop against Pillow's crop and resize, which timm's crops are: a measurement aid for
docs/benchmarks.md ("The random-resized crop resizes as Pillow's"), not part of vitc.

Photo-like images made with numpy and Pillow (smooth shading, hard-edged discs of black, white and colour,
a thin white line, sensor noise; every other one blurred a little) are kept squashed to a square as an
in-memory set holds them, and cropped by `random_resized_crop` (scale 0.08-1): boxes in the images' own
pixels at 32 and 224, and whole photos kept at 256 cropped to 224 (fractional boxes, mostly downscaled).
Each crop is compared with timm's, Pillow's `Image.crop(box).resize((out, out), filter)` (a fractional box:
the pixels it covers cropped, then `resize(box=)` within); with `--old-tree` the crops of an older tree from
the same draws too: one with `interpolation` (from 8570c74), whose crop resized as Pillow's
`resize(box=)`, reading the pixels beyond a box's edge.

    git worktree add /tmp/crop-box acf33ea
    python docs/crop_resize.py --old-tree /tmp/crop-box
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch
from augment_timing import module_from  # beside this script in docs/
from PIL import Image, ImageFilter

from vitc.data import transforms

CASES = ((32, 32, False), (224, 224, False), (256, 224, True))  # (stored side, crop side, whole photos)
PHOTOS, CROPS = 8, 16


def photo(seed: int, side: int) -> tuple[Image.Image, tuple[int, int]]:
    """A photo-like image squashed to `side` x `side` (bicubic, as vitc.data.images.read_whole), and its size."""
    rng = np.random.default_rng(seed)
    h, w = (int(v) for v in rng.integers(200, 480, 2))
    yy, xx = np.mgrid[0:h, 0:w].astype(float)
    img = np.stack([128 + 90 * np.sin(xx / rng.uniform(8, 40) + rng.uniform(0, 6)) * np.cos(yy / rng.uniform(8, 40))
                    for _ in range(3)], -1)  # fmt: skip
    for _ in range(6):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(8, 60)
        img[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = rng.choice([0, 255, int(rng.integers(0, 256))], 3)
    img[int(h * 0.3) : int(h * 0.3) + 3] = 255
    im = Image.fromarray(np.clip(img + rng.normal(0, 6, img.shape), 0, 255).round().astype(np.uint8))
    im = im.filter(ImageFilter.GaussianBlur(0.6)) if seed % 2 else im
    return im.resize((side, side), Image.BICUBIC), (h, w)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old-tree", type=Path, help="a checkout of vitc whose crop resized as Pillow's resize(box=)")
    args = parser.parse_args()
    old = module_from(args.old_tree, "transforms") if args.old_tree else None
    rows: dict[tuple[str, str], list[np.ndarray]] = {}
    real, drawn = transforms.resize_boxes, []
    transforms.resize_boxes = lambda x, boxes, *a: drawn.append(boxes) or real(x, boxes, *a)
    for seed in range(PHOTOS):
        for side, out, whole in CASES:
            im, size = photo(seed, side)
            x = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)[None].expand(CROPS, -1, -1, -1).contiguous()
            sizes = torch.tensor([size] * CROPS) if whole else None
            for name in ("bilinear", "bicubic"):
                drawn.clear()
                g = torch.Generator().manual_seed(seed)
                crops = transforms.random_resized_crop(x, g, (0.08, 1.0), sizes=sizes, out_size=out, interpolation=name)
                ours = {f"{name}, now": crops}
                if old is not None:  # the same draws: the same boxes
                    g_old = torch.Generator().manual_seed(seed)
                    ours[f"{name}, before (resize(box=))"] = old.random_resized_crop(
                        x, g_old, (0.08, 1.0), sizes=sizes, out_size=out, interpolation=name
                    )
                for i, (left, top, width, height) in enumerate(drawn[0].tolist()):
                    cut = (math.floor(left), math.floor(top), math.ceil(left + width), math.ceil(top + height))
                    box = (left - cut[0], top - cut[1], left + width - cut[0], top + height - cut[1])
                    want = im.crop(cut).resize((out, out), getattr(Image, name.upper()), box=box)
                    want = np.asarray(want).astype(int)
                    for label, got in ours.items():
                        diff = np.abs(got[i].permute(1, 2, 0).numpy().astype(int) - want)
                        case = f"{side} to {out}" + (" (whole photos)" if whole else "")
                        rows.setdefault((label, case), []).append(diff.ravel())
    print("| crop | images | values | within 1 level | equal | max diff |\n|---|---|---:|---:|---:|---:|")
    for (label, case), diffs in sorted(rows.items()):
        d = np.concatenate(diffs)
        print(f"| {label} | {case} | {len(d):,} | {np.mean(d <= 1):.3%} | {np.mean(d == 0):.3%} | {d.max()} |")


if __name__ == "__main__":
    main()
