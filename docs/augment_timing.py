"""RandAugment's cost on the CPU: draw and apply a policy on one uint8 batch, this tree against another.

    git worktree add /tmp/aa-old 28c6134            # the tree before RandAugment's warps took Pillow's filters
    python docs/augment_timing.py --old-tree /tmp/aa-old --batch 64 --size 224 --rounds 15 --threads 1

Both trees' `vitc/data/autoaugment.py` run in this process on the same images and seeds, interleaved round by
round (which tree goes first alternates); the medians of wall and CPU time per batch are printed.
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

from vitc.data import autoaugment


def module_from(tree: Path) -> ModuleType:
    """The other tree's autoaugment module, loaded from its file (it imports only torch)."""
    spec = importlib.util.spec_from_file_location("other_autoaugment", tree / "vitc" / "data" / "autoaugment.py")
    if spec is None or spec.loader is None:
        raise SystemExit(f"{tree}: no vitc/data/autoaugment.py")
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
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
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


if __name__ == "__main__":
    main()
