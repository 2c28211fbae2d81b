"""Copy tensorrt-stubs (TensorRT 10.13's API) into a folder and repair what mypy refuses to parse.

The published .pyi files have two syntax errors: parameters named `in` (IPluginV3 methods) and
`add_scale_nd`'s `channel_axis` without a default after defaulted parameters. This renames the
first to `in_` and gives the second a default. Usage: python tests/engines/repair_trt_stubs.py OUT
then MYPYPATH=OUT mypy --strict vitc/engines/tensorrt.py vitc/build/tensorrt.py
vitc/engines/trt_runner.py vitc/engines/cuda.py
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import sys
from pathlib import Path

PACKAGES = ("tensorrt", "tensorrt_bindings")


def stubs_root() -> Path | None:
    """The site-packages folder holding the tensorrt-stubs .pyi packages, or None."""
    spec = importlib.util.find_spec("tensorrt_stubs")
    if spec is None or spec.origin is None:
        return None
    root = Path(spec.origin).parent.parent
    return root if (root / "tensorrt_bindings" / "tensorrt.pyi").is_file() else None


def repair_text(text: str) -> str:
    text = re.sub(r"([(,]\s*)in(\s*:)", r"\1in_\2", text)  # `def f(self, in: X)` → `in_: X`
    return re.sub(r"(\bchannel_axis: int)(\s*\))", r"\1 = 0\2", text)


def repair(out: Path) -> Path:
    root = stubs_root()
    if root is None:
        raise SystemExit("tensorrt-stubs is not installed (pip install --no-deps tensorrt-stubs)")
    out.mkdir(parents=True, exist_ok=True)
    for package in PACKAGES:
        target = out / package
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(root / package, target, ignore=shutil.ignore_patterns("__pycache__"))
        for pyi in target.rglob("*.pyi"):
            pyi.write_text(repair_text(pyi.read_text()))
    return out


if __name__ == "__main__":
    print(repair(Path(sys.argv[1] if len(sys.argv) > 1 else "build/trt-stubs")))
