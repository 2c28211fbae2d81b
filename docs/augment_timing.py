"""RandAugment's cost on the CPU: draw and apply a policy on one uint8 batch, this tree against another;
with `--part crop`, the random-resized crop's (TrainAugment with crops and flips only).

    git worktree add /tmp/aa-old 28c6134            # the tree before RandAugment's warps took Pillow's filters
    python docs/augment_timing.py --old-tree /tmp/aa-old --batch 64 --size 224 --rounds 15 --threads 1
    git worktree add /tmp/crop-old e2e46f0          # the tree before the crop resized as Pillow's
    python docs/augment_timing.py --part crop --side 256 --old-tree /tmp/crop-old --batch 64 --size 224

Both trees' `vitc/data/autoaugment.py` (or `transforms.py`) run in this process on the same images and
seeds, interleaved round by round (which tree goes first alternates); the medians of wall and CPU time per
batch are printed. For the crop, `--side` larger than `--size` makes the batch whole photos (640×480)
kept squashed to that side, as an in-memory image folder holds them; equal, images cropped at their size
(digits, CIFAR-10).
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path
from types import ModuleType

import torch

from vitc.data import autoaugment, transforms


def module_from(tree: Path, name: str = "autoaugment") -> ModuleType:
    """The other tree's vitc/data/`name` module, loaded from its file (it imports torch and vitc's basics)."""
    spec = importlib.util.spec_from_file_location(f"other_{name}", tree / "vitc" / "data" / f"{name}.py")
    if spec is None or spec.loader is None:
        raise SystemExit(f"{tree}: no vitc/data/{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old-tree", type=Path, help="a checkout of another vitc to time beside this one")
    parser.add_argument("--policy", default="rand-m9-mstd0.5-inc1", help="timm's RandAugment string")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--part", choices=("rand", "crop"), default="rand", help="RandAugment, or the crop")
    parser.add_argument("--side", type=int, help="crop: the stored images' side (default --size)")
    parser.add_argument("--interpolation", default="bilinear", help="crop: this tree's aug.train_interpolation")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.part == "crop":
        time_crops(args)
        return
    from vitc.train.config import parse_auto_augment

    policy = parse_auto_augment(args.policy)
    if policy["kind"] != "rand":
        raise SystemExit(f"{args.policy}: not a RandAugment string (rand-m9-mstd0.5-inc1)")
    policy_args = {
        "magnitude": policy["magnitude"], "num_ops": int(policy["num_ops"]),
        "magnitude_std": policy["magnitude_std"], "increasing": bool(policy.get("increasing", 0)),
    }  # fmt: skip
    images = torch.randint(0, 256, (args.batch, 3, args.size, args.size), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))  # fmt: skip
    trees = {"this tree": autoaugment}
    if args.old_tree:
        trees["old tree"] = module_from(args.old_tree)
    fill = autoaugment.fill_value((0.485, 0.456, 0.406), 3)
    wall: dict[str, list[float]] = {name: [] for name in trees}
    cpu: dict[str, list[float]] = {name: [] for name in trees}
    for r in range(args.rounds):
        order = list(trees) if r % 2 == 0 else list(reversed(trees))
        for name in order:
            module = trees[name]
            start, start_cpu = time.perf_counter(), time.process_time()
            rounds = module.draw_rand_augment(images.shape, torch.Generator().manual_seed(r), **policy_args)
            module.apply(images.float().div_(255.0), rounds, fill)
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    print(f"{args.policy} on {args.batch} crops of {args.size}, {args.rounds} rounds, {args.threads} threads")
    for name in trees:
        print(f"{name}: wall median {statistics.median(wall[name]) * 1e3:.0f} ms "
              f"(min {min(wall[name]) * 1e3:.0f}, max {max(wall[name]) * 1e3:.0f}), "
              f"CPU time median {statistics.median(cpu[name]) * 1e3:.0f} ms")  # fmt: skip


def time_crops(args: argparse.Namespace) -> None:
    """TrainAugment with crops and flips only (no colour, erasing or mixing) on one uint8 batch, both trees."""
    side = args.side or args.size
    images = torch.randint(0, 256, (args.batch, 3, side, side), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))  # fmt: skip
    labels = torch.arange(args.batch) % 10
    whole = {"sizes": torch.tensor([[480, 640]] * args.batch)} if side != args.size else {}
    recipe = {"num_classes": 10, "mean": (0.5,) * 3, "std": (0.25,) * 3, "crop_scale": (0.35, 1.0), "mixup_alpha": 0.0,
              "cutmix_alpha": 0.0, "erase_prob": 0.0, "crop_size": args.size if whole else None}  # fmt: skip
    augments = {"this tree": transforms.TrainAugment(**recipe, train_interpolation=args.interpolation)}
    if args.old_tree:
        augments["old tree"] = module_from(args.old_tree, "transforms").TrainAugment(**recipe)
    wall: dict[str, list[float]] = {name: [] for name in augments}
    cpu: dict[str, list[float]] = {name: [] for name in augments}
    for r in range(args.rounds):
        for name in list(augments) if r % 2 == 0 else list(reversed(augments)):
            start, start_cpu = time.perf_counter(), time.process_time()
            augments[name](images, labels, torch.Generator().manual_seed(r), **whole)
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    what = f"whole photos kept at {side}" if whole else "images"
    print(f"crops of {args.batch} {what} to {args.size}, {args.rounds} rounds, {args.threads} threads, "
          f"this tree {args.interpolation}")  # fmt: skip
    for name in augments:
        print(f"{name}: wall median {statistics.median(wall[name]) * 1e3:.0f} ms "
              f"(min {min(wall[name]) * 1e3:.0f}, max {max(wall[name]) * 1e3:.0f}), "
              f"CPU time median {statistics.median(cpu[name]) * 1e3:.0f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
