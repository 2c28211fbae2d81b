"""FP16 mixed precision as an ONNX graph pass, in the manner of NVIDIA ModelOpt's AutoCast.

Every floating-point tensor gets one type. Nodes run in FP16 (their float inputs cast to FP16,
initializers converted), except those kept in FP32: LayerNormalization and its opset-16
decomposition (found by module scope or op type), Softmax, reductions, Pow/Sqrt, and the
classifier with every node after it (SP-ViT's logits are head + 0.5·max(aux_head), summed after both
heads). A Cast is inserted wherever a tensor crosses between the two, so no node ever
sees mixed float types: ONNX Runtime CPU runs it, TensorRT 10+ builds it strongly typed, and on
TensorRT 8.5/8.6 (weakly typed, FP16 allowed) `vitc build` pins the float32 layers to FP32
(vitc/build/trt_precision.py).

On an INT8 Q/DQ graph (`vitc export -p int8`, whose high-precision part is FP16 by default, as ModelOpt's
`high_precision_dtype='fp16'`), QuantizeLinear/DequantizeLinear and the quantized ops they feed
(`keep_nodes`) stay FP32: opsets 16-18 take only float32 scales, so the int8 weights, float32 scales
and int8 zero points are left as they are and a Cast to FP32 goes in front of each Q.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any

from vitc._lazy import lazy_import

# Ops whose arithmetic overflows or loses too much in FP16 (ViT folklore, TensorRT#2564, #2709).
KEEP_FP32_OPS = frozenset(
    {
        "LayerNormalization",
        "Softmax",
        "LogSoftmax",
        "ReduceMean",
        "ReduceSum",
        "ReduceSumSquare",
        "ReduceL2",
        "Pow",
        "Sqrt",
        "Reciprocal",
        "Exp",
        "Log",
    }
)
# Kept FP32 at any opset: before 19 (vitc's default 16/17, the highest TensorRT 8.5/8.6 read) their scales and
# dequantized values are float32 only.
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})
# Ops that only move data or carry shapes: they follow their inputs' type instead of choosing one.
FOLLOW_OPS = frozenset(
    {
        "Reshape",
        "Transpose",
        "Flatten",
        "Squeeze",
        "Unsqueeze",
        "Slice",
        "Gather",
        "Expand",
        "Identity",
        "Split",
        "Concat",
    }
)
# Integer/shape ops never touched.
_NON_FLOAT_OUT = frozenset(
    {"Shape", "Size", "Range", "ConstantOfShape", "Equal", "Greater", "Less", "Not", "And", "Or"}
)


@dataclass
class Fp16Report:
    fp16_nodes: int = 0
    fp32_nodes: int = 0
    casts: int = 0
    kept: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"fp16_nodes": self.fp16_nodes, "fp32_nodes": self.fp32_nodes, "casts": self.casts, "kept": self.kept}


def _elem_types(model: Any) -> dict[str, int]:
    """The ONNX elem_type of every typed tensor (inputs, value_info, outputs, initializers)."""
    types = {}
    for vi in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        types[vi.name] = vi.type.tensor_type.elem_type
    for init in model.graph.initializer:
        types[init.name] = init.data_type
    return types


def convert_fp16(
    model: Any,
    keep_scopes: tuple[str, ...] = (),
    keep_patterns: tuple[str, ...] = (),
    io_fp16: bool = False,
    keep_from: tuple[str, ...] = (),
    keep_nodes: frozenset[str] = frozenset(),
) -> tuple[Any, Fp16Report]:
    """Return a mixed-precision copy of `model` (shape-inferred ModelProto) and what was kept in FP32.

    `keep_scopes` are node-name prefixes (module scopes such as '/blocks.0/norm1/') kept in FP32
    whatever their op; `keep_patterns` are fnmatch patterns on node names; `keep_from` are scopes kept
    in FP32 together with every node downstream of them (the classifier: '/head/', '/aux_head/', and
    what combines their outputs into the logits); `keep_nodes` are node names kept in FP32 (an INT8
    graph's quantized ops). QuantizeLinear/DequantizeLinear are always FP32 (QDQ_OPS).
    """
    onnx = lazy_import("onnx")
    model = onnx.shape_inference.infer_shapes(model)
    rewriter = _Fp16Rewriter(model, keep_scopes, keep_patterns, io_fp16, keep_from, keep_nodes)
    for node in list(model.graph.node):
        rewriter.rewrite(node)
    rewriter.cast_graph_outputs()
    rewriter.finish()
    return onnx.shape_inference.infer_shapes(model, strict_mode=True), rewriter.report


class _Fp16Rewriter:
    """One pass over the nodes in order: each float tensor gets one type, casts where types meet."""

    def __init__(
        self,
        model: Any,
        keep_scopes: tuple[str, ...],
        keep_patterns: tuple[str, ...],
        io_fp16: bool,
        keep_from: tuple[str, ...] = (),
        keep_nodes: frozenset[str] = frozenset(),
    ):
        onnx = lazy_import("onnx")
        self.onnx, self.numpy_helper = onnx, lazy_import("onnx.numpy_helper")
        self.FLOAT, self.HALF = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
        self.graph, self.io_fp16 = model.graph, io_fp16
        self.keep_scopes, self.keep_patterns, self.keep_from = keep_scopes, keep_patterns, keep_from
        self.keep_nodes = keep_nodes
        self.from_kept_nodes: set[str] = set()  # their outputs: FP32 as computed, FP16 for the data movers after
        self.downstream: set[str] = set()  # the outputs of keep_from's nodes and of every node they feed
        self.src_types = _elem_types(model)
        self.inits = {t.name: t for t in self.graph.initializer}
        self.report = Fp16Report()
        self.nodes: list[Any] = []  # the new graph's nodes, in order
        self.casts: dict[tuple[str, int], str] = {}  # (tensor, type) -> its Cast's output
        self.half_inits: dict[str, str] = {}  # FP32 initializer -> its FP16 copy
        self.dtype: dict[str, int] = {}  # current type of each float tensor in the new graph
        for vi in self.graph.input:
            if self.src_types.get(vi.name) == self.FLOAT:
                self.dtype[vi.name] = self.HALF if io_fp16 else self.FLOAT
                if io_fp16:
                    vi.type.tensor_type.elem_type = self.HALF
        self.dtype |= {name: self.FLOAT for name, t in self.inits.items() if t.data_type == self.FLOAT}

    def rewrite(self, node: Any) -> None:
        float_in = [i for i in node.input if i and (i in self.dtype or self.src_types.get(i) == self.FLOAT)]
        float_out = [o for o in node.output if self.src_types.get(o) == self.FLOAT]
        untouched = node.op_type in ("Cast", "Constant") or node.op_type in _NON_FLOAT_OUT
        if untouched or not (float_in or float_out):
            self.dtype |= dict.fromkeys(float_out, self.FLOAT)
            self.nodes.append(node)
            return
        target = self._target(node, float_in)
        for idx, name in enumerate(node.input):
            if name in float_in and not _is_index_input(node, idx):
                node.input[idx] = self._cast(name, target)
        self.dtype |= dict.fromkeys(float_out, target)
        if target == self.HALF:
            self.report.fp16_nodes += 1
        else:
            self.report.fp32_nodes += 1
        self.nodes.append(node)

    def _target(self, node: Any, float_in: list[str]) -> int:
        """FP32 for kept nodes, the data's type for data movers (any FP16 input for Concat), else FP16."""
        after_kept = any(node.name.startswith(s) for s in self.keep_from) or any(
            i in self.downstream for i in node.input
        )
        if after_kept:
            self.downstream.update(node.output)
        kept = (
            after_kept
            or node.op_type in KEEP_FP32_OPS
            or node.op_type in QDQ_OPS
            or node.name in self.keep_nodes
            or any(node.name.startswith(s) for s in self.keep_scopes)
            or any(fnmatch.fnmatch(node.name, p) for p in self.keep_patterns)
        )
        if kept:
            self.report.kept[node.op_type] = self.report.kept.get(node.op_type, 0) + 1
            if node.name in self.keep_nodes:
                self.from_kept_nodes.update(node.output)
            return self.FLOAT
        if node.op_type == "Concat":
            return self.HALF if any(self._half(i) for i in float_in) else self.FLOAT
        if node.op_type in FOLLOW_OPS:
            return self.HALF if self._half(node.input[0]) else self.FLOAT
        return self.HALF

    def _half(self, name: str) -> bool:
        """Whether a data mover reading `name` runs FP16: an FP16 tensor, or a quantized op's output (cast back at
        once, as in an FP16 graph, rather than moved in FP32 and cast at each reader)."""
        return self.dtype.get(name) == self.HALF or name in self.from_kept_nodes

    def _cast(self, name: str, to: int) -> str:
        """`name` as type `to`: itself, an FP16 copy of an initializer, or the output of one shared Cast."""
        if self.dtype.get(name, to) == to:
            return name
        if name in self.inits and to == self.HALF:
            if name not in self.half_inits:
                arr = self.numpy_helper.to_array(self.inits[name]).astype("float16")
                self.graph.initializer.append(self.numpy_helper.from_array(arr, name + "_fp16"))
                self.dtype[name + "_fp16"] = self.HALF
                self.half_inits[name] = name + "_fp16"
            return self.half_inits[name]
        if (name, to) not in self.casts:
            out = f"{name}_cast_{'fp16' if to == self.HALF else 'fp32'}"
            self.nodes.append(self.onnx.helper.make_node("Cast", [name], [out], to=to, name=f"{out}_node"))
            self.report.casts += 1
            self.dtype[out] = to
            self.casts[(name, to)] = out
        return self.casts[(name, to)]

    def cast_graph_outputs(self) -> None:
        """Graph outputs are FP32, or FP16 with io_fp16: a Cast where the producer's type differs, and the
        declared type set either way (an FP16 producer already feeding an io_fp16 output needs no Cast)."""
        want = self.HALF if self.io_fp16 else self.FLOAT
        for out in self.graph.output:
            if self.src_types.get(out.name) != self.FLOAT:
                continue
            if self.dtype.get(out.name) == want:
                out.type.tensor_type.elem_type = want
                continue
            inner = out.name + ("_fp16" if self.dtype[out.name] == self.HALF else "_fp32")
            for n in self.nodes:
                n.output[:] = [inner if o == out.name else o for o in n.output]
                n.input[:] = [inner if i == out.name else i for i in n.input]
            self.nodes.append(self.onnx.helper.make_node("Cast", [inner], [out.name], to=want, name=f"{out.name}_cast"))
            self.report.casts += 1
            out.type.tensor_type.elem_type = want

    def finish(self) -> None:
        """Install the new nodes; drop the FP32 initializers nobody reads any more and the stale value_info."""
        used = {i for n in self.nodes for i in n.input}
        keep_inits = [t for t in self.graph.initializer if t.name in used]
        del self.graph.initializer[:]
        self.graph.initializer.extend(keep_inits)
        del self.graph.node[:]
        self.graph.node.extend(self.nodes)
        del self.graph.value_info[:]


def _is_index_input(node: Any, idx: int) -> bool:
    """Inputs that are shapes/indices, never cast (e.g. Reshape's shape, Gather's indices)."""
    if node.op_type in {
        "Reshape",
        "Expand",
        "Tile",
        "Slice",
        "Unsqueeze",
        "Squeeze",
        "Gather",
        "Split",
        "Resize",
        "Pad",
    }:
        return idx > 0
    if node.op_type == "Where":
        return idx == 0
    return False


def mixed_type_nodes(model: Any) -> list[str]:
    """Nodes whose floating inputs do not all share one type (must be empty for strongly typed TensorRT)."""
    onnx = lazy_import("onnx")
    model = onnx.shape_inference.infer_shapes(model)
    types = _elem_types(model)
    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16}
    bad = []
    for node in model.graph.node:
        if node.op_type in ("Cast", "QuantizeLinear", "DequantizeLinear"):
            continue
        seen = {
            types[i]
            for idx, i in enumerate(node.input)
            if i in types and types[i] in floats and not _is_index_input(node, idx)
        }
        if len(seen) > 1:
            bad.append(node.name)
    return bad
