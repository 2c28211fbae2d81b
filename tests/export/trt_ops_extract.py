"""Extract the ONNX operator support table of each TensorRT release's ONNX parser for `vitc check`.

Source: onnx/onnx-tensorrt `docs/operators.md` at the commit each NVIDIA/TensorRT `release/X.Y`
branch pins as its `parsers/onnx` submodule (the parser that release ships). Regenerate
vitc/export/trt_onnx_ops.json from two clones:

    git clone https://github.com/NVIDIA/TensorRT trt            # all release/* branches
    git clone https://github.com/onnx/onnx-tensorrt onnx-trt    # all commits
    python tests/export/trt_ops_extract.py --tensorrt trt --onnx-tensorrt onnx-trt > vitc/export/trt_onnx_ops.json

`--md VERSION=FILE` takes a version's operators.md from a file instead (for a clone that lacks
the pinned commit). The committed data was made with the 8.5, 8.6 and 10.0 files from the
onnx-tensorrt clone and the 10.14 and 11.1 files read at the pinned commits from a stored copy of
the repository (c72727708d4e, 7c51a63a7191), transcribed to their Operator/Supported columns.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

VERSIONS = ("8.5", "8.6", "10.0", "10.14", "11.1")


def parse(text: str) -> dict[str, object]:
    """Opset range and supported/unsupported ops of one operators.md."""
    old = re.search(r"supports operators up to Opset (\d+)", text, re.I)
    new = re.search(r"inclusive range of opset (\d+) to opset (\d+)", text, re.I)
    if new:
        low, high = int(new.group(1)), int(new.group(2))
    elif old:
        low, high = None, int(old.group(1))  # the 8.x documents give no lower bound
    else:
        raise ValueError("no opset range in the header")
    rows = re.findall(r"^\|\s*([A-Za-z][A-Za-z0-9]*)\s*\|\s*(Y|N)\b", text, re.M)
    if len(rows) < 100:
        raise ValueError(f"only {len(rows)} operator rows")
    return {
        "opset_min": low,
        "opset_max": high,
        "supported": sorted(op for op, yes in rows if yes == "Y"),
        "unsupported": sorted(op for op, yes in rows if yes == "N"),
    }


def pinned_commit(tensorrt: Path, version: str) -> str:
    out = subprocess.run(
        ["git", "-C", str(tensorrt), "ls-tree", f"release/{version}", "parsers/onnx"],
        check=True, capture_output=True, text=True,
    ).stdout.split()  # fmt: skip
    return out[2]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tensorrt", type=Path, required=True, help="clone of NVIDIA/TensorRT")
    ap.add_argument("--onnx-tensorrt", type=Path, required=True, help="clone of onnx/onnx-tensorrt")
    ap.add_argument("--md", action="append", default=[], help="VERSION=FILE: operators.md of a version from a file")
    args = ap.parse_args(argv)
    files = dict(item.split("=", 1) for item in args.md)
    tables: dict[str, object] = {}
    for version in VERSIONS:
        commit = pinned_commit(args.tensorrt, version)
        if version in files:
            text = Path(files[version]).read_text()
        else:
            text = subprocess.run(
                ["git", "-C", str(args.onnx_tensorrt), "show", f"{commit}:docs/operators.md"],
                check=True, capture_output=True, text=True,
            ).stdout  # fmt: skip
        tables[version] = {"onnx_tensorrt_commit": commit, **parse(text)}
    out = {"source": "onnx/onnx-tensorrt docs/operators.md at each TensorRT release's parsers/onnx", **tables}
    json.dump(out, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
