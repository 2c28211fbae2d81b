"""FP16 pass: structure (FP32 islands with Casts, FP16 matmuls, no mixed types) and numbers."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto

from tests.export.test_export import MICRO
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
    from vitc._ort import ort_session as session
    from vitc.export import ExportOptions, export_checkpoint

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


def _classifier_and_after(proto: onnx.ModelProto, scopes: tuple[str, ...]) -> list[onnx.NodeProto]:
    """The nodes of the classifier's scopes and every node downstream of them, in graph order."""
    reached: set[str] = set()
    nodes = []
    for node in proto.graph.node:
        if node.name.startswith(scopes) or reached.intersection(node.input):
            reached.update(node.output)
            nodes.append(node)
    return nodes


@pytest.mark.parametrize("name", list(MICRO))
def test_fp16_io_and_float_classifier_every_family(name: str, tmp_path) -> None:
    """`--io fp16` exports every family (SP-ViT's crashed: its last node already gave FP16 and the output
    stayed declared float32), and the whole classifier computes in float32 down to the one Cast to the
    FP16 output: SP-ViT's aux_head, its max and the final sum too, not the head alone."""
    import torch

    from vitc._ort import ort_session as session
    from vitc.checkpoint import write_checkpoint
    from vitc.export import ExportOptions, export_checkpoint
    from vitc.models import create_model

    torch.manual_seed(0)
    model = create_model(name, num_classes=3, **MICRO[name])
    scopes = ("/head/", "/aux_head/") if name == "spvit_micro" else ("/head/",)
    ckpt = write_checkpoint(tmp_path / name / "model.safetensors", model)
    options = ExportOptions("fp16", out=tmp_path / "export", io_fp16=True, data="generated")
    result = export_checkpoint(ckpt, options, say=lambda _m: None)
    proto = onnx.load(str(result.onnx_path))
    assert proto.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    assert proto.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    assert mixed_type_nodes(proto) == []
    (out,) = session(str(result.onnx_path)).run(None, {"input": np.zeros((1, 3, 32, 32), np.float16)})
    assert out.dtype == np.float16 and out.shape == (1, 3)

    types = _types(proto)
    tail = _classifier_and_after(proto, scopes)
    assert {s for s in scopes if any(n.name.startswith(s) for n in tail)} == set(scopes)
    *classifier, last = tail
    assert last.op_type == "Cast" and list(last.output) == ["logits"]
    for node in classifier:
        floats = [
            t for t in [*node.input, *node.output] if t and types.get(t) in (TensorProto.FLOAT, TensorProto.FLOAT16)
        ]
        assert all(types[t] == TensorProto.FLOAT for t in floats), node.name
    assert types[last.input[0]] == TensorProto.FLOAT


def test_fp16_io_output_produced_in_fp16_is_declared_fp16() -> None:
    """An output whose last node already computes in FP16 needs no Cast under --io fp16, but its declared
    type must become FP16 (it stayed float32, and strict shape inference refused the graph)."""
    from onnx import helper, numpy_helper

    from vitc.quant.fp16 import convert_fp16

    weight = numpy_helper.from_array(np.eye(4, dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "w"], ["logits"], name="/fc/MatMul")],
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 4])],
        [weight],
    )
    proto, report = convert_fp16(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), io_fp16=True)
    assert proto.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    assert report.casts == 0 and report.fp16_nodes == 1
    onnx.checker.check_model(proto, full_check=True)
