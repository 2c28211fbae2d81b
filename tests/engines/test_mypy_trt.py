"""mypy --strict on the TensorRT and CUDA adapters against repaired tensorrt-stubs (TensorRT 10.13)."""

from __future__ import annotations

import pytest

from tests.engines.repair_trt_stubs import repair_text
from tests.mypy_run import STRICT_TRT, MypyReport


@pytest.mark.slow
def test_mypy_strict_trt_adapters(mypy_report: MypyReport) -> None:
    if not mypy_report.checked_trt:
        pytest.skip("tensorrt-stubs is not installed (pip install --no-deps tensorrt-stubs)")
    assert mypy_report.finished, mypy_report.output
    assert mypy_report.lines_of(*STRICT_TRT) == [], mypy_report.output


def test_repair_text():
    src = (
        "def f(self: X, in: list[int], out: list[int]) -> None: ...\n"
        "def add_scale_nd(self, input: T, shift: W = None, channel_axis: int) -> L: ...\n"
    )
    fixed = repair_text(src)
    assert "in_: list[int]" in fixed and "channel_axis: int = 0)" in fixed
    compile(fixed, "stub", "exec")
