"""FP16 pass: structure (FP32 islands with Casts, FP16 matmuls, no mixed types) and numbers."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto

from tests.quant.conftest import onnx_logits
from vitc.quant.fp16 import mixed_type_nodes


def _types(proto: onnx.ModelProto) -> dict[str, int]:
    proto = onnx.shape_inference.infer_shapes(proto)
    types = {
        vi.name: vi.type.tensor_type.elem_type
        for vi in [*proto.graph.input, *proto.graph.value_info, *proto.graph.output]
    }
    types.update({t.name: t.data_type for t in proto.graph.initializer})
    return types


def test_fp16_structure(exports: dict) -> None:
    proto = onnx.load(str(exports["fp16"].onnx_path))
    types = _types(proto)
    nodes = proto.graph.node
    assert mixed_type_nodes(proto) == []
    assert proto.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert proto.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    for node in nodes:
        if node.op_type in ("LayerNormalization", "Softmax"):
            assert types[node.input[0]] == TensorProto.FLOAT and types[node.output[0]] == TensorProto.FLOAT, node.name
        if node.op_type in ("MatMul", "Conv") or (node.op_type == "Gemm" and not node.name.startswith("/head/")):
            assert all(types[i] == TensorProto.FLOAT16 for i in node.input if i), node.name
    head = next(n for n in nodes if n.name == "/head/Gemm")
    assert all(types[i] == TensorProto.FLOAT for i in head.input if i)
    casts = [n for n in nodes if n.op_type == "Cast"]
    assert len(casts) >= 2 * sum(n.op_type == "Softmax" for n in nodes)
    fp16_weights = [t for t in proto.graph.initializer if t.data_type == TensorProto.FLOAT16]
    assert len(fp16_weights) >= sum(n.op_type == "MatMul" for n in nodes) - 4  # all but the attention BMMs
    assert exports["fp16"].manifest.io_dtype == "float32"


def test_fp16_logits_follow_the_fp32_model(exports: dict, digits_reference: dict) -> None:
    """The FP16 file on ONNX Runtime against the FP32 PyTorch model, measured here on digits' 360 test images.

    Bounds as `vitc export` states them for FP16 (cosine > 0.9999, max |Δ logit| < 0.05, top-1 agreement
    ≥ 99%, at most 0.1 points of top-1 lost): float16 keeps 11 significant bits in the matmuls, and the
    float islands (LayerNorm, Softmax, head) keep the rest in float32.
    """
    ref, labels = digits_reference["logits"], digits_reference["labels"]
    got = onnx_logits(exports["fp16"].onnx_path, digits_reference["images"])
    assert got.shape == ref.shape and not np.array_equal(got, ref)  # float16 rounding is there, and small
    cosine = np.sum(ref * got, 1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))
    assert cosine.min() > 0.9999 and np.abs(got - ref).max() < 0.05
    assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.99
    assert (got.argmax(1) == labels).mean() >= (ref.argmax(1) == labels).mean() - 0.001


def test_fp16_io(trained_ckpt, tmp_path) -> None:
    from vitc.export import ExportOptions, export_checkpoint
    from vitc.export.onnx_export import session

    result = export_checkpoint(trained_ckpt, ExportOptions("fp16", out=tmp_path, io_fp16=True), say=lambda _m: None)
    proto = onnx.load(str(result.onnx_path))
    assert proto.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    assert proto.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    assert mixed_type_nodes(proto) == []
    (out,) = session(str(result.onnx_path)).run(None, {"input": np.zeros((1, 3, 32, 32), np.float16)})
    assert out.dtype == np.float16 and result.manifest.io_dtype == "float16"


def test_fp16_trt85_keeps_decomposed_layernorm_fp32(trained_ckpt, tmp_path) -> None:
    from vitc.export import ExportOptions, export_checkpoint

    result = export_checkpoint(trained_ckpt, ExportOptions("fp16", out=tmp_path, trt="8.5"), say=lambda _m: None)
    proto = onnx.load(str(result.onnx_path))
    types = _types(proto)
    ln_nodes = [n for n in proto.graph.node if "/norm" in n.name and n.op_type in ("ReduceMean", "Pow", "Sqrt", "Div")]
    assert ln_nodes and all(types[n.output[0]] == TensorProto.FLOAT for n in ln_nodes)
    assert mixed_type_nodes(proto) == []
