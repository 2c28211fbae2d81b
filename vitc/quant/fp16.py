"""FP16 mixed precision as an ONNX graph pass, in the manner of NVIDIA ModelOpt's AutoCast.

Every floating-point tensor gets one type. Nodes run in FP16 (their float inputs cast to FP16,
initializers converted), except those kept in FP32: LayerNormalization and its opset-16
decomposition (found by module scope or op type), Softmax, reductions, Pow/Sqrt, and the
classifier head. A Cast is inserted wherever a tensor crosses between the two, so no node ever
sees mixed float types: TensorRT builds the graph strongly typed and ONNX Runtime CPU runs it.
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


def _float_tensors(model: Any) -> dict[str, int]:
    """elem_type of every typed tensor (inputs, value_info, outputs, initializers)."""
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
) -> tuple[Any, Fp16Report]:
    """Return a mixed-precision copy of `model` (shape-inferred ModelProto) and what was kept in FP32.

    `keep_scopes` are node-name prefixes (module scopes such as '/blocks.0/norm1/', '/head/') kept in
    FP32 whatever their op; `keep_patterns` are fnmatch patterns on node names.
    """
    onnx = lazy_import("onnx")
    numpy_helper = lazy_import("onnx.numpy_helper")
    TP = onnx.TensorProto
    FLOAT, HALF = TP.FLOAT, TP.FLOAT16
    model = onnx.shape_inference.infer_shapes(model)
    src_types = _float_tensors(model)
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    consumers_fp32 = set()  # initializers some FP32 node reads
    report = Fp16Report()

    dtype: dict[str, int] = {}  # current type of each float tensor in the new graph
    for vi in graph.input:
        if src_types.get(vi.name) == FLOAT:
            dtype[vi.name] = HALF if io_fp16 else FLOAT
            if io_fp16:
                vi.type.tensor_type.elem_type = HALF
    for name, t in inits.items():
        if t.data_type == FLOAT:
            dtype[name] = FLOAT

    new_nodes = []
    casts: dict[tuple[str, int], str] = {}
    half_inits: dict[str, str] = {}

    def cast(name: str, to: int) -> str:
        if dtype.get(name, to) == to:
            return name
        if name in inits and to == HALF:
            if name not in half_inits:
                arr = numpy_helper.to_array(inits[name]).astype("float16")
                new = name + "_fp16"
                graph.initializer.append(numpy_helper.from_array(arr, new))
                dtype[new] = HALF
                half_inits[name] = new
            return half_inits[name]
        key = (name, to)
        if key not in casts:
            out = f"{name}_cast_{'fp16' if to == HALF else 'fp32'}"
            new_nodes.append(onnx.helper.make_node("Cast", [name], [out], to=to, name=f"{out}_node"))
            report.casts += 1
            dtype[out] = to
            casts[key] = out
        return casts[key]

    def is_kept(node: Any) -> bool:
        if node.op_type in KEEP_FP32_OPS:
            return True
        if any(node.name.startswith(s) for s in keep_scopes):
            return True
        return any(fnmatch.fnmatch(node.name, p) for p in keep_patterns)

    for node in list(graph.node):
        float_in = [i for i in node.input if i and (i in dtype or src_types.get(i) == FLOAT)]
        float_out = [o for o in node.output if src_types.get(o) == FLOAT]
        if node.op_type == "Cast" or node.op_type in _NON_FLOAT_OUT or not (float_in or float_out):
            for o in float_out:
                dtype[o] = FLOAT
            new_nodes.append(node)
            continue
        if node.op_type == "Constant":
            for o in float_out:
                dtype[o] = FLOAT
            new_nodes.append(node)
            continue
        if is_kept(node):
            target = FLOAT
            report.kept[node.op_type] = report.kept.get(node.op_type, 0) + 1
        elif node.op_type in FOLLOW_OPS:
            data = node.input[0]
            target = (
                dtype.get(data, FLOAT)
                if node.op_type != "Concat"
                else (HALF if any(dtype.get(i) == HALF for i in float_in) else FLOAT)
            )
        else:
            target = HALF
        for idx, name in enumerate(node.input):
            if name in float_in and not _is_index_input(node, idx):
                node.input[idx] = cast(name, target)
                if target == FLOAT and name in inits:
                    consumers_fp32.add(name)
        for o in float_out:
            dtype[o] = target
        if target == HALF:
            report.fp16_nodes += 1
        else:
            report.fp32_nodes += 1
        new_nodes.append(node)

    # graph outputs keep their declared type (FP32 unless io_fp16)
    want = HALF if io_fp16 else FLOAT
    for out in graph.output:
        if src_types.get(out.name) != FLOAT or dtype.get(out.name) == want:
            continue
        inner = out.name + ("_fp16" if dtype[out.name] == HALF else "_fp32")
        for n in new_nodes:
            n.output[:] = [inner if o == out.name else o for o in n.output]
            n.input[:] = [inner if i == out.name else i for i in n.input]
        new_nodes.append(onnx.helper.make_node("Cast", [inner], [out.name], to=want, name=f"{out.name}_cast"))
        report.casts += 1
        out.type.tensor_type.elem_type = want

    # drop FP32 initializers nobody reads any more
    used = {i for n in new_nodes for i in n.input}
    keep_inits = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep_inits)
    del graph.node[:]
    graph.node.extend(new_nodes)
    del graph.value_info[:]
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    return model, report


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
    types = _float_tensors(model)
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
