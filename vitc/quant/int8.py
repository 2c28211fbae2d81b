"""INT8 explicit quantization (Q/DQ) by post-training calibration, laid out for TensorRT.

ONNX Runtime's `quantize_static` does the calibration and Q/DQ insertion, with the options ModelOpt
passes for TensorRT (NVIDIA ModelOpt `ort_utils.configure_ort`): symmetric INT8 activations and weights
(zero point 0), per-channel weights on the output axis (MatMul axis 1, Gemm axis 0 with transB,
Conv axis 0), per-tensor activations, no int32 bias Q/DQ, Q/DQ only on the inputs of quantized ops.

What is quantized: MatMul/Gemm/Conv with a weight (the second input, as every Linear and Conv
exports). What is not: LayerNorm, Softmax, GELU, residual adds (never quantized ops), the
attention BMMs (two activation inputs: keeping them unquantized leaves the MatMul-Softmax-MatMul
pattern TensorRT fuses into MHA, and TensorRT has no INT8 MHA fusion for ViT sequence lengths,
TensorRT#3724), compiled GPSA's positional tables applied to v (a constant first input: attention
probabilities, not weights, and per-channel scales on their axis 1 would mean nothing), the
classifier head and `exclude` patterns.

That unquantized part runs in FP16 by default (`fp16_base`, `vitc export --high-precision-dtype fp16`,
the default of NVIDIA ModelOpt's ONNX PTQ): calibration runs on the FP32 graph, then vitc's FP16 pass
(vitc.quant.fp16) converts the Q/DQ graph with the FP32 islands of `-p fp16` (LayerNorm, Softmax,
reductions, the head and what follows it, `exclude`), and keeps the Q/DQ nodes and the quantized ops
FP32: fp16 activation → Cast → Q → DQ → MatMul (FP32, int8 weight dequantized) → Cast → fp16. Left
FP32 (`fp32`), TensorRT 10+ (strongly typed) and 8.5/8.6 (FP32 pins, vitc/build/trt_precision.py)
would run the attention BMMs, GELU and every elementwise op in FP32, TF32 off. The GPU speed of
either form was not measured here (docs/tensorrt.md); `fp32` suits ONNX Runtime on CPUs, whose FP16
kernels are slow.

Weights are stored as int8 initializers followed by DequantizeLinear (the form ModelOpt writes with
`dq_only`), a quarter of the float bytes, for every TensorRT target that takes them (10 and later,
and no target); for 8.5/8.6, whose TensorRT does not take INT8 weights (the caller says so with
`int8_weights=False`: vitc.export.trt_rules knows which TensorRT takes what), they stay float with
a QuantizeLinear/DequantizeLinear pair. The int8 values are what ONNX Runtime's
QuantizeLinear computes from the float form, so both forms give the same logits.
"""

from __future__ import annotations

import contextlib
import fnmatch
import io
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vitc._lazy import lazy_import
from vitc._ort import ort_session
from vitc.errors import VitcError
from vitc.quant.calib import CalibrationSet
from vitc.quant.fp16 import Fp16Report, convert_fp16

QUANT_OPS = ("MatMul", "Gemm", "Conv")
# The type of what is not quantized (ModelOpt's `high_precision_dtype`); the first is the default.
HIGH_PRECISION_DTYPES = ("fp16", "fp32")
# Images per calibration run: the batch does not change the file (the same bytes at 1, 8 and 32), only ONNX
# Runtime's peak memory, which 8 cuts by a third or more (docs/benchmarks.md, "INT8 calibration memory").
CALIB_BATCH = 8
# Peak memory per calibrated byte of one image in ONNX Runtime's histogram calibration (entropy,
# percentile), measured there: each image holds its calibrated tensors and a little more.
HISTOGRAM_OVERHEAD = 1.1


@dataclass
class Int8Report:
    quantized: list[str] = field(default_factory=list)
    excluded: dict[str, str] = field(default_factory=dict)  # node → reason
    weights: str = "float"  # "int8": int8 initializers → DequantizeLinear; "float": float → Q → DQ

    def to_dict(self) -> dict[str, Any]:
        return {"quantized": len(self.quantized), "excluded": self.excluded, "weights": self.weights}


def plan(model: Any, head_scopes: tuple[str, ...] = ("/head/",), exclude: tuple[str, ...] = ()) -> Int8Report:
    """Which MatMul/Gemm/Conv nodes get Q/DQ, and why the others do not."""
    weights = {t.name for t in model.graph.initializer}
    report = Int8Report()
    for node in model.graph.node:
        if node.op_type not in QUANT_OPS:
            continue
        if any(node.name.startswith(s) for s in head_scopes):
            report.excluded[node.name] = "classifier head"
        elif any(fnmatch.fnmatch(node.name, p) for p in exclude):
            report.excluded[node.name] = "--exclude"
        elif len(node.input) > 1 and node.input[1] in weights:
            report.quantized.append(node.name)
        elif node.input[0] in weights:
            report.excluded[node.name] = "positional table @ v (attention probabilities, kept float)"
        else:
            report.excluded[node.name] = "attention BMM (kept float for MHA fusion)"
    return report


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """ORT's quantizer prints progress and logs a pre-processing hint on the root logger, through the module's
    `logging.info`, which gives an unconfigured root logger a stderr handler (basicConfig): the caller's own
    `logging.basicConfig` would then do nothing. Level and handlers are given back."""
    root = logging.getLogger()
    level, handlers = root.level, root.handlers[:]
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)
        for added in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(added)


class _Reader:
    """ONNX Runtime CalibrationDataReader over a CalibrationSet."""

    def __init__(self, calib: CalibrationSet, input_name: str, batch: int) -> None:
        self._iter = iter(calib.batches(batch))
        self._name = input_name

    def get_next(self) -> dict[str, np.ndarray] | None:
        chunk = next(self._iter, None)
        return None if chunk is None else {self._name: chunk}


def quantize_int8(
    model: Any,
    calib: CalibrationSet,
    method: str = "minmax",
    batch: int = CALIB_BATCH,
    static_batch: int | None = None,
    head_scopes: tuple[str, ...] = ("/head/",),
    exclude: tuple[str, ...] = (),
    int8_weights: bool = True,
) -> tuple[Any, Int8Report]:
    """A Q/DQ copy of `model` (FP32 ModelProto) calibrated on `calib`; weights as int8 initializers when
    the target TensorRT takes them (`int8_weights`), else float with a Q/DQ pair."""
    onnx = lazy_import("onnx")
    q = lazy_import("onnxruntime.quantization")
    methods = {
        "minmax": q.CalibrationMethod.MinMax,
        "entropy": q.CalibrationMethod.Entropy,
        "percentile": q.CalibrationMethod.Percentile,
    }
    if method not in methods:
        raise VitcError(f"unknown calibration method {method!r} (choose one of: {', '.join(methods)})")
    report = plan(model, head_scopes, exclude)
    if not report.quantized:
        raise VitcError("nothing to quantize: every MatMul/Gemm/Conv is excluded")
    if method in ("entropy", "percentile"):
        check_histogram_memory(model, calib, method)
    all_ops = sorted({n.op_type for n in model.graph.node})
    extra = {
        "ActivationSymmetric": True,
        "WeightSymmetric": True,
        "QuantizeBias": False,
        "AddQDQPairToWeight": True,
        "DedicatedQDQPair": False,
        "OpTypesToExcludeOutputQuantization": all_ops,
        "ForceQuantizeNoInputCheck": False,
        "QDQDisableWeightAdjustForInt32Bias": True,
        "UseQDQContribOps": False,
        "CalibTensorRangeSymmetric": True,
    }
    if method == "percentile":
        extra["CalibPercentile"] = 99.999
    with tempfile.TemporaryDirectory(prefix="vitc-int8-") as tmp:
        src, dst = os.path.join(tmp, "fp32.onnx"), os.path.join(tmp, "int8.onnx")
        onnx.save(model, src)
        reader = _Reader(calib, model.graph.input[0].name, static_batch or batch)
        if static_batch and len(calib.images) % static_batch:
            raise VitcError(
                f"{len(calib.images)} calibration images do not split into static batches of {static_batch}"
            )
        with _quiet():
            q.quantize_static(
                src,
                dst,
                reader,
                quant_format=q.QuantFormat.QDQ,
                op_types_to_quantize=list(QUANT_OPS),
                nodes_to_quantize=report.quantized,
                per_channel=True,
                reduce_range=False,
                activation_type=q.QuantType.QInt8,
                weight_type=q.QuantType.QInt8,
                calibrate_method=methods[method],
                extra_options=extra,
            )
        out = onnx.load(dst)
    if int8_weights:
        fold_weight_quantization(out)
        report.weights = "int8"
    return out, report


def high_precision_dtype(precision: str, dtype: str | None) -> str | None:
    """The type of an int8 file's unquantized part: `dtype` (--high-precision-dtype), fp16 when not given;
    None for fp32/fp16 files, which refuse one in a line."""
    if precision != "int8":
        if dtype is not None:
            raise VitcError(f"--high-precision-dtype applies to --precision int8 only, not {precision}")
        return None
    if dtype is not None and dtype not in HIGH_PRECISION_DTYPES:
        raise VitcError(f"--high-precision-dtype must be {' or '.join(HIGH_PRECISION_DTYPES)}, got {dtype!r}")
    return dtype or HIGH_PRECISION_DTYPES[0]


def fp16_base(
    model: Any,
    report: Int8Report,
    keep_scopes: tuple[str, ...] = (),
    keep_patterns: tuple[str, ...] = (),
    keep_from: tuple[str, ...] = (),
) -> tuple[Any, Fp16Report]:
    """The Q/DQ graph `quantize_int8` wrote with its unquantized part in FP16 (the islands as `-p fp16`
    keeps them), the Q/DQ nodes and the quantized ops (`report.quantized`, by name) left FP32."""
    names = {node.name for node in model.graph.node if node.op_type in QUANT_OPS}
    missing = [name for name in report.quantized if name not in names]
    if missing:  # the quantizer keeps the names it is given; a change there would leave them FP16
        raise VitcError(f"the quantized node {missing[0]} is not in the quantized graph: cannot keep it float32")
    return convert_fp16(model, keep_scopes, keep_patterns, keep_from=keep_from, keep_nodes=frozenset(report.quantized))


def calibrated_bytes_per_image(model: Any, images: np.ndarray) -> int:
    """The bytes of the tensors ONNX Runtime calibrates (the float inputs and outputs of MatMul/Gemm/Conv
    that are not weights) for one image, measured by running the first of `images` (a static batch's
    worth, for a file with a static batch) with them as outputs."""
    onnx = lazy_import("onnx")
    weights = {init.name for init in model.graph.initializer}
    names = list(dict.fromkeys(t for n in model.graph.node if n.op_type in QUANT_OPS for t in [*n.input, *n.output]))
    names = [t for t in names if t and t not in weights]
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {o.name for o in probe.graph.output}
    probe.graph.output.extend(onnx.helper.make_empty_tensor_value_info(t) for t in names if t not in known)
    # ORT's calibrator runs the graph as written (optimiser off): the tensors it keeps are that graph's
    session = ort_session(probe, optimize=False, name="the calibrated tensors' probe")
    wanted = [o.name for o in session.get_outputs() if o.name in set(names)]
    (feed,) = session.get_inputs()
    batch = feed.shape[0] if isinstance(feed.shape[0], int) and feed.shape[0] > 0 else 1
    sample = np.resize(images, (batch, *images.shape[1:])).astype(np.float32)  # repeats a set smaller than it
    outputs = session.run(wanted, {feed.name: sample})
    return sum(np.asarray(v).nbytes for v in outputs if np.asarray(v).dtype.kind == "f") // batch


def available_memory() -> int | None:
    """Bytes this process may still allocate: the kernel's MemAvailable, or less under a cgroup (container)
    limit; None where neither can be read."""
    found = []
    try:
        with open("/proc/meminfo") as meminfo:
            found += [int(line.split()[1]) * 1024 for line in meminfo if line.startswith("MemAvailable:")]
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open("/sys/fs/cgroup/memory.max") as limit, open("/sys/fs/cgroup/memory.current") as used:
            cap = limit.read().strip()
            if cap != "max":
                found.append(int(cap) - int(used.read().strip()))
    except (OSError, ValueError):
        pass
    return min(found) if found else None


def check_histogram_memory(model: Any, calib: CalibrationSet, method: str) -> None:
    """ONNX Runtime's histogram calibration (entropy, percentile) keeps every calibrated tensor of every
    image until it builds the histograms: at `vitc export`'s default 512 images that is more than most
    machines hold for a 224 model (docs/benchmarks.md, "INT8 calibration memory"). What would not fit is
    refused in one line, with the count that would, instead of ending in the out-of-memory killer."""
    available = available_memory()
    if available is None:
        return
    per_image = calibrated_bytes_per_image(model, calib.images) * HISTOGRAM_OVERHEAD
    need = per_image * len(calib.images)
    if need > available:
        fits = int(available / per_image)
        fewer = f"--calib-images {fits} or fewer, or " if fits else ""
        raise VitcError(
            f"{method} calibration keeps every calibrated activation of every image in memory: "
            f"{len(calib.images)} images × {per_image / 2**20:.1f} MiB = {need / 2**30:.1f} GiB, and "
            f"{available / 2**30:.1f} GiB are available: use {fewer}--calib-method minmax (running minima "
            "and maxima, whatever the count)"
        )


def fold_weight_quantization(model: Any) -> int:
    """Replace each weight's float initializer → QuantizeLinear by the int8 initializer it computes.

    The values come from ONNX Runtime running those QuantizeLinear nodes, the kernel the float form
    runs, so the DequantizeLinear that follows sees the same int8 tensor either way. Returns the
    number of weights folded.
    """
    onnx = lazy_import("onnx")
    numpy_helper = lazy_import("onnx.numpy_helper")
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    q_nodes = [n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] in inits]
    if not q_nodes:
        return 0
    used = {i for n in q_nodes for i in n.input if i}
    zero_points = {n.output[0]: inits[n.input[2]].data_type for n in q_nodes}
    sub = onnx.helper.make_graph(
        [_copy(n) for n in q_nodes],
        "weights",
        [],
        [onnx.helper.make_tensor_value_info(name, dtype, None) for name, dtype in zero_points.items()],
        [inits[name] for name in used],
    )
    sub_model = onnx.helper.make_model(sub, opset_imports=list(model.opset_import))
    sub_model.ir_version = model.ir_version
    # optimiser off: its constant folding would compute the int8 values in place of the QuantizeLinear kernel
    session = ort_session(sub_model, optimize=False, name="the weights' QuantizeLinear nodes")
    values = session.run(list(zero_points), {})
    kept = [n for n in graph.node if not (n.op_type == "QuantizeLinear" and n.output[0] in zero_points)]
    del graph.node[:]
    graph.node.extend(kept)
    still_used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    live = [t for t in graph.initializer if t.name in still_used]
    del graph.initializer[:]
    graph.initializer.extend(live)
    graph.initializer.extend(numpy_helper.from_array(v, name) for name, v in zip(zero_points, values, strict=True))
    return len(q_nodes)


def _copy(node: Any) -> Any:
    onnx = lazy_import("onnx")
    out = onnx.NodeProto()
    out.CopyFrom(node)
    return out
