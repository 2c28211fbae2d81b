"""Precision passes on ONNX graphs: FP16 mixed precision (`fp16`) and INT8 Q/DQ (`int8`, `calib`)."""
