"""Every ONNX Runtime session vitc builds (the runner, the export's parity and drift checks, INT8's calibration
probe and weight folding) comes from vitc._ort with its caller's stated settings: on the cores this process may
use, errors logged only, and the optimiser on or off as each check needs."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper

from tests.engines.conftest import make_tiny_onnx
from vitc._device import cpu_cores
from vitc.artifacts import BatchRange
from vitc.engines import runner_for_path
from vitc.export.onnx_export import parity, run_batches
from vitc.export.pipeline import ExportOptions, measure_drift
from vitc.quant.int8 import calibrated_bytes_per_image, fold_weight_quantization

ort = pytest.importorskip("onnxruntime")
ON, OFF = ort.GraphOptimizationLevel.ORT_ENABLE_ALL, ort.GraphOptimizationLevel.ORT_DISABLE_ALL


@pytest.fixture
def sessions(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The sessions ONNX Runtime builds while the test runs, as built."""
    made: list[Any] = []
    original = ort.InferenceSession

    def record(*args: Any, **kwargs: Any) -> Any:
        made.append(original(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(ort, "InferenceSession", record)
    return made


def _settings(session: Any) -> tuple[int, Any, int, list[str]]:
    options = session.get_session_options()
    level = options.graph_optimization_level
    return options.intra_op_num_threads, level, options.log_severity_level, session.get_providers()


def test_the_runner_optimises_on_its_threads(tmp_path: Path, sessions: list[Any]) -> None:
    with runner_for_path(make_tiny_onnx(tmp_path / "tiny.onnx"), device="cpu") as runner:
        runner.infer(runner.make_feed(2))
    assert [_settings(s) for s in sessions] == [(cpu_cores(), ON, 3, ["CPUExecutionProvider"])]
    with runner_for_path(tmp_path / "tiny.onnx", device="cpu", threads=1):
        assert _settings(sessions[-1])[:2] == (1, ON)  # bench's --threads


def test_parity_runs_the_file_as_written_on_this_process_cores(tmp_path: Path, sessions: list[Any]) -> None:
    """Parity checks the file as written (optimiser off), on the cores this process may use, where ONNX Runtime's
    default counts the machine's (the export's sessions left the threads to it)."""
    model = onnx.load(str(make_tiny_onnx(tmp_path / "tiny.onnx")))
    weight = torch.from_numpy(numpy_helper.to_array(model.graph.initializer[1]).copy())
    images = np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32)
    delta = parity(model, lambda x: torch.softmax(x.reshape(len(x), -1) @ weight, -1), images, BatchRange(1, 4, 4))
    assert delta < 1e-6
    assert [_settings(s) for s in sessions] == [(cpu_cores(), OFF, 3, ["CPUExecutionProvider"])]


def test_int8s_probes_run_the_graph_as_written_on_this_process_cores(tmp_path: Path, sessions: list[Any]) -> None:
    """The calibration memory probe runs the graph as ORT's calibrator does (optimiser off); folding runs the
    weights' QuantizeLinear kernels, not the optimiser's constant folding."""
    model = onnx.load(str(make_tiny_onnx(tmp_path / "tiny.onnx")))
    images = np.zeros((2, 3, 8, 8), np.float32)
    assert calibrated_bytes_per_image(model, images) == (192 + 10) * 4  # MatMul's input and output, float32
    quantized = _weight_quantized()
    assert fold_weight_quantization(quantized) == 1
    assert numpy_helper.to_array(quantized.graph.initializer[-1]).tolist() == [[20, -20], [0, 127]]
    assert [_settings(s) for s in sessions] == [(cpu_cores(), OFF, 3, ["CPUExecutionProvider"])] * 2


def test_drift_checks_the_file_as_a_runner_runs_it(tmp_path: Path, sessions: list[Any]) -> None:
    """The export's drift check measures the file optimised, as every runner of it runs it."""
    model = onnx.load(str(make_tiny_onnx(tmp_path / "tiny.onnx")))
    images = np.random.default_rng(0).standard_normal((3, 3, 8, 8)).astype(np.float32)
    (reference,) = run_batches(ort.InferenceSession(model.SerializeToString()), images, BatchRange(1, 2, 2))
    sessions.clear()
    p = SimpleNamespace(images=images, batch=BatchRange(1, 2, 2), reference=reference, labels=reference.argmax(1))
    p.data_name, p.split = "digits", "test"
    said: list[str] = []
    drift, _ = measure_drift(model, p, ExportOptions("fp32"), said.append)  # type: ignore[arg-type]
    assert drift["agreement"] == 100.0 and said[0].startswith("fp32: top-1 100.00% vs 100.00%")
    assert [_settings(s) for s in sessions] == [(cpu_cores(), ON, 3, ["CPUExecutionProvider"])]


def _weight_quantized() -> Any:
    """W (float) → QuantizeLinear → DequantizeLinear → MatMul: one weight for fold_weight_quantization."""
    inits = [
        numpy_helper.from_array(np.array([[1.0, -1.0], [0.0, 10.0]], np.float32), "W"),
        numpy_helper.from_array(np.array(0.05, np.float32), "scale"),
        numpy_helper.from_array(np.array(0, np.int8), "zero"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["W", "scale", "zero"], ["Wq"]),
        helper.make_node("DequantizeLinear", ["Wq", "scale", "zero"], ["Wdq"]),
        helper.make_node("MatMul", ["x", "Wdq"], ["y"]),
    ]
    io = [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [1, 2]) for n in ("x", "y")]
    graph = helper.make_graph(nodes, "w", io[:1], io[1:], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model
