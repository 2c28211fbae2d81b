"""Build and run real engines. Needs TensorRT + an NVIDIA GPU (skipped elsewhere, see conftest.py).

Run on a GPU machine or Jetson: `pytest -m tensorrt tests/engines -v`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.engines.conftest import make_tiny_onnx

pytestmark = pytest.mark.tensorrt


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_build_and_run_tiny(tmp_path: Path, export_dir: Path, precision: str):
    from vitc.engines.manifest import load_manifest
    from vitc.engines.tensorrt import load_sidecar
    from vitc.engines.trt_build import BuildOptions, build_engine
    from vitc.engines.trt_runner import TensorRTRunner

    manifest = load_manifest(export_dir)
    plan = tmp_path / f"tiny.{precision}.plan"
    result = build_engine(BuildOptions(onnx=manifest.onnx_path, output=plan, precision=precision, manifest=manifest))
    side = load_sidecar(plan)
    assert side is not None and side["engine_drift"]["agreement"] >= 90.0 and result.sidecar["gpu"]["name"]
    with TensorRTRunner(plan) as runner:
        out = runner.infer({"input": np.zeros((4, 3, 8, 8), np.float32)})["logits"]
        assert out.shape == (4, 10) and runner.gpu_time is not None


def test_build_convit_int8_and_bench(tmp_path: Path):
    """A small convit exported fp32/fp16/int8 by `vitc export`, when that command exists here."""
    export = pytest.importorskip("vitc.export")
    del export
    pytest.skip("wire to vitc export's API once it lands (build fp32/fp16/int8 of convit_micro, bench them)")


def test_static_engine_cuda_graph(tmp_path: Path):
    from vitc.engines.trt_build import BuildOptions, build_engine
    from vitc.engines.trt_runner import TensorRTRunner

    onnx = make_tiny_onnx(tmp_path / "s.onnx", batch=2)
    plan = tmp_path / "s.plan"
    build_engine(BuildOptions(onnx=onnx, output=plan))
    with TensorRTRunner(plan, cuda_graph=True) as runner:
        feed = {"input": np.ones((2, 3, 8, 8), np.float32)}
        first = runner.infer(feed)["logits"]
        for _ in range(3):
            again = runner.infer(feed)["logits"]
        assert np.allclose(first, again)
