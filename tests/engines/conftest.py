"""Fixtures for the engine tests: a tiny ONNX model and export folder, and the TensorRT skip."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest


def make_tiny_onnx(
    path: Path, batch: int | str = "batch", precision: str = "fp32", io_type: int = 1, size: int = 8, classes: int = 10
) -> Path:
    """input 'input' N×3×8×8 → Reshape → MatMul(192×10) → Softmax → 'logits' N×10 (or size×size images
    and `classes` outputs).

    precision "fp16" computes the MatMul in float16 between Casts (the AutoCast form), "int8" puts a
    QuantizeLinear/DequantizeLinear pair on the activations (the Q/DQ form); io_type is the ONNX
    element type of the input and output (1 float32, 10 float16, 16 bfloat16).
    """
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    weight = np.random.default_rng(0).standard_normal((3 * size * size, classes)).astype(np.float32)
    inits = [numpy_helper.from_array(np.array([-1, 3 * size * size], dtype=np.int64), "shape")]
    nodes = [helper.make_node("Reshape", ["input", "shape"], ["flat"])]
    if precision == "fp16":
        inits.append(numpy_helper.from_array(weight.astype(np.float16), "W"))
        nodes += [
            helper.make_node("Cast", ["flat"], ["flat16"], to=TensorProto.FLOAT16),
            helper.make_node("MatMul", ["flat16", "W"], ["mm16"]),
            helper.make_node("Cast", ["mm16"], ["mm"], to=io_type),
        ]
    elif precision == "int8":
        inits += [
            numpy_helper.from_array(weight, "W"),
            numpy_helper.from_array(np.array(0.05, dtype=np.float32), "scale"),
            numpy_helper.from_array(np.array(0, dtype=np.int8), "zero"),
        ]
        nodes += [
            helper.make_node("QuantizeLinear", ["flat", "scale", "zero"], ["q"]),
            helper.make_node("DequantizeLinear", ["q", "scale", "zero"], ["dq"]),
            helper.make_node("MatMul", ["dq", "W"], ["mm"]),
        ]
    else:
        inits.append(numpy_helper.from_array(weight.astype(helper.tensor_dtype_to_np_dtype(io_type)), "W"))
        nodes.append(helper.make_node("MatMul", ["flat", "W"], ["mm"]))
    nodes.append(helper.make_node("Softmax", ["mm"], ["logits"], axis=-1))
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("input", io_type, [batch, 3, size, size])],
        [helper.make_tensor_value_info("logits", io_type, [batch, classes])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def manifest_record(crop_mode: str = "center", **overrides: object) -> Dict[str, object]:
    """The tiny model's export manifest as `vitc export` writes it (`ExportManifest.to_record`), its images
    prepared by `crop_mode`; `overrides` replace keys of that JSON record, invalid values included, to test
    the reader."""
    from vitc.artifacts import BatchRange, ExportManifest
    from vitc.artifacts.preprocess import Preprocess

    manifest = ExportManifest(
        path=Path("manifest.fp32.json"),
        model="tiny",
        input_size=(3, 8, 8),
        precision="fp32",
        io_dtype="float32",
        batch=BatchRange(1, 4, 8),
        opset=17,
        trt_target="10",
        mean=(0.5,) * 3,
        std=(0.5,) * 3,
        class_names=[str(i) for i in range(10)],
        preprocess=Preprocess((3, 8, 8), 1.0, mean=(0.5,) * 3, std=(0.5,) * 3, crop_mode=crop_mode).to_record(),
        source_checkpoint={"path": "x", "sha256": "0"},
        drift={"samples": 4, "top1": 50.0},
        heldout="heldout.npz",
    )
    record = manifest.to_record()
    record.update(overrides)
    return record


def tiny_logits_by_hand(onnx: Path, files: List[Path], crop_mode: str = "center") -> np.ndarray:
    """The tiny export's record spelled out (crop_pct 1: shorter side to 8, bicubic, as timm's Resize; centre
    8×8; mean = std = 0.5; crop_mode "squash": the whole image to 8×8) with Pillow and ONNX Runtime directly:
    the logits a reader of the manifest should get."""
    image = pytest.importorskip("PIL.Image")
    ort = pytest.importorskip("onnxruntime")
    batch = []
    for file in files:
        with image.open(file) as im:
            im = im.convert("RGB")
            width, height = im.size  # torchvision's Resize(8): the longer side floored
            long = int(8 * max(width, height) / min(width, height))
            w, h = (8, long) if width <= height else (long, 8)
            if crop_mode == "squash":
                w, h = 8, 8
            im = im.resize((w, h), image.Resampling.BICUBIC)
            left, top = round((w - 8) / 2), round((h - 8) / 2)
            batch.append(np.asarray(im.crop((left, top, left + 8, top + 8)), dtype=np.float32).transpose(2, 0, 1))
    x = (np.stack(batch) / np.float32(255) - np.float32(0.5)) / np.float32(0.5)
    return ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


@pytest.fixture
def tiny_onnx(tmp_path: Path) -> Path:
    return make_tiny_onnx(tmp_path / "tiny.onnx")


@pytest.fixture
def export_dir(tmp_path: Path) -> Path:
    """A fake export folder: model.fp32.onnx, manifest.fp32.json, heldout.npz with ORT reference logits."""
    return make_export(tmp_path / "export" / "tiny")


@pytest.fixture
def squash_export_dir(tmp_path: Path) -> Path:
    """`export_dir` of a model whose images are squashed (crop_mode "squash", as CvT at 384 is evaluated)."""
    return make_export(tmp_path / "export" / "tiny_squash", crop_mode="squash")


def make_export(folder: Path, crop_mode: str = "center") -> Path:
    """The export folder of the fixtures, its manifest preparing images by `crop_mode`."""
    folder.mkdir(parents=True)
    onnx_path = make_tiny_onnx(folder / "model.fp32.onnx")
    (folder / "manifest.fp32.json").write_text(json.dumps(manifest_record(crop_mode)))
    ort = pytest.importorskip("onnxruntime")
    images = np.random.default_rng(1).standard_normal((12, 3, 8, 8)).astype(np.float32)
    logits = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(None, {"input": images})[0]
    labels = logits.argmax(1).astype(np.int64)
    labels[:3] = (labels[:3] + 1) % 10
    np.savez(folder / "heldout.npz", images=images, labels=labels, reference_logits=logits)
    return folder


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch):
    """fake("10.3", dla_cores=2, cc=(8, 7)) → the strict fake tensorrt module of that release, on a fresh fake GPU."""
    from tests.engines.fakes.cuda_fakes import install_cuda
    from tests.engines.fakes.tensorrt_fake import install_tensorrt

    def install(version: str, dla_cores: int = 0, cc: tuple = (8, 7), name: str = "Fake Orin") -> object:
        gpu = install_cuda(monkeypatch, cuda_python="12.9", driver=12060, cc=cc, name=name)
        return install_tensorrt(monkeypatch, version, gpu, dla_cores)

    return install


def _tensorrt_gpu_reason() -> str | None:
    from vitc.engines.tensorrt import tensorrt_available

    if not tensorrt_available():
        return "TensorRT is not installed (tensorrt-stubs alone does not count)"
    try:
        from vitc.engines.cuda import Cuda

        cuda = Cuda()
        cuda.device_properties()
        cuda.close()
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
