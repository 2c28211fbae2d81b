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
    from vitc.artifacts import load_manifest
    from vitc.artifacts.sidecar import load_sidecar
    from vitc.build.options import BuildOptions
    from vitc.build.tensorrt import build_engine
    from vitc.engines.trt_runner import TensorRTRunner

    manifest = load_manifest(export_dir)
    plan = tmp_path / f"tiny.{precision}.plan"
    result = build_engine(BuildOptions(onnx=manifest.onnx_path, output=plan, precision=precision, manifest=manifest))
    side = load_sidecar(plan)
    assert side is not None and side.engine_drift["agreement"] >= 90.0 and result.sidecar.gpu["name"]
    with TensorRTRunner(plan) as runner:
        out = runner.infer({"input": np.zeros((4, 3, 8, 8), np.float32)})["logits"]
        assert out.shape == (4, 10) and runner.gpu_time is not None


def test_build_convit_engines_and_bench(tmp_path: Path, exports: dict) -> None:
    """The trained convit_micro's fp32/fp16/int8 exports → engines; drift within the export's bounds; bench."""
    from typer.testing import CliRunner

    from vitc.artifacts import load_manifest
    from vitc.artifacts.sidecar import load_sidecar
    from vitc.build.options import BuildOptions
    from vitc.build.tensorrt import build_engine
    from vitc.cli.main import app

    plans = []
    for precision, result in exports.items():
        manifest = load_manifest(result.manifest_path)
        plan = tmp_path / f"convit_micro.{precision}.plan"
        build_engine(BuildOptions(onnx=result.onnx_path, output=plan, precision=precision, manifest=manifest))
        drift = load_sidecar(plan).engine_drift  # against the PyTorch FP32 reference logits
        assert -drift["delta_top1"] <= {"fp32": 0.1, "fp16": 0.1, "int8": 1.0}[precision], drift
        assert drift["agreement"] >= 97.0, drift
        plans.append(plan)
    args = [arg for plan in plans for arg in ("-e", str(plan))]
    heldout = exports["fp32"].manifest_path.parent
    bench = CliRunner().invoke(app, ["bench", *args, "--data", str(heldout), "-b", "1,8", "-n", "20"])
    assert bench.exit_code == 0, bench.output
    assert "convit_micro.int8.plan" in bench.output and "top-1" in bench.output


def test_static_engine_cuda_graph(tmp_path: Path):
    """Each replay computes on the input of its own call: a replay that did nothing would return the last logits."""
    from vitc.build.options import BuildOptions
    from vitc.build.tensorrt import build_engine
    from vitc.engines.trt_runner import TensorRTRunner

    onnx = make_tiny_onnx(tmp_path / "s.onnx", batch=2)
    plan = tmp_path / "s.plan"
    build_engine(BuildOptions(onnx=onnx, output=plan))
    feeds = [np.random.default_rng(i).standard_normal((2, 3, 8, 8)).astype(np.float32) for i in range(4)]
    with TensorRTRunner(plan) as plain:
        expected = [plain.infer({"input": x})["logits"] for x in feeds]
    with TensorRTRunner(plan, cuda_graph=True) as runner:
        got = [runner.infer({"input": x})["logits"] for x in feeds]  # plain, capture + replay, replay, replay
        assert runner._graph is not None
    for i, (want, have) in enumerate(zip(expected, got)):
        assert not np.allclose(have, expected[i - 1], atol=1e-3), i  # the inputs differ enough to tell apart
        np.testing.assert_allclose(have, want, rtol=1e-4, atol=1e-5)
