"""File size and peak memory of an export's held-out set as the runtime reads it (docs/benchmarks.md).

`vitc build` loads the held-out set before TensorRT builds, and `vitc bench --data` / `vitc eval ENGINE`
run it through the engine: on a Jetson that memory is shared with the GPU. This writes a held-out set of
N images at S×S in both layouts, float32 inputs (written before 0.2) and uint8 pixels with the mean and
std, then in a fresh process per measurement loads it with `load_heldout` and runs it through an ONNX
Runtime runner (`heldout_accuracy`, what bench and build do), recording the largest resident set. A
process that imports the same modules and loads nothing gives the baseline. Rounds are interleaved.

    python docs/heldout_memory.py --images 2000 --size 224 --rounds 3 [--old-tree /tmp/oldwt]

`--old-tree`: a checkout of an earlier commit (git worktree add /tmp/oldwt <commit>), run on the float
file with PYTHONPATH set to it, so the reader of then and of now are measured in the same run.
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
import json, re, sys
mode, heldout_path, onnx_path = sys.argv[1:4]
from vitc.artifacts import load_heldout
from vitc.engines.accuracy import heldout_accuracy
from vitc.engines.onnxrt import OnnxRuntimeRunner
if mode == "run":
    heldout = load_heldout(heldout_path)
    with OnnxRuntimeRunner(onnx_path, device="cpu") as runner:
        report = heldout_accuracy(runner, heldout)
    assert report.agreement == 100.0, report
status = open("/proc/self/status").read()  # VmHWM: this process image's peak (ru_maxrss keeps the parent's)
print(json.dumps({"peak_kib": int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1))}))
"""


def write_files(folder: Path, images: int, size: int) -> dict[str, Path]:
    """The same pixels as float32 inputs (`images`) and as uint8 `pixels` with mean and std, and a model
    (ReduceMean over H and W: three logits) whose logits are stored as the reference."""
    import onnx
    from onnx import TensorProto, helper

    from vitc.artifacts.preprocess import IMAGENET_MEAN, IMAGENET_STD, normalized

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (images, 3, size, size), dtype=np.uint8)
    mean, std = np.asarray(IMAGENET_MEAN, np.float32), np.asarray(IMAGENET_STD, np.float32)
    inputs = np.concatenate([normalized(pixels[i : i + 256], mean, std) for i in range(0, images, 256)])
    logits = inputs.mean(axis=(2, 3), dtype=np.float32)
    labels = logits.argmax(1).astype(np.int64)
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["input"], ["logits"], axes=[2, 3], keepdims=0)],
        "mean",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    files = {"onnx": folder / "mean.onnx", "float32": folder / "float32.npz", "uint8": folder / "uint8.npz"}
    onnx.save(model, str(files["onnx"]))
    np.savez(files["float32"], images=inputs, labels=labels, reference_logits=logits)
    del inputs
    np.savez(files["uint8"], pixels=pixels, mean=mean, std=std, labels=labels, reference_logits=logits)
    return files


def peak_gib(mode: str, heldout: Path, onnx: Path, tree: str | None) -> float:
    env = dict(os.environ, PYTHONPATH=tree) if tree else dict(os.environ)
    done = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(heldout), str(onnx)],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    if done.returncode:
        raise SystemExit(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])["peak_kib"] / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--old-tree", help="a checkout of an earlier commit, run on the float32 file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        files = write_files(Path(tmp), args.images, args.size)
        cases = [("imports only", "baseline", "uint8", None), ("this tree, uint8 file", "run", "uint8", None),
                 ("this tree, float32 file", "run", "float32", None)]  # fmt: skip
        if args.old_tree:
            cases.append(("old tree, float32 file", "run", "float32", args.old_tree))
        peaks: dict[str, list[float]] = {name: [] for name, *_ in cases}
        for _ in range(args.rounds):
            for name, mode, layout, tree in cases:
                peaks[name].append(peak_gib(mode, files[layout], files["onnx"], tree))
        print(f"{args.images} images at {args.size}×{args.size}, {args.rounds} rounds")
        for layout in ("float32", "uint8"):
            print(f"  {layout} file: {files[layout].stat().st_size / 2**20:.1f} MiB")
        for name, values in peaks.items():
            each = ", ".join(f"{v:.2f}" for v in values)
            print(f"  {name}: peak RSS median {statistics.median(values):.2f} GiB ({each})")


if __name__ == "__main__":
    main()
