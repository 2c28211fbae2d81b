"""TensorRT 8.5/8.6 pin the layers an fp16/int8 graph keeps in float32 to FP32 (vitc/build/trt_precision.py).

Their builds are weakly typed with FP16 (INT8 + FP16), which lets TensorRT run the float32 LayerNorm,
Softmax and head in FP16 unless each is given FP32 under OBEY_PRECISION_CONSTRAINTS; 10.x builds the
same files strongly typed (the graph's types are obeyed, precision calls are refused), 11.x has no
such calls, and FP32 plans have no reduced precision to guard against.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.engines.fakes.tensorrt_objects import PLAN_BODY
from vitc.build import tensorrt as B
from vitc.build.options import BuildOptions
from vitc.build.trt_precision import pin_fp32_layers

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

# The float32 nodes of `make_kept_fp32_onnx`: the LayerNorm decomposition, Softmax, the head, the Reshape
LAYERNORM = ["ln_mean", "ln_sub", "ln_pow", "ln_var", "ln_add", "ln_sqrt", "ln_div"]
KEPT_FP16 = ["flatten", "to_float", *LAYERNORM, "softmax", "head"]
KEPT_INT8 = ["flatten", *LAYERNORM, "softmax", "head"]


def make_kept_fp32_onnx(path: Path, precision: str) -> Path:
    """input N×1×4×4 → Reshape to N×16 → body (fp16: Cast, MatMul in float16, Cast back; int8: Q/DQ →
    MatMul with Q/DQ weights; fp32: MatMul) → LayerNorm as opset 16 decomposes it → Softmax → head
    MatMul → 'logits' N×4, the float32 parts as `vitc export -p fp16/int8 --trt 8.5` keeps them."""
    rng = np.random.default_rng(0)
    body, head = rng.standard_normal((16, 8)).astype(np.float32), rng.standard_normal((8, 4)).astype(np.float32)
    inits = [
        numpy_helper.from_array(head, "head_w"),
        numpy_helper.from_array(np.array(2.0, np.float32), "two"),
        numpy_helper.from_array(np.array(1e-5, np.float32), "eps"),
        numpy_helper.from_array(np.array([-1, 16], np.int64), "shape"),
    ]
    nodes = [helper.make_node("Reshape", ["input", "shape"], ["flat"], "flatten")]
    if precision == "fp16":
        inits.append(numpy_helper.from_array(body.astype(np.float16), "body_w"))
        nodes += [
            helper.make_node("Cast", ["flat"], ["x16"], "to_half", to=TensorProto.FLOAT16),
            helper.make_node("MatMul", ["x16", "body_w"], ["h16"], "body"),
            helper.make_node("Cast", ["h16"], ["h"], "to_float", to=TensorProto.FLOAT),
        ]
    elif precision == "int8":
        inits += [
            numpy_helper.from_array(body, "body_w"),
            numpy_helper.from_array(np.array(0.05, np.float32), "scale"),
            numpy_helper.from_array(np.array(0, np.int8), "zero"),
        ]
        nodes += [
            helper.make_node("QuantizeLinear", ["flat", "scale", "zero"], ["xq"], "q_x"),
            helper.make_node("DequantizeLinear", ["xq", "scale", "zero"], ["xdq"], "dq_x"),
            helper.make_node("QuantizeLinear", ["body_w", "scale", "zero"], ["wq"], "q_w"),
            helper.make_node("DequantizeLinear", ["wq", "scale", "zero"], ["wdq"], "dq_w"),
            helper.make_node("MatMul", ["xdq", "wdq"], ["h"], "body"),
        ]
    else:
        inits.append(numpy_helper.from_array(body, "body_w"))
        nodes.append(helper.make_node("MatMul", ["flat", "body_w"], ["h"], "body"))
    nodes += [
        helper.make_node("ReduceMean", ["h"], ["mean"], "ln_mean", axes=[-1]),
        helper.make_node("Sub", ["h", "mean"], ["centred"], "ln_sub"),
        helper.make_node("Pow", ["centred", "two"], ["squared"], "ln_pow"),
        helper.make_node("ReduceMean", ["squared"], ["var"], "ln_var", axes=[-1]),
        helper.make_node("Add", ["var", "eps"], ["var_eps"], "ln_add"),
        helper.make_node("Sqrt", ["var_eps"], ["std"], "ln_sqrt"),
        helper.make_node("Div", ["centred", "std"], ["normed"], "ln_div"),
        helper.make_node("Softmax", ["normed"], ["probs"], "softmax", axis=-1),
        helper.make_node("MatMul", ["probs", "head_w"], ["logits"], "head"),
    ]
    graph = helper.make_graph(
        nodes,
        "kept_fp32",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 4, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 4])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 16)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def build(tmp_path: Path, precision: str, onnx_path: Path | None = None) -> tuple[dict, B.BuildResult]:
    """Build with the installed fake; the plan's payload (its "constraints": what each layer was held to)."""
    onnx_path = onnx_path or make_kept_fp32_onnx(tmp_path / f"m.{precision}.onnx", precision)
    output = tmp_path / f"m.{precision}.plan"
    result = B.build_engine(BuildOptions(onnx=onnx_path, output=output, precision=precision, check=False))
    blob = output.read_bytes()
    return json.loads(blob[blob.find(PLAN_BODY) + len(PLAN_BODY) :]), result


@pytest.mark.parametrize("version", ["8.5", "8.6"])
@pytest.mark.parametrize(("precision", "kept"), [("fp16", KEPT_FP16), ("int8", KEPT_INT8)])
def test_weakly_typed_builds_pin_exactly_the_float32_layers(version, precision, kept, fake, tmp_path):
    trt = fake(version)
    payload, result = build(tmp_path, precision)
    fp32 = {"precision": "FLOAT", "outputs": {"0": "FLOAT"}}
    assert payload["constraints"] == dict.fromkeys(kept, fp32)  # not the FP16 body, Q/DQ, constants or quantized MatMul
    assert "OBEY_PRECISION_CONSTRAINTS" in payload["flags"] and trt._log == []  # no call TensorRT refuses
    assert result.sidecar.fp32_layers == len(kept) and "OBEY_PRECISION_CONSTRAINTS" in result.sidecar.builder_flags
    record = json.loads((tmp_path / f"m.{precision}.plan.json").read_text())
    assert record["fp32_layers"] == len(kept)  # what `vitc info` shows of the plan


@pytest.mark.parametrize("version", ["8.5", "10.3", "10.16", "11.1"])
def test_fp32_and_strongly_typed_builds_pin_nothing(version, fake, tmp_path):
    fake(version)
    for precision in ("fp32", "fp16", "int8") if version != "8.5" else ("fp32",):
        payload, result = build(tmp_path, precision)
        assert payload["constraints"] == {} and "OBEY_PRECISION_CONSTRAINTS" not in payload["flags"], precision
        assert result.sidecar.fp32_layers is None and "fp32_layers" not in result.sidecar.to_record(), precision


def test_the_fake_refuses_what_tensorrt_refuses(fake, tmp_path):
    """Out-of-range output index, a Quantize's FLOAT output, a Cast's other type and a strongly typed
    network are logged as errors and change nothing; a value that is not a DataType is a TypeError."""
    from vitc.engines.tensorrt import PrecisionPlan

    trt = fake("8.6")
    builder = trt.Builder(trt.Logger(trt.Logger.WARNING))
    plan = PrecisionPlan(("EXPLICIT_BATCH",), ("INT8", "FP16"), False)
    network, _parser, _profile = B._parse(
        builder,
        trt.Logger(),
        BuildOptions(make_kept_fp32_onnx(tmp_path / "m.onnx", "int8"), tmp_path / "m.plan"),
        plan,
        "8.6",
    )
    layers = {network.get_layer(i).name: network.get_layer(i) for i in range(network.num_layers)}
    layers["softmax"].set_output_type(1, trt.DataType.FLOAT)
    layers["q_x"].set_output_type(0, trt.DataType.FLOAT)
    layers["q_x"].precision = trt.DataType.HALF
    with pytest.raises(TypeError):
        layers["softmax"].precision = "float32"
    assert len(trt._log) == 3 and not any(
        layer.output_type_is_set(0) or layer.precision_is_set for layer in layers.values()
    )

    trt = fake("10.3")
    strong = PrecisionPlan(("STRONGLY_TYPED",), (), True)
    onnx_path = make_kept_fp32_onnx(tmp_path / "s.onnx", "fp16")
    network, _parser, _profile = B._parse(
        trt.Builder(trt.Logger()), trt.Logger(), BuildOptions(onnx_path, tmp_path / "s.plan"), strong, "10.3"
    )
    pinned = pin_fp32_layers(network)
    assert pinned == KEPT_FP16 and len(trt._log) == 2 * len(pinned)  # refused: precision and output type of each
    assert not any(network.get_layer(i).precision_is_set for i in range(network.num_layers))
