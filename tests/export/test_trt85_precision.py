"""`vitc export -p fp16/int8 --trt 8.5` then `vitc build` on (fake) TensorRT 8.5/8.6: the float32 the export
kept is pinned to FP32 in the weakly typed build (vitc/build/trt_precision.py), node for node."""

from __future__ import annotations

import json
import warnings

import onnx
import pytest

from tests.engines.fakes.cuda_fakes import install_cuda
from tests.engines.fakes.tensorrt_fake import install_tensorrt
from tests.engines.fakes.tensorrt_objects import PLAN_BODY
from vitc.build import tensorrt as B
from vitc.build.options import BuildOptions

FLOAT, FLOAT16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
NOT_PINNED = ("Constant", "Shape", "QuantizeLinear", "DequantizeLinear")  # see UNPINNED_LAYERS


@pytest.fixture(scope="module")
def trt85_exports(trained_ckpt, tmp_path_factory) -> dict:
    pytest.importorskip("onnxruntime")
    from vitc.export import ExportOptions, export_checkpoint

    out = tmp_path_factory.mktemp("export85")
    options = {
        "fp16": ExportOptions("fp16", out=out, run="r", trt="8.5"),
        "int8": ExportOptions("int8", out=out, run="r", trt="8.5", batch=8, calib_images=32),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {name: export_checkpoint(trained_ckpt, opts, say=lambda _m: None) for name, opts in options.items()}


def float32_kept(path) -> tuple[set[str], onnx.ModelProto]:
    """The nodes whose outputs the export types float32 (and that TensorRT lets a precision be set on),
    less those a DequantizeLinear feeds (the quantized ops, whose precision the Q/DQ pair sets)."""
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    types = {v.name: v.type.tensor_type.elem_type for v in [*model.graph.value_info, *model.graph.output]}
    dequantized = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    return {
        n.name
        for n in model.graph.node
        if n.op_type not in NOT_PINNED
        and all(types.get(o) == FLOAT for o in n.output)
        and not dequantized & set(n.input)
    }, model


@pytest.mark.parametrize("version", ["8.5", "8.6"])
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_weak_builds_pin_what_the_export_kept_float32(version, precision, trt85_exports, monkeypatch, tmp_path):
    gpu = install_cuda(monkeypatch, cuda_python="12.9", driver=12060, cc=(8, 7), name="Fake Orin")
    trt = install_tensorrt(monkeypatch, version, gpu)
    export = trt85_exports[precision]
    output = tmp_path / f"m.{precision}.plan"
    opts = BuildOptions(
        onnx=export.onnx_path, output=output, precision=precision, manifest=export.manifest, check=False
    )
    result = B.build_engine(opts)
    blob = output.read_bytes()
    pinned = json.loads(blob[blob.find(PLAN_BODY) + len(PLAN_BODY) :])["constraints"]

    expected, model = float32_kept(export.onnx_path)
    ops = {n.name: n.op_type for n in model.graph.node}
    assert set(pinned) == expected and trt._log == []
    assert all(c == {"precision": "FLOAT", "outputs": {"0": "FLOAT"}} for c in pinned.values())
    kept_ops = {ops[name] for name in pinned}
    assert {"ReduceMean", "Pow", "Sqrt", "Softmax"} <= kept_ops  # the LayerNorm decomposition and attention
    linear = [n.name for n in model.graph.node if n.op_type in ("MatMul", "Gemm", "Conv")]
    assert linear[-1] in pinned  # the classifier head
    # the rest of the body is left to TensorRT: FP16 nodes (fp16), or the quantized ops the Q/DQ pairs set (int8)
    assert set(linear) - set(pinned)
    assert result.sidecar.fp32_layers == len(pinned) and "OBEY_PRECISION_CONSTRAINTS" in result.sidecar.builder_flags


def test_int8_on_fp16_pins_its_float32_path_and_leaves_fp16_to_the_builder(trt85_exports, monkeypatch, tmp_path):
    """`-p int8` (FP16 base, the default): the Casts to FP32 in front of each QuantizeLinear and the FP32 islands
    are pinned; the FP16 part (attention BMMs, GELU, residual adds) and the quantized ops are not. TensorRT 10
    builds the same file strongly typed, nothing pinned."""
    export = trt85_exports["int8"]
    assert export.manifest.precision_report["high_precision_dtype"] == "fp16"
    model = onnx.shape_inference.infer_shapes(onnx.load(str(export.onnx_path)))
    types = {v.name: v.type.tensor_type.elem_type for v in [*model.graph.value_info, *model.graph.output]}
    producers = {o: n for n in model.graph.node for o in n.output}
    half = {n.name for n in model.graph.node if n.output and types.get(n.output[0]) == FLOAT16}
    bmm = [n.name for n in model.graph.node if n.op_type == "MatMul" and "/attn/MatMul" in n.name]
    erf = [n.name for n in model.graph.node if n.op_type == "Erf"]
    assert bmm and erf and set(bmm + erf) <= half
    to_fp32 = {
        producers[n.input[0]].name
        for n in model.graph.node
        if n.op_type == "QuantizeLinear" and n.input[0] in producers and producers[n.input[0]].op_type == "Cast"
    }
    assert to_fp32  # the fp16 activations cast to float32 for their QuantizeLinear
    for version in ("8.5", "10.3"):
        gpu = install_cuda(monkeypatch, cuda_python="12.9", driver=12060, cc=(8, 7), name="Fake Orin")
        trt = install_tensorrt(monkeypatch, version, gpu)
        output = tmp_path / f"m{version}.int8.plan"
        B.build_engine(
            BuildOptions(onnx=export.onnx_path, output=output, precision="int8", manifest=export.manifest, check=False)
        )
        blob = output.read_bytes()
        payload = json.loads(blob[blob.find(PLAN_BODY) + len(PLAN_BODY) :])
        assert trt._log == [], version
        if version == "8.5":
            assert to_fp32 <= set(payload["constraints"]) and not half & set(payload["constraints"])
            assert {"FP16", "INT8", "OBEY_PRECISION_CONSTRAINTS"} <= set(payload["flags"])
        else:
            assert payload["constraints"] == {} and payload["strongly_typed"]
            assert not {"FP16", "INT8"} & set(payload["flags"])
