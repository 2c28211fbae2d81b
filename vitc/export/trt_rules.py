"""What each TensorRT version's ONNX parser accepts, and `check_onnx`, the lint behind `vitc check`.

The operator tables and opset ceilings are onnx/onnx-tensorrt `docs/operators.md` at the commit each
TensorRT release pins as its parser (trt_onnx_ops.json, made by tests/export/trt_ops_extract.py):
8.5, 8.6, 10.0, 10.14 and 11.1. A version is checked against the newest table at or below it, so
10.1–10.13 get the 10.0 table (stricter than their parsers: ops added in between are reported) and
11.0 the 11.1 one; the `10` target is "any 10.x" (the 10.0 table, JetPack 6 included), `11` 11.x.
Other facts (onnx-tensorrt's QuantizeLinear/DequantizeLinear importer, onnxOpImporters.cpp; TensorRT's
"explicit quantization" guide; the issues named below):
- 8.5 parses opsets up to 17 but not `LayerNormalization` (added in 8.6, NVIDIA/TensorRT#2875, #3346);
  JetPack 5 therefore needs an opset-16 export with LayerNorm decomposed.
- `Gelu` is an opset-20 op (parser 10.0+); the opset-23 `Attention` op arrived in parser 10.14,
  whose opset ceiling is 24.
- Q/DQ: symmetric INT8 (zero point 0), per-tensor activations, per-channel weights whose scale count
  equals the channel dimension on `axis`. The int32 bias DQ that ORT emits by default is rejected.
  INT8 weights (an int8 initializer into DequantizeLinear) need TensorRT 10: up to 9.3 TensorRT's
  own docs say "TensorRT does not support INT8 weights for explicit quantization"
  (tools/experimental/trt-engine-explorer/examples/pytorch/resnet/README.md, removed in 10.0).
- Dynamic dimensions need an optimisation profile: only a named batch dimension (axis 0 of the
  input) is allowed here, and `vitc export` records its range.
"""

from __future__ import annotations

import fnmatch
import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vitc._lazy import lazy_import
from vitc.artifacts.manifest import TRT_TARGETS, trt_version_key
from vitc.errors import VitcError

TARGET_TABLE = {"8.5": "8.5", "8.6": "8.6", "10": "10.0", "11": "11.1"}
INT8_WEIGHTS_FROM = (10, 0)  # int8 initializers into DequantizeLinear

# The opset `vitc export` uses by default for each target.
DEFAULT_OPSET = {"8.5": 16, "8.6": 17, "10": 17, "11": 17}
# The opsets `vitc export` writes: torch exports scaled_dot_product_attention (every family's attention)
# from opset 14; 22 is the newest the legacy exporter writes.
OPSET_RANGE = (14, 22)
# INT8 stops at opset 20. vitc's opset-21 Q/DQ graphs are valid (QuantizeLinear-21 without output_dtype
# takes its int8 type from the zero point), but ONNX Runtime's level-2 optimiser breaks them on load:
# MatMulAddFusion puts a Reshape before the Gemm, QDQPropagationTransformer wraps it in a new Q/DQ pair
# whose Q it pins to output_dtype=INT8 (onnxruntime#27845, #28144), and QDQS8ToU8Transformer then turns
# the zero point into uint8 alone ("output_dtype INT8 does not match y_zero_point type UINT8", 1.32). Such
# a file would fail every default ONNX Runtime session (vitc bench, eval, predict), and opset 21 adds
# nothing vitc's per-tensor/per-channel INT8 uses (int4/int16, blocked scales, output_dtype), while opset
# 20 is what every TensorRT parser from 10.0 reads (10.0-10.13 read no higher).
INT8_OPSET_MAX = 20

_NOTES = {
    "LayerNormalization": "TensorRT < 8.6 cannot parse LayerNormalization (opset 17): export with --trt 8.5 (opset 16)",
    "Gelu": "the Gelu op is opset 20; TensorRT 8.x reads opset ≤ 17",
    "Attention": "the Attention op (opset 23) is parsed from TensorRT 10.14",
}


@functools.lru_cache(maxsize=None)
def tables() -> dict[str, dict[str, Any]]:
    """{table version: {"opset_max", "supported", ...}} from the packaged trt_onnx_ops.json."""
    data = json.loads((Path(__file__).parent / "trt_onnx_ops.json").read_text())
    return {k: v for k, v in data.items() if k != "source"}


def resolve(trt: str) -> str:
    """The table a version is checked against: an export target, or any X.Y from 8.5 on."""
    if trt in TARGET_TABLE:
        return TARGET_TABLE[trt]
    try:
        wanted = trt_version_key(trt)
    except ValueError:
        wanted = (0, 0)
    known = sorted((trt_version_key(v), v) for v in tables())
    if wanted != (0, 0) and wanted < known[0][0]:  # 8.4 took 8.5's table, and was checked as if vitc built for it
        raise VitcError(
            f"TensorRT {trt} is older than {known[0][1]}, the oldest vitc builds for (choose one of: "
            f"{', '.join(TRT_TARGETS)}, or X.Y from 8.5)"
        )
    same_major = [(k, v) for k, v in known if k[0] == wanted[0]]
    # 11.0 has no table of its own: 11.1's (its parser changelog adds no standard op over 11.0's Swish)
    below = [v for k, v in same_major if k <= wanted] or [v for _, v in same_major[:1]]
    if not below:
        raise VitcError(f"unknown TensorRT version {trt!r} (choose one of: {', '.join(TRT_TARGETS)}, or X.Y from 8.5)")
    return below[-1]


def max_opset(trt: str) -> int:
    """The highest ONNX opset the parser of `trt` reads."""
    return int(tables()[resolve(trt)]["opset_max"])


def supported_ops(trt: str) -> frozenset[str]:
    """The ONNX op types (default domain) the parser of TensorRT `trt` imports."""
    return frozenset(tables()[resolve(trt)]["supported"])


# Which JetPack each export target is for (docs/jetson.md), named beside an export made for none of them.
JETPACK_TARGETS = {"8.5": "JetPack 5", "8.6": "JetPack 6.0", "10": "JetPack 6.1/6.2"}
# torch writes nn.LayerNorm, which every vitc model has, as one LayerNormalization op from opset 17.
LAYERNORM_OPSET = 17


def oldest_target(opset: int, int8_weights_in_file: bool) -> str | None:
    """The oldest export target whose parser reads a vitc export made without --trt, from its manifest's facts
    (opset; int8 weight initializers, `precision_report.weights`), or None when none does."""
    for target in TRT_TARGETS:
        if opset > max_opset(target) or (int8_weights_in_file and not int8_weights(target)):
            continue
        if opset >= LAYERNORM_OPSET and "LayerNormalization" not in supported_ops(target):
            continue
        return target
    return None


def untargeted(opset: int | None, int8_weights_in_file: bool) -> str:
    """What an export without a TensorRT target runs on, in words: '8.6+ (not targeted; JetPack 5: --trt 8.5)'
    (`vitc info` said "any" for an opset-17 file that TensorRT 8.5 cannot parse)."""
    oldest = None if opset is None else oldest_target(int(opset), int8_weights_in_file)
    if oldest is None:
        return "not targeted"
    older = [
        f"{JETPACK_TARGETS[t]}: --trt {t}"
        for t in TRT_TARGETS
        if t in JETPACK_TARGETS and trt_version_key(t) < trt_version_key(oldest)
    ]
    return f"{oldest}+ (not targeted" + "".join(f"; {o}" for o in older) + ")"


def check_version(trt: str) -> str:
    """An export target (8.5, 8.6, 10, 11): what manifests record and `vitc export --trt` takes."""
    if trt not in TRT_TARGETS:
        raise VitcError(f"unknown TensorRT version {trt!r} (choose one of: {', '.join(TRT_TARGETS)})")
    return trt


def int8_weights(trt: str | None) -> bool:
    """Whether TensorRT `trt` (None: no target, 10+) takes int8 weight initializers into DequantizeLinear."""
    return trt is None or trt_version_key(resolve(trt)) >= INT8_WEIGHTS_FROM


def check_opset(opset: int, trt: str | None, precision: str = "fp32") -> None:
    """Reject an opset vitc cannot export to, one the target parser cannot read, or one that forces ops it lacks."""
    low, high = OPSET_RANGE
    if not low <= opset <= high:
        raise VitcError(
            f"opset {opset} is not supported by vitc export ({low}..{high}; attention, as "
            "scaled_dot_product_attention, exports from opset 14)"
        )
    if precision == "int8" and opset > INT8_OPSET_MAX:
        raise VitcError(
            f"int8 exports take opset {INT8_OPSET_MAX} at most, not {opset}: ONNX Runtime's graph optimiser "
            f"breaks opset-21+ Q/DQ graphs on load, and every TensorRT from 10.0 parses opset-{INT8_OPSET_MAX} "
            f"Q/DQ; use --opset {INT8_OPSET_MAX} or less"
        )
    if trt is None:
        return
    check_version(trt)
    if opset > max_opset(trt):
        raise VitcError(f"TensorRT {trt} parses ONNX opsets up to {max_opset(trt)}, not {opset}")
    if trt == "8.5" and opset >= 17:
        raise VitcError("TensorRT 8.5 cannot parse LayerNormalization, which opset ≥ 17 exports use; use --opset 16")


@dataclass(frozen=True)
class Finding:
    node: str
    op_type: str
    problem: str

    def __str__(self) -> str:
        return f"{self.node} ({self.op_type}): {self.problem}"


def _initializers(graph: Any) -> dict[str, Any]:
    numpy_helper = lazy_import("onnx.numpy_helper")
    return {t.name: numpy_helper.to_array(t) for t in graph.initializer}


def _constants(graph: Any) -> dict[str, Any]:
    numpy_helper = lazy_import("onnx.numpy_helper")
    out = _initializers(graph)
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    out[node.output[0]] = numpy_helper.to_array(attr.t)
    return out


def _attr(node: Any, name: str, default: Any = None) -> Any:
    onnx = lazy_import("onnx")
    for attr in node.attribute:
        if attr.name == name:
            return onnx.helper.get_attribute_value(attr)
    return default


def check_qdq(model: Any, int8_weights: bool = True) -> list[Finding]:
    """TensorRT's explicit-quantization rules for every QuantizeLinear/DequantizeLinear node."""
    graph = model.graph
    consts = _constants(graph)
    weights = {t.name for t in graph.initializer}
    findings = []
    for node in graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        bad = lambda msg, n=node: findings.append(Finding(n.name, n.op_type, msg))  # noqa: E731
        scale = consts.get(node.input[1]) if len(node.input) > 1 else None
        zp = consts.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if scale is None:
            bad("scale is not a constant")
            continue
        if (scale <= 0).any():
            bad("non-positive scale")
        if zp is not None:
            if str(zp.dtype) != "int8":
                bad(f"quantized type {zp.dtype} (TensorRT needs INT8)")
            if (zp != 0).any():
                bad("non-zero zero point (TensorRT needs symmetric quantization)")
        data = node.input[0]
        is_weight = data in weights or (node.op_type == "DequantizeLinear" and data in consts)
        if node.op_type == "DequantizeLinear" and not is_weight:
            # a DQ fed by a Q of a weight is a weight path too
            producer = next((n for n in graph.node if data in n.output), None)
            is_weight = producer is not None and producer.op_type == "QuantizeLinear" and producer.input[0] in weights
        if scale.size > 1:
            if not is_weight:
                bad("per-channel scale on an activation (TensorRT needs per-tensor activations)")
            else:
                w = consts.get(data)
                if w is None:
                    producer = next((n for n in graph.node if data in n.output), None)
                    w = consts.get(producer.input[0]) if producer is not None else None
                axis = int(_attr(node, "axis", 1))
                if w is not None and (axis >= w.ndim or w.shape[axis] != scale.size):
                    bad(f"{scale.size} scales do not match axis {axis} of weight shape {list(w.shape)}")
        if node.op_type == "DequantizeLinear" and data in consts and str(consts[data].dtype) == "int32":
            bad("int32 bias dequantisation (TensorRT rejects it; quantize with QuantizeBias=False)")
        is_int8_weight = node.op_type == "DequantizeLinear" and data in consts and str(consts[data].dtype) == "int8"
        if is_int8_weight and not int8_weights:
            bad("int8 weights into DequantizeLinear need TensorRT 10 (export for this target keeps them float)")
    return findings


def check_onnx(model: Any, trt: str, exclude_ops: tuple[str, ...] = ()) -> list[Finding]:
    """Every problem TensorRT `trt` would have parsing `model` (an onnx.ModelProto); empty when clean."""
    ops = supported_ops(trt)
    ceiling = max_opset(trt)
    findings: list[Finding] = []
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is not None and opset > ceiling:
        findings.append(Finding("<model>", "opset", f"opset {opset} > {ceiling}, the highest TensorRT {trt} reads"))
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx"):
            findings.append(Finding(node.name, node.op_type, f"custom domain {node.domain!r} needs a plugin"))
        elif node.op_type not in ops and not any(fnmatch.fnmatch(node.op_type, p) for p in exclude_ops):
            note = _NOTES.get(node.op_type, f"not supported by the TensorRT {trt} ONNX parser")
            findings.append(Finding(node.name, node.op_type, note))
    findings += check_qdq(model, int8_weights=int8_weights(trt))
    findings += check_dynamic_dims(model)
    return findings


def check_dynamic_dims(model: Any) -> list[Finding]:
    """Only the batch dimension (axis 0) of inputs may be free, and it must be named (an optimisation profile)."""
    findings = []
    for vi in model.graph.input:
        if vi.name in {t.name for t in model.graph.initializer}:
            continue
        for axis, dim in enumerate(vi.type.tensor_type.shape.dim):
            if dim.HasField("dim_value"):
                continue
            if axis != 0:
                findings.append(Finding(vi.name, "input", f"dynamic dimension {axis}: only the batch may be free"))
            elif not dim.dim_param:
                findings.append(Finding(vi.name, "input", "unnamed dynamic batch dimension (no declared range)"))
    ranges = {p.key: p.value for p in model.metadata_props}
    free = [
        vi
        for vi in model.graph.input
        if vi.type.tensor_type.shape.dim and not vi.type.tensor_type.shape.dim[0].HasField("dim_value")
    ]
    if free and "batch" not in ranges:
        findings.append(
            Finding(free[0].name, "input", "dynamic batch without a declared range (metadata_props 'batch')")
        )
    return findings
