"""Peak memory and time of `vitc export -p int8` by calibration batch, and what entropy calibration holds.

    python docs/calib_memory.py [--rounds 2] [--base]

Writes 4 classes of 320×256 JPEGs (64 train, 32 val each) and random-weight checkpoints under
/tmp/vitc-calib-memory, then runs `vitc export CKPT -p int8` in a fresh process per measurement,
the calibration batch set through `quantize_int8(batch=...)` (32: vitc before, 8: now), rounds
interleaved. Peak memory is the process's largest resident set (VmHWM: ru_maxrss would start from the
parent's peak, which exec passes on, and the parent may have built the checkpoints). `--base` adds
convit_base (32 calibration images, one round: minutes each on 2 cores). The MinMax files are compared
byte for byte, and the entropy rows give the memory per calibration image.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path("/tmp/vitc-calib-memory")
CHILD = r"""
import json, re, sys, time
import vitc.quant.int8 as q
batch, args = int(sys.argv[1]), sys.argv[2:]
original = q.quantize_int8
q.quantize_int8 = lambda *a, **k: original(*a, **{**k, "batch": k.get("batch") or batch})
from vitc.cli.main import app
start = time.perf_counter()
try:
    app(args, standalone_mode=False)
finally:
    status = open("/proc/self/status").read()
    peak = int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) * 1024
    print(json.dumps({"seconds": time.perf_counter() - start, "peak": peak}))
"""


def prepare() -> None:
    import numpy as np
    from PIL import Image

    from vitc.checkpoint import meta_for, write_checkpoint
    from vitc.models import create_model

    rng = np.random.default_rng(0)
    classes = ["cat", "dog", "fox", "owl"]
    for split, count in (("train", 64), ("val", 32)):
        for name in classes:
            folder = ROOT / "photos" / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                if not (folder / f"{i}.jpg").exists():
                    Image.fromarray(rng.integers(0, 256, (256, 320, 3), dtype=np.uint8)).save(folder / f"{i}.jpg")
    for model in ("convit_tiny", "convit_base"):
        if not (ROOT / f"{model}.safetensors").exists():
            net = create_model(model, num_classes=len(classes))
            write_checkpoint(ROOT / f"{model}.safetensors", net, meta_for(net, class_names=classes))


def export(model: str, batch: int, method: str, images: int, run: str) -> dict:
    args = [
        "export", str(ROOT / f"{model}.safetensors"), "-p", "int8", "--calib-method", method,
        "--calib-images", str(images), "--data", "imagefolder", "--data-dir", str(ROOT / "photos"),
        "--calib-dir", str(ROOT / "photos" / "train"), "--dynamic-batch", "1:8:32", "--out", str(ROOT / "export"),
        "--run", run, "--force",
    ]  # fmt: skip
    done = subprocess.run([sys.executable, "-c", CHILD, str(batch), *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(done.stdout[-2000:] + done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--base", action="store_true")
    opts = parser.parse_args()
    prepare()
    runs: dict[tuple, list[dict]] = {}
    configs = [("convit_tiny", b, "minmax", 256) for b in (32, 8)]
    configs += [("convit_tiny", 8, "entropy", n) for n in (64, 256)]
    for _ in range(opts.rounds):
        for config in configs:
            model, batch, method, images = config
            run = f"{model}_{method}{images}_b{batch}"
            runs.setdefault(config, []).append(export(model, batch, method, images, run))
    if opts.base:
        for batch in (32, 8):
            config = ("convit_base", batch, "minmax", 32)
            runs[config] = [export(*config, f"convit_base_minmax32_b{batch}")]
    print("| model | method | images | batch | peak RSS (median) | time (median) | runs |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for (model, batch, method, images), rows in runs.items():
        peak = statistics.median(r["peak"] for r in rows) / 2**30
        seconds = statistics.median(r["seconds"] for r in rows)
        print(f"| {model} | {method} | {images} | {batch} | {peak:.2f} GiB | {seconds:.1f} s | {len(rows)} |")
    for model, images in (("convit_tiny", 256), ("convit_base", 32)):
        files = [ROOT / "export" / f"{model}_minmax{images}_b{b}" / "model.int8.onnx" for b in (32, 8)]
        if all(f.exists() for f in files):
            print(f"{model}: batch 32 and 8 write the same file: {filecmp.cmp(*files, shallow=False)}")
    low, high = (statistics.median(r["peak"] for r in runs[("convit_tiny", 8, "entropy", n)]) for n in (64, 256))
    print(f"entropy, convit_tiny: {(high - low) / 192 / 2**20:.1f} MiB more peak per calibration image")
    print(time.strftime("%Y-%m-%d %H:%M"))


if __name__ == "__main__":
    main()
