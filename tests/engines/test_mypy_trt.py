"""mypy --strict on the TensorRT and CUDA adapters against repaired tensorrt-stubs (TensorRT 10.13)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIG = """[mypy]
strict = True
python_version = 3.10
follow_imports = silent

[mypy-tensorrt,tensorrt.*,tensorrt_bindings,tensorrt_bindings.*]
ignore_errors = True
[mypy-tensorrt_libs,tensorrt_libs.*,cuda.*,pycuda.*]
ignore_missing_imports = True
"""


@pytest.mark.slow
def test_mypy_strict_trt_adapters(tmp_path: Path):
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is not installed")
    sys.path.insert(0, str(Path(__file__).parent))
    try:
        from repair_trt_stubs import repair, stubs_root
    finally:
        sys.path.pop(0)
    if stubs_root() is None:
        pytest.skip("tensorrt-stubs is not installed (pip install --no-deps tensorrt-stubs)")
    stubs = repair(tmp_path / "stubs")
    config = tmp_path / "mypy.ini"
    config.write_text(CONFIG)
    env = {**os.environ, "MYPYPATH": str(stubs)}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            str(config),
            "--cache-dir",
            str(tmp_path / "cache"),
            "vitc/engines/tensorrt.py",
            "vitc/engines/trt_plan.py",
            "vitc/build/tensorrt.py",
            "vitc/build/options.py",
            "vitc/build/trt_precision.py",
            "vitc/build/trt_timing_cache.py",
            "vitc/engines/trt_runner.py",
            "vitc/engines/cuda.py",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_repair_text():
    sys.path.insert(0, str(Path(__file__).parent))
    try:
        from repair_trt_stubs import repair_text
    finally:
        sys.path.pop(0)
    src = (
        "def f(self: X, in: list[int], out: list[int]) -> None: ...\n"
        "def add_scale_nd(self, input: T, shift: W = None, channel_axis: int) -> L: ...\n"
    )
    fixed = repair_text(src)
    assert "in_: list[int]" in fixed and "channel_axis: int = 0)" in fixed
    compile(fixed, "stub", "exec")
