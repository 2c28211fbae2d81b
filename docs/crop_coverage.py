"""How much of a photo's border training crops reach, per data path: a measurement aid for
docs/benchmarks.md ("Training crops of an in-memory image folder"), not part of vitc.

A 320×240 photo whose outer fifth of the width on each side is red (40% of its area) is cropped 2,000
times at `--size` with random-resized crops of scale `--scale`, three ways: from the evaluation's
centre crop kept in memory (what an in-memory image folder trained on before), from the whole photo
kept in memory with its size (vitc.data.images.read_whole, now), and from the file by the streamed
path's worker transform. Printed: the share of crops holding any red, and the mean red share.

    python docs/crop_coverage.py --size 64 --scale 0.35 1.0
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vitc.data.datasets import load_dataset
from vitc.data.stream import SampleTransform
from vitc.data.transforms import random_resized_crop

CROPS = 2000


def red_share(x: torch.Tensor) -> torch.Tensor:
    """Per image (N, 3, H, W), the share of its pixels that are red."""
    return ((x[:, 0] > 128) & (x[:, 1] < 100)).float().mean((1, 2))


def photo_folder(root: Path) -> Path:
    photo = np.zeros((240, 320, 3), np.uint8)
    photo[:, :, 1] = 200
    photo[:, :64] = photo[:, -64:] = (255, 0, 0)
    for split in ("train", "val"):
        for name in ("a", "b"):
            (root / split / name).mkdir(parents=True)
            Image.fromarray(photo).save(root / split / name / "0.png")
    return root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--crop-pct", type=float, default=0.875)
    ap.add_argument("--scale", type=float, nargs=2, default=(0.35, 1.0))
    args = ap.parse_args()
    scale = tuple(args.scale)
    with tempfile.TemporaryDirectory() as tmp:
        root = photo_folder(Path(tmp))
        load = {"data_dir": root, "image_size": args.size, "crop_pct": args.crop_pct}
        rows = {}
        for name, whole in (("in memory, the centre crop (before)", False), ("in memory, the whole photo (now)", True)):
            data = load_dataset("imagefolder", "train", whole=whole, **load)
            g = torch.Generator().manual_seed(0)
            crops = torch.cat([
                random_resized_crop(data.images.float(), g, scale, sizes=data.sizes, out_size=args.size)
                for _ in range(CROPS // len(data))
            ])  # fmt: skip
            rows[name] = red_share(crops)
        transform = SampleTransform(args.size, args.crop_pct, 0, scale, flip_prob=0.0)
        with Image.open(root / "train" / "a" / "0.png") as im:
            im = im.convert("RGB")
            streamed = np.stack([transform.train(im, epoch, 0) for epoch in range(CROPS)])
        rows["streamed, from the file"] = red_share(torch.from_numpy(streamed))
    print(f"{CROPS} crops at {args.size}, scale {scale[0]}-{scale[1]}; the photo is 40% red")
    print("| path | crops holding red | mean red share |\n|---|---:|---:|")
    for name, share in rows.items():
        print(f"| {name} | {(share > 0).float().mean():.1%} | {share.mean():.3f} |")


if __name__ == "__main__":
    main()
