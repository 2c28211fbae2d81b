"""The parsed network's layers in the fake `tensorrt` (tests/engines/fakes/tensorrt_fake.py).

The fake parser makes one IConstantLayer per initializer and one layer per ONNX node, in graph
order, each output an ITensor typed by ONNX type inference (int64 is INT32 before 10.0, as 8.x's
parser converts it). A layer's precision and output types are checked as TensorRT checks them and
recorded (`Layer._precision`, `Layer._output_types`) for the tests; a call TensorRT refuses is logged
as an error and changes nothing, as the real noexcept API does (NvInfer.h of 8.5, 8.6 and 10.3):
- setOutputType with an index outside [0, num_outputs);
- setPrecision / setOutputType on a strongly typed network ("Strongly-typed networks reject calls");
- IQuantizeLayer: FLOAT precision and INT8 output only; IDequantizeLayer: INT8 precision and FLOAT or
  HALF output only (8.x);
- shape layers: INT32 output only ("all attempts to set the output type to some other data type will be
  ignored except for issuing an error message");
- a Cast's output type must be the type it casts to (10.x: "types passed to setOutputType and setToType
  must be the same").
A value that is not a DataType is a TypeError, as pybind11 raises for it.
"""

from __future__ import annotations

from typing import Any

from tests.engines.fakes.tensorrt_objects import ONNX_TYPES, FakeGap, Strict

# ONNX op → LayerType name of the layer the parser makes for it (its main layer, when it makes several)
LAYER_TYPES = {
    **dict.fromkeys(("Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze"), "SHUFFLE"),
    **dict.fromkeys(("MatMul", "Gemm"), "MATRIX_MULTIPLY"),
    **dict.fromkeys(("Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Equal", "Greater", "Less"), "ELEMENTWISE"),
    **dict.fromkeys(("ReduceMean", "ReduceSum", "ReduceMax", "ReduceL2"), "REDUCE"),
    **dict.fromkeys(("Sqrt", "Exp", "Log", "Erf", "Reciprocal", "Abs", "Neg", "Not"), "UNARY"),
    **dict.fromkeys(("Relu", "Sigmoid", "Tanh", "Elu", "LeakyRelu", "Softplus"), "ACTIVATION"),
    **dict.fromkeys(("Slice", "Split", "Expand"), "SLICE"),
    "Softmax": "SOFTMAX",
    "Conv": "CONVOLUTION",
    "Concat": "CONCATENATION",
    "Gather": "GATHER",
    "Where": "SELECT",
    "Identity": "IDENTITY",
    "Cast": "CAST",  # an IIdentityLayer before 8.6, which has no ICastLayer
    "Constant": "CONSTANT",
    "Shape": "SHAPE",
    "ConstantOfShape": "FILL",
    "Range": "FILL",
    "QuantizeLinear": "QUANTIZE",
    "DequantizeLinear": "DEQUANTIZE",
    "LayerNormalization": "NORMALIZATION",
    "BatchNormalization": "SCALE",
    "GlobalAveragePool": "REDUCE",
    "AveragePool": "POOLING",
    "MaxPool": "POOLING",
}


class Layer(Strict):
    def __init__(self, name: str, op_type: str, network: Any, inputs: list[Any], outputs: list[Any]) -> None:
        object.__setattr__(self, "_state", (name, op_type))
        self._network, self._inputs, self._outputs, self._attrs = network, inputs, outputs, {}
        self._precision: Any = None
        self._output_types: dict[int, Any] = {}

    name = property(lambda self: self._state[0])
    num_inputs = property(lambda self: len(self._inputs))
    num_outputs = property(lambda self: len(self._outputs))
    precision_is_set = property(lambda self: self._precision is not None)

    @property
    def type(self) -> Any:
        kind = LAYER_TYPES.get(self._state[1])
        if kind == "CAST" and "CAST" not in self._trt.LayerType.__members__:
            kind = "IDENTITY"
        if kind is None:
            raise FakeGap(f"the fake does not know which layer TensorRT makes for ONNX {self._state[1]}")
        return self._trt.LayerType[kind]

    def get_input(self, index: int) -> Any:
        return self._inputs[index]  # None for an omitted optional input, as the real getInput's nullptr

    def get_output(self, index: int) -> Any:
        return self._outputs[index]

    @property
    def precision(self) -> Any:
        return self._precision if self._precision is not None else self._trt.DataType.FLOAT

    @precision.setter
    def precision(self, dtype: Any) -> None:
        self._check_dtype(dtype)
        problem = self._refused("setPrecision")
        kind = self.type.name
        if problem is None and kind == "QUANTIZE" and dtype.name != "FLOAT":
            problem = "IQuantizeLayer only supports FLOAT precision"
        if problem is None and kind == "DEQUANTIZE" and self._trt._major < 10 and dtype.name != "INT8":
            problem = "IDequantizeLayer only supports INT8 precision"
        if problem:
            self._error(f"{self.name}: ILayer::setPrecision: {problem}")
            return
        self._precision = dtype

    def set_output_type(self, index: int, dtype: Any) -> None:
        self._check_dtype(dtype)
        problem = self._refused("setOutputType")
        if problem is None and not 0 <= int(index) < len(self._outputs):
            problem = f"index {index} is outside [0, {len(self._outputs)})"
        if problem is None:
            problem = self._output_type_problem(dtype)
        if problem:
            self._error(f"{self.name}: ILayer::setOutputType: {problem}")
            return
        self._output_types[int(index)] = dtype

    def get_output_type(self, index: int) -> Any:
        return self._output_types.get(index, self._outputs[index].dtype)

    def output_type_is_set(self, index: int) -> bool:
        return index in self._output_types

    def _check_dtype(self, dtype: Any) -> None:
        if type(dtype) is not type(self._trt.DataType.FLOAT):
            raise TypeError(f"incompatible function arguments: {dtype!r} is not a tensorrt.DataType")

    def _refused(self, call: str) -> str | None:
        return "strongly typed networks reject it" if self._network._strongly_typed else None

    def _output_type_problem(self, dtype: Any) -> str | None:
        kind, name = self.type.name, dtype.name
        if kind == "QUANTIZE" and name != "INT8":
            return "IQuantizeLayer only supports INT8 output"
        if kind == "DEQUANTIZE" and name not in ("FLOAT", "HALF"):
            return "IDequantizeLayer only supports FLOAT or HALF output"
        if kind == "SHAPE" and name != "INT32":
            return "the output type of a shape operation must be INT32"
        if kind in ("CAST", "IDENTITY") and "to" in self._attrs and name != self._attrs["to"]:
            return f"a Cast to {self._attrs['to']} cannot output {name}"
        return None


def parse_layers(parser: Any, model: Any) -> list[Layer]:
    """The network's layers for `model` (an onnx ModelProto), tensors typed by ONNX type inference."""
    import onnx

    trt, network = parser._trt, parser._network()
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {
        info.name: info.type.tensor_type.elem_type
        for info in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]
    }
    types.update({init.name: init.data_type for init in model.graph.initializer})
    tensors = {t.name: t for t in [*network._inputs, *network._outputs]}

    def tensor(name: str) -> Any:
        if name not in tensors:
            kind = ONNX_TYPES.get(types.get(name, 0))
            if kind == "INT64" and "INT64" not in trt.DataType.__members__:
                kind = "INT32"  # 8.x's parser computes int64 tensors in INT32
            dtype = trt.DataType[kind] if kind in trt.DataType.__members__ else None
            tensors[name] = parser._new("ITensor", name, (), dtype)
        return tensors[name]

    layers = [
        parser._new("ILayer", init.name, "Constant", network, [], [tensor(init.name)])
        for init in model.graph.initializer
    ]
    for i, node in enumerate(model.graph.node):
        layer = parser._new(
            "ILayer",
            node.name or f"{node.op_type}_{i}",
            node.op_type,
            network,
            [tensor(name) if name else None for name in node.input],
            [tensor(name) for name in node.output],
        )
        for attribute in node.attribute:
            if attribute.name == "to":
                to = ONNX_TYPES.get(attribute.i)
                layer._attrs["to"] = "INT32" if to == "INT64" and "INT64" not in trt.DataType.__members__ else to
        layers.append(layer)
    return layers
