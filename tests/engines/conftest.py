"""Fixtures for the engine tests: a tiny ONNX model and export folder, and the TensorRT skip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest


def make_tiny_onnx(path: Path, batch: int | str = "batch") -> Path:
    """input 'input' N×3×8×8 → Reshape → MatMul(192×10) → Softmax → 'logits' N×10."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((192, 10)).astype(np.float32), "W")
    shape = numpy_helper.from_array(np.array([-1, 192], dtype=np.int64), "shape")
    nodes = [
        helper.make_node("Reshape", ["input", "shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "W"], ["mm"]),
        helper.make_node("Softmax", ["mm"], ["logits"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 10])],
        [weight, shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def manifest_record(**overrides: object) -> dict[str, object]:
    record: dict[str, object] = {
        "format": "vitc.export",
        "version": 1,
        "model": "tiny",
        "args": {},
        "input_size": [3, 8, 8],
        "mean": [0.5] * 3,
        "std": [0.5] * 3,
        "class_names": [str(i) for i in range(10)],
        "precision": "fp32",
        "io_dtype": "float32",
        "opset": 17,
        "trt_target": "10",
        "batch": {"min": 1, "opt": 4, "max": 8},
        "input_name": "input",
        "output_name": "logits",
        "source_checkpoint": {"path": "x", "sha256": "0"},
        "onnx_sha256": None,
        "drift": {"samples": 4, "top1": 50.0},
        "heldout": "heldout.npz",
    }
    record.update(overrides)
    return record


@pytest.fixture
def tiny_onnx(tmp_path: Path) -> Path:
    return make_tiny_onnx(tmp_path / "tiny.onnx")


@pytest.fixture
def export_dir(tmp_path: Path) -> Path:
    """A fake export folder: model.fp32.onnx, manifest.fp32.json, heldout.npz with ORT reference logits."""
    folder = tmp_path / "export" / "tiny"
    folder.mkdir(parents=True)
    onnx_path = make_tiny_onnx(folder / "model.fp32.onnx")
    (folder / "manifest.fp32.json").write_text(json.dumps(manifest_record()))
    ort = pytest.importorskip("onnxruntime")
    images = np.random.default_rng(1).standard_normal((12, 3, 8, 8)).astype(np.float32)
    logits = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(None, {"input": images})[0]
    labels = logits.argmax(1).astype(np.int64)
    labels[:3] = (labels[:3] + 1) % 10
    np.savez(folder / "heldout.npz", images=images, labels=labels, reference_logits=logits)
    return folder


def _tensorrt_gpu_reason() -> str | None:
    from vitc.engines.tensorrt import tensorrt_available

    if not tensorrt_available():
        return "TensorRT is not installed (tensorrt-stubs alone does not count)"
    try:
        from vitc.engines.cuda import Cuda

        Cuda().device_properties()
    except Exception as exc:  # no driver, no GPU, no cuda-python
        return f"no usable NVIDIA GPU ({exc})"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    marked = [item for item in items if item.get_closest_marker("tensorrt")]
    if not marked:
        return
    reason = _tensorrt_gpu_reason()
    if reason:
        for item in marked:
            item.add_marker(pytest.mark.skip(reason=f"needs TensorRT and a GPU: {reason}"))
