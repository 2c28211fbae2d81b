"""`vitc build`: TensorRT engines from verified, precision-baked ONNX files.

A stage of its own between export and bench: it reads an export (vitc.artifacts), builds with the
TensorRT version installed here (vitc.engines.tensorrt adapts to 8.5-11.x), checks the engine on the
export's held-out set and writes the plan with its sidecar.
"""
