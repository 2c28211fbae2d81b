"""PyTorch → ONNX: legacy (TorchScript) exporter, graph clean-up, checker, ONNX Runtime parity.

The legacy exporter (`dynamo=False`) is used on purpose: it lowers attention to the plain
MatMul/Softmax/MatMul pattern TensorRT fuses, names nodes after their module scope
(`/blocks.0/attn/MatMul`), which the precision passes and `--explain` rely on, and at opset 16
decomposes LayerNorm into ReduceMean/Sub/Pow/Sqrt/Div for TensorRT 8.5.
"""

from __future__ import annotations

import io
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from vitc._lazy import lazy_import, torch_before
from vitc._ort import ort_session
from vitc.artifacts.batch import BatchRange
from vitc.errors import VitcError, first_line

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
BATCH_DIM = "batch"


def read_onnx(path: Any, external_data: bool = True) -> Any:
    """Load an ONNX file a user handed us; any parse failure is a one-line VitcError (no torch needed).

    Protobuf parses any bytes without a required field, zero bytes included, as a model with no graph
    (`vitc check` called an empty file "OK for TensorRT 10 (0 nodes)"): a model without a graph is refused."""
    onnx = lazy_import("onnx")
    try:
        model = onnx.load(str(path), load_external_data=external_data)
    except Exception as exc:  # protobuf raises DecodeError, ValueError, ... on bad bytes
        raise VitcError(f"{path}: not a readable ONNX model ({type(exc).__name__})") from exc
    if not model.HasField("graph"):
        empty = "empty: " if Path(path).stat().st_size == 0 else ""
        raise VitcError(f"{path} is not an ONNX model ({empty}no graph)")
    return model


def _mend_sdpa_scale(torch: Any) -> None:
    """torch 2.4's exporter fails on `scaled_dot_product_attention(..., scale=s)` (vitc passes it in every
    family): it reads the scale as a Python float and cannot make a Sqrt of it (pytorch#135594, fixed in
    2.5). Its own symbolic, re-registered with the scale behind a Cast to double (what it is already), runs
    2.5's code path: the same Sqrt of the scale, folded to the same float32 constant."""
    if not torch_before(2, 5):
        return
    from torch.onnx import symbolic_helper, symbolic_opset14

    original = symbolic_opset14.scaled_dot_product_attention

    def sdpa(g: Any, query: Any, key: Any, value: Any, mask: Any, dropout: Any, causal: Any, scale: Any) -> Any:
        if not symbolic_helper._is_none(scale):
            scale = g.op("Cast", scale, to_i=11)  # DOUBLE; no longer an onnx::Constant, 2.4 leaves it a value
        return original(g, query, key, value, mask, dropout, causal, scale)

    torch.onnx.register_custom_op_symbolic("aten::scaled_dot_product_attention", sdpa, 14)


def export_onnx(model: Any, input_size: tuple[int, int, int], opset: int, batch: BatchRange) -> Any:
    """Trace `model` to an onnx.ModelProto with input `input` (B, C, H, W) and output `logits`."""
    torch = lazy_import("torch")
    onnx = lazy_import("onnx")
    _mend_sdpa_scale(torch)
    x = torch.zeros(batch.opt, *input_size)
    dynamic_axes = {INPUT_NAME: {0: BATCH_DIM}, OUTPUT_NAME: {0: BATCH_DIM}} if batch.dynamic else None
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                model.eval(),
                (x,),
                buf,
                dynamo=False,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes=dynamic_axes,
                do_constant_folding=True,
            )
        except Exception as exc:  # the exporter raises many types; one line for the user
            raise VitcError(f"ONNX export failed at opset {opset}: {first_line(exc)}") from exc
    return onnx.load_from_string(buf.getvalue())


def clean(model: Any) -> tuple[Any, dict[str, int]]:
    """Constant folding and dead-node removal (onnxscript's optimizer), then shape inference.

    Node names survive folding, so scopes stay usable. Returns the model and node counts before/after.
    """
    onnx = lazy_import("onnx")
    optimizer = lazy_import("onnxscript.optimizer")
    before = len(model.graph.node)
    names = {n.output[0]: n.name for n in model.graph.node if n.output}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = optimizer.optimize(model)
    known = set(names.values())
    for node in model.graph.node:  # the optimizer renames nodes it rebuilds; restore the scoped name
        if node.name not in known and node.output and node.output[0] in names:
            node.name = names[node.output[0]]
    _drop_identities(model)
    model = onnx.shape_inference.infer_shapes(model, data_prop=True)
    return model, {"nodes_before": before, "nodes_after": len(model.graph.node)}


def _drop_identities(model: Any) -> None:
    """Remove Identity nodes not feeding a graph output (the exporter leaves weight aliases)."""
    graph = model.graph
    outputs = {o.name for o in graph.output}
    rename = {}
    keep = []
    for node in graph.node:
        if node.op_type == "Identity" and node.output[0] not in outputs:
            rename[node.output[0]] = rename.get(node.input[0], node.input[0])
        else:
            keep.append(node)
    for node in keep:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
    del graph.node[:]
    graph.node.extend(keep)


def check_model(model: Any) -> None:
    onnx = lazy_import("onnx")
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:
        raise VitcError(f"onnx.checker rejected the graph: {first_line(exc)}") from exc


def run_batches(sess: Any, images: np.ndarray, batch: BatchRange, outputs: list[str] | None = None) -> list[np.ndarray]:
    """Run `images` through `sess` in chunks the graph accepts (padding the last chunk of a static batch)."""
    inp = sess.get_inputs()[0]
    dtype = np.float16 if "float16" in inp.type else np.float32
    step = batch.max
    results: list[list[np.ndarray]] = []
    for start in range(0, len(images), step):
        chunk = images[start : start + step].astype(dtype)
        n = len(chunk)
        if not batch.dynamic and n < step:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], step - n, axis=0)])
        try:
            outs = sess.run(outputs, {inp.name: chunk})
        except Exception as exc:  # a kernel failing at run time, as at load time: one line
            raise VitcError(
                f"ONNX Runtime failed running the graph on a batch of {len(chunk)}: {first_line(exc)}"
            ) from exc
        results.append([o[:n].astype(np.float32) for o in outs])
    return [np.concatenate(parts) for parts in zip(*results)]


def parity(model: Any, torch_model: Any, images: np.ndarray, batch: BatchRange) -> float:
    """max |Δ logits| between ONNX Runtime (optimisations off) and PyTorch on `images`."""
    torch = lazy_import("torch")
    (ort_logits,) = run_batches(ort_session(model, optimize=False), images, batch)  # the file as written
    with torch.no_grad():
        ref = torch_model(torch.from_numpy(images)).numpy()
    return float(np.abs(ort_logits - ref).max())


def module_scope(name: str) -> str:
    """The node-name prefix the legacy exporter gives a module: 'stage0.blocks.1' → '/stage0/blocks.1/'."""
    return "/" + re.sub(r"/(\d+)(?=/|$)", r".\1", name.replace(".", "/")) + "/"


def classifier_scopes(model: Any) -> tuple[str, ...]:
    """The node-name scopes of what computes the logits (the zoo's `classifier_modules`: `head`, and
    SP-ViT's `aux_head`), which FP16 keeps in float32 with every node after them and INT8 leaves float."""
    from vitc.models.layers import classifier_of

    return tuple(module_scope(name) for name in classifier_of(model))


def exported_by() -> dict[str, str]:
    """The releases an export was written with (an int8 file's producer is onnxruntime's quantizer, which
    names no torch): what reproduces it, and what a difference between two exports may come from."""
    from vitc import __version__

    versions = {"vitc": __version__}
    for module in ("torch", "onnx", "onnxruntime"):
        versions[module] = str(lazy_import(module).__version__)
    return versions
