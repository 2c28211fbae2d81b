"""Streaming data: peak memory per data size, indexing time, decode throughput per worker.

A measurement aid for docs/benchmarks.md ("Data that does not fit in memory", issue 12), not part
of vitc. Subcommands:

    python docs/data_timing.py make /tmp/jpegs2k --train 2000 --val 200          # 200x150 JPEGs, 10 classes
    python docs/data_timing.py make /tmp/jpegs20k --train 20000 --val 2000
    python docs/data_timing.py memory /tmp/jpegs2k /tmp/jpegs20k --workers 2      # one epoch each, 112x112
    python docs/data_timing.py memory /tmp/jpegs20k --modes auto                  # auto streams 20,000 anyway
    python docs/data_timing.py loader /tmp/jpegs20k --workers 2                   # the loader alone, every 40 batches
    python docs/data_timing.py index /tmp/tree100k --files 100000                 # hard links, 100 classes
    python docs/data_timing.py decode /tmp/jpegs500 --rounds 5                    # 500x375 JPEGs -> 224x224
    python docs/data_timing.py step --rounds 3                                    # DeiT-S/ConViT-S train steps

`memory` runs `vitc train` (a 1-block, 32-wide deit_micro with 16x16 patches at 112x112, fp32, one epoch,
data.stream=auto and =stream) and samples every 50 ms the resident (RSS) and proportional (PSS: shared pages divided
among the processes that map them) memory of the whole process tree, workers included; it prints the
peaks. RSS counts the pages a forked worker shares with its parent once per process, PSS once.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

CLASSES = 10
MEMORY_MODEL = {"patch_size": 16, "depth": 1, "embed_dim": 32, "num_heads": 2}  # the data is measured, not the model


def make(root: Path, n_train: int, n_val: int, size: tuple[int, int], seed: int = 0) -> None:
    """Smooth random colour fields with noise (they compress like photos, unlike pure noise)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = size
    for split, n in (("train", n_train), ("val", n_val)):
        for c in range(CLASSES):
            (root / split / f"c{c}").mkdir(parents=True, exist_ok=True)
        for i in range(n):
            coarse = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
            im = Image.fromarray(coarse).resize((w, h), Image.Resampling.BILINEAR)
            noisy = np.asarray(im, dtype=np.int16) + rng.integers(-12, 12, (h, w, 3))
            Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(root / split / f"c{i % CLASSES}" / f"{i:06d}.jpg")


def _tree(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def _rss_pss(pids: list[int]) -> tuple[int, int]:
    rss = pss = 0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1]) * 1024
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1]) * 1024
        except OSError:
            continue
    return rss, pss


def peak_memory(cmd: list[str]) -> tuple[int, int, float]:
    """Run `cmd`; the peak summed RSS and PSS of its process tree, and its wall time."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = [0, 0]

    def sample() -> None:
        while proc.poll() is None:
            rss, pss = _rss_pss(_tree(proc.pid))
            peak[0], peak[1] = max(peak[0], rss), max(peak[1], pss)
            time.sleep(0.05)

    thread = threading.Thread(target=sample)
    thread.start()
    _, err = proc.communicate()
    thread.join()
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed: {err.decode()[-2000:]}")
    return peak[0], peak[1], time.perf_counter() - start


def memory(folders: list[Path], workers: int, out_dir: Path, modes: list[str]) -> None:
    print("| images | data.stream | path taken | peak RSS, tree | peak PSS, tree | wall |")
    print("|---:|---|---|---:|---:|---:|")
    for folder in folders:
        n = sum(1 for _ in (folder / "train").rglob("*.jpg"))
        for mode in modes:
            name = f"mem_{folder.name}_{mode}"
            cmd = [sys.executable, "-m", "vitc.cli.main", "train", "--model", "deit_micro", "--data", "imagefolder"]
            cmd += ["--data-dir", str(folder), "--name", name, "--force", "-q", "--epochs", "1"]
            sets = {"data.image_size": 112, "data.stream": mode, "optim.batch_size": 128, "run.amp": "off"}
            sets |= {f"model.args.{k}": v for k, v in MEMORY_MODEL.items()}
            sets |= {"run.workers": workers, "run.out_dir": str(out_dir)}
            for key, value in sets.items():
                cmd += ["--set", f"{key}={value if not isinstance(value, str) else chr(34) + value + chr(34)}"]
            rss, pss, wall = peak_memory(cmd)
            decoded = (n * 1.1) * 3 * 112 * 112
            path = "stream" if mode == "stream" or decoded > 512 * 2**20 else "memory"
            print(f"| {n:,} | {mode} | {path} | {rss / 2**20:,.0f} MB | {pss / 2**20:,.0f} MB | {wall:.0f} s |")


def loader(root: Path, workers: int, every: int) -> None:
    """Only the streaming loader over one epoch at 112x112, batch 128: the tree's memory every `every` batches."""
    from vitc.data.feed import StreamFeed
    from vitc.data.sampling import batches, make_generator
    from vitc.data.stream import SampleTransform, open_source

    sources = {s: open_source("imagefolder", root, s) for s in ("train", "val")}
    feed = StreamFeed(sources, SampleTransform(112, crop_scale=(0.5, 1.0)), workers=workers, pin_memory=False)
    order = list(batches(len(feed), 128, make_generator(0, 0), drop_last=True))
    for i, _ in enumerate(feed.train_batches(order, 0)):
        if i % every == 0:
            rss, pss = _rss_pss(_tree(os.getpid()))
            print(f"batch {i}: RSS sum {rss / 2**20:.0f} MB, PSS {pss / 2**20:.0f} MB", flush=True)
    feed.close()


def index(root: Path, files: int, rounds: int) -> None:
    """`files` JPEG names (hard links to one per class) in 100 class folders; scan times without and with
    the run's cache."""
    from PIL import Image

    from vitc.data.stream import index_imagefolder

    per_class = files // 100
    if not (root / "train").is_dir():
        for split, n in (("train", per_class), ("val", 1)):
            for c in range(100):
                d = root / split / f"c{c:03d}"
                d.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (8, 8)).save(d / f"{0:06d}.jpg")
                for i in range(1, n):  # one inode per class: a file system caps the links per inode
                    os.link(d / f"{0:06d}.jpg", d / f"{i:06d}.jpg")
    cache = root / "index.json"
    scans, hits = [], []
    for _ in range(rounds):
        cache.unlink(missing_ok=True)
        t0 = time.perf_counter()
        found = len(index_imagefolder(root, "train", cache))
        t1 = time.perf_counter()
        index_imagefolder(root, "train", cache)
        scans.append(t1 - t0)
        hits.append(time.perf_counter() - t1)
    scan, hit = statistics.median(scans), statistics.median(hits)
    print(f"{found:,} files: scan + write cache {scan:.2f} s, cached {hit:.2f} s")
    print(f"  rounds: scan {[round(s, 2) for s in scans]}, cached {[round(s, 2) for s in hits]}")


def decode(root: Path, n: int, rounds: int) -> None:
    """Per-sample train and eval transforms at 224 in this process (= one worker), then DataLoaders
    with 1 and 2 workers, interleaved over `rounds`."""
    import torch

    from vitc.data.feed import StreamFeed
    from vitc.data.sampling import make_generator
    from vitc.data.stream import SampleTransform, StreamSet, open_source

    if not (root / "train").is_dir():
        make(root, n, CLASSES, (500, 375))
    sources = {s: open_source("imagefolder", root, s) for s in ("train", "val")}
    t = SampleTransform(224, crop_pct=0.875, crop_scale=(0.08, 1.0))
    ds = StreamSet(sources, t)
    count = len(sources["train"])
    rates: dict[str, list[float]] = {"train, 1 process": [], "eval, 1 process": []}
    feeds = {w: StreamFeed(sources, t, workers=w, pin_memory=False) for w in (1, 2)}
    for w in feeds:
        rates[f"train, DataLoader {w} worker(s), batch 64"] = []
    for r in range(rounds):
        t0 = time.perf_counter()
        for i in range(count):
            ds[("train", i, r, 0)]
        rates["train, 1 process"].append(count / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        for i in range(count):
            ds[("train", i, -1, 0)]
        rates["eval, 1 process"].append(count / (time.perf_counter() - t0))
        for w, feed in feeds.items():
            order = list(torch.randperm(count, generator=make_generator(0, r)).split(64))
            t0 = time.perf_counter()
            seen = sum(len(y) for _, y, _ in feed.train_batches(order, r))
            rates[f"train, DataLoader {w} worker(s), batch 64"].append(seen / (time.perf_counter() - t0))
    for feed in feeds.values():
        feed.close()
    print(f"{count} JPEGs 500x375 -> 224x224 (rounds: {rounds}, interleaved)")
    for name, values in rates.items():
        print(f"| {name} | {statistics.median(values):.0f} img/s | {[round(v) for v in values]} |")
    draft_vs_full(root / "phone.jpg", rounds)


def draft_vs_full(path: Path, rounds: int) -> None:
    """One 4000x3000 JPEG opened for a 224 model's training crops (draft mode: decoded at 1/8) against the whole
    decode the evaluation makes (`open_image` without draft_short: vitc eval, predict, export's held-out set)."""
    from vitc.data.images import center_crop, open_image

    if not path.is_file():
        make(path.parent / "phone", 1, 0, (4000, 3000))
        next((path.parent / "phone" / "train").rglob("*.jpg")).rename(path)

    ways = {
        "draft": lambda: open_image(path, draft_short=224),
        "whole": lambda: open_image(path),
        "draft, then the eval transform (256, centre 224)": lambda: center_crop(open_image(path, 256), 256, 224),
        "whole, then the eval transform (vitc eval's)": lambda: center_crop(open_image(path), 256, 224),
    }
    times: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(rounds):
        for name, fn in ways.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    for name, values in times.items():
        ms = [round(v * 1e3) for v in values]
        print(f"| 4000x3000 JPEG, {name} | {statistics.median(ms):.0f} ms | {ms} |")


def step(rounds: int, batch: int) -> None:
    """Training steps (forward, loss, backward, AdamW) of DeiT-S and ConViT-S at 224, bf16 autocast."""
    import torch
    import torch.nn.functional as F

    from vitc.models import create_model

    models = {name: create_model(name, num_classes=10) for name in ("deit_small", "convit_small")}
    opts = {name: torch.optim.AdamW(m.parameters(), lr=1e-4) for name, m in models.items()}
    x, y = torch.randn(batch, 3, 224, 224), torch.randint(0, 10, (batch,))
    times: dict[str, list[float]] = {name: [] for name in models}
    for r in range(rounds + 1):  # the first round warms up
        for name, m in models.items():
            t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = F.cross_entropy(m(x).float(), y)
            opts[name].zero_grad()
            loss.backward()
            opts[name].step()
            if r:
                times[name].append(time.perf_counter() - t0)
    for name, values in times.items():
        rate = batch / statistics.median(values)
        print(f"| {name} | batch {batch} | {rate:.1f} img/s | {[round(v, 2) for v in values]} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("make")
    p.add_argument("root", type=Path)
    p.add_argument("--train", type=int, default=2000)
    p.add_argument("--val", type=int, default=200)
    p.add_argument("--size", type=int, nargs=2, default=(200, 150))
    p = sub.add_parser("memory")
    p.add_argument("folders", type=Path, nargs="+")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out-dir", type=Path, default=Path("/tmp/data_timing_runs"))
    p.add_argument("--modes", nargs="+", default=["auto", "stream"], help="data.stream values to run")
    p = sub.add_parser("loader")
    p.add_argument("root", type=Path)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--every", type=int, default=40)
    p = sub.add_parser("index")
    p.add_argument("root", type=Path)
    p.add_argument("--files", type=int, default=100_000)
    p.add_argument("--rounds", type=int, default=3)
    p = sub.add_parser("decode")
    p.add_argument("root", type=Path)
    p.add_argument("--images", type=int, default=300)
    p.add_argument("--rounds", type=int, default=5)
    p = sub.add_parser("step")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    if args.command == "make":
        make(args.root, args.train, args.val, tuple(args.size))
    elif args.command == "memory":
        memory(args.folders, args.workers, args.out_dir, args.modes)
    elif args.command == "loader":
        loader(args.root, args.workers, args.every)
    elif args.command == "index":
        index(args.root, args.files, args.rounds)
    elif args.command == "decode":
        decode(args.root, args.images, args.rounds)
    else:
        step(args.rounds, args.batch)


if __name__ == "__main__":
    main()
