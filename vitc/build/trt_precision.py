"""The precision a parsed graph holds (a plan is called by it), and for TensorRT 8.5/8.6 the layers an fp16/int8
export keeps in float32 pinned to FP32.

Precision lives in the ONNX: `vitc export -p fp16` keeps LayerNorm's decomposition, Softmax and the
head in float32 (FP16 LayerNorm after attention overflows: TensorRT#2564, #2709), `-p int8` keeps those
and the path of each quantized op (Cast → Q/DQ → op) in float32 (all but the quantized ops with
`--high-precision-dtype fp32`). TensorRT 10.x builds such graphs strongly typed and obeys those types.
8.5/8.6 cannot: their build is weakly typed with BuilderFlag.FP16 (INT8 + FP16 for Q/DQ), which lets
TensorRT run ANY layer in FP16. Only a layer given a precision and output types under
OBEY_PRECISION_CONSTRAINTS is held to them (NvInfer.h, ILayer::setPrecision / setOutputType), as
`trtexec --precisionConstraints=obey --layerPrecisions=...` does by hand.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vitc._lazy import LazyModule
from vitc.build.options import BuildOptions, export_fix
from vitc.errors import VitcError

if TYPE_CHECKING:
    import tensorrt as trt
else:
    trt = LazyModule("tensorrt")

# Layer types never pinned (NvInfer.h of 8.5/8.6): Quantize runs in FLOAT and outputs INT8 only, Dequantize
# runs in INT8 and outputs FLOAT or HALF: the Q/DQ pair carries its own types. A constant computes
# nothing (its weights' type is its type). Shape layers output INT32 only ("all attempts to set the output
# type to some other data type will be ignored except for issuing an error message").
UNPINNED_LAYERS = frozenset({"QUANTIZE", "DEQUANTIZE", "CONSTANT", "SHAPE"})
# Layers that only move data: a dequantized tensor through them still reaches its quantized op
# (the parser puts a Shuffle between a DequantizeLinear and a MatMul that transposes or broadcasts).
MOVES_DATA = frozenset({"SHUFFLE"})


def held_precisions(network: trt.INetworkDefinition) -> set[str]:
    """The reduced precisions a parsed graph holds: "int8" for Q/DQ layers, "fp16" for a float16 tensor out of any
    layer (the casts and float16 weights of `vitc export -p fp16`). TensorRT builds those and nothing more: strongly
    typed on 10.x, and on 8.5/8.6 with the graph's float32 layers pinned to FP32."""
    half = trt.DataType.HALF
    held = set()
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.type.name in ("QUANTIZE", "DEQUANTIZE"):
            held.add("int8")
        outputs = (layer.get_output(j) for j in range(layer.num_outputs))
        if any(tensor is not None and tensor.dtype == half for tensor in outputs):
            held.add("fp16")
    return held


def graph_precision(held: set[str]) -> str:
    """The one precision a graph holding `held` (held_precisions) is built at: int8 with Q/DQ nodes (an int8
    export keeps float16 beside them with --high-precision-dtype fp16), else fp16 with float16 tensors, else fp32."""
    return "int8" if "int8" in held else "fp16" if "fp16" in held else "fp32"


def check_graph_precision(opts: BuildOptions, network: trt.INetworkDefinition) -> None:
    """The plan must be called what the parsed graph holds: int8 where it has Q/DQ nodes, else fp16 where it has
    float16 tensors, else fp32. TensorRT builds what the ONNX file holds (vitc calibrates no INT8 in TensorRT), so
    an int8 build of a float graph is its precision under another name, and a bare model.onnx of Q/DQ nodes,
    taken as fp32 without --precision, was labelled fp32. A bare file's --precision, name or default is checked
    here; an export's precision is its manifest's (resolve_options)."""
    want, holds = opts.chosen_precision, graph_precision(held_precisions(network))
    if want == holds:
        return
    if want != "fp32" and holds == "fp32":
        lacks = "no Q/DQ nodes" if want == "int8" else "no float16 tensors"
        raise VitcError(
            f"{opts.onnx} has {lacks}, so it is no {want} graph: TensorRT builds the precision the ONNX file holds; "
            f"{export_fix(opts.onnx, want, opts.manifest)}"
        )
    what = "Q/DQ nodes" if holds == "int8" else "float16 tensors"
    raise VitcError(
        f"{opts.onnx} holds an {holds} graph ({what}), not {want}: TensorRT builds the precision the ONNX file "
        f"holds; build it with --precision {holds}"
    )


def pin_fp32_layers(network: trt.INetworkDefinition) -> list[str]:
    """Give every layer whose outputs are all float32 tensors FP32 precision and output types; return their names.

    Left alone, besides UNPINNED_LAYERS: layers fed by a Dequantize (directly or through MOVES_DATA
    layers), whose precision the Q/DQ pair sets (explicit quantization: TensorRT fuses the DQ into them
    and runs them in INT8, as a strongly typed build of the same file does), and layers with an
    output that is not float32 (the graph's FP16 nodes, integer and shape computations).
    """
    fp32 = trt.DataType.FLOAT
    dequantized: set[str] = set()  # tensors a Dequantize produced, through data moves
    pinned = []
    for i in range(network.num_layers):  # the parser adds layers in graph order: producers come first
        layer = network.get_layer(i)
        kind = layer.type.name
        inputs = [layer.get_input(j) for j in range(layer.num_inputs)]
        outputs = [layer.get_output(j) for j in range(layer.num_outputs)]
        quantized = any(tensor is not None and tensor.name in dequantized for tensor in inputs)
        if kind == "DEQUANTIZE" or (quantized and kind in MOVES_DATA):
            dequantized.update(tensor.name for tensor in outputs)
            continue
        if kind in UNPINNED_LAYERS or quantized or not outputs or any(t.dtype != fp32 for t in outputs):
            continue
        layer.precision = fp32
        for j in range(len(outputs)):
            layer.set_output_type(j, fp32)
        pinned.append(layer.name)
    return pinned


__all__ = ["check_graph_precision", "graph_precision", "held_precisions", "pin_fp32_layers"]
