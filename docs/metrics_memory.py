"""Memory that scoring logits takes (vitc.metrics.accuracy): the peak of numpy's allocations above the logits
themselves, for an ImageNet-sized validation set, with this tree's vitc or another's (a worktree).

    python docs/metrics_memory.py --rows 50000 --classes 1000 [--tree /tmp/old]
"""

from __future__ import annotations

import argparse
import sys
import tracemalloc
from pathlib import Path


def peak_mib(rows: int, classes: int) -> tuple[float, float]:
    """(peak MiB allocated while scoring, top-1) for seeded random logits and labels."""
    import numpy as np

    from vitc import metrics

    logits = np.random.default_rng(0).standard_normal((rows, classes)).astype(np.float32)
    labels = np.random.default_rng(1).integers(0, classes, rows)
    tracemalloc.start()
    try:
        top1 = metrics.accuracy(logits, labels)["top1"]
        return tracemalloc.get_traced_memory()[1] / 2**20, top1
    finally:
        tracemalloc.stop()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=50_000)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--tree", type=Path, default=None, help="import vitc from this checkout instead")
    args = ap.parse_args(argv)
    if args.tree is not None:
        sys.path.insert(0, str(args.tree.resolve()))
    peak, top1 = peak_mib(args.rows, args.classes)
    logits = args.rows * args.classes * 4 / 2**20
    print(f"{args.rows} x {args.classes} logits ({logits:.1f} MiB): peak {peak:.1f} MiB more, top-1 {top1:.3f}%")


if __name__ == "__main__":
    main()
