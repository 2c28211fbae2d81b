"""`--explain`: compare block outputs of the PyTorch reference and the ONNX artifact, name the first that drifts.

Block outputs are found on both sides by module scope: forward hooks on modules named `blocks.N`
(`stageS.blocks.N` for CvT) in PyTorch, and in ONNX the output of the last node of the scope
`/blocks.N/` (the residual Add), exposed as an extra graph output for one ONNX Runtime run.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from vitc._lazy import lazy_import
from vitc._ort import ort_session
from vitc.artifacts import BatchRange
from vitc.export.onnx_export import module_scope, run_batches

BLOCK_RE = re.compile(r"(^|\.)blocks\.\d+$")
THRESHOLD = 0.99


def block_names(torch_model: Any) -> list[str]:
    return [name for name, _ in torch_model.named_modules() if BLOCK_RE.search(name)]


def _torch_blocks(torch_model: Any, names: list[str], images: np.ndarray) -> dict[str, np.ndarray]:
    torch = lazy_import("torch")
    captured: dict[str, Any] = {}
    modules = dict(torch_model.named_modules())
    hooks = [modules[n].register_forward_hook(lambda _m, _i, out, n=n: captured.__setitem__(n, out)) for n in names]
    try:
        with torch.no_grad():
            torch_model(torch.from_numpy(images))
    finally:
        for h in hooks:
            h.remove()
    return {n: captured[n].float().numpy() for n in names if n in captured}


def _onnx_block_tensors(model: Any, names: list[str]) -> dict[str, str]:
    found = {}
    for name in names:
        scope = module_scope(name)
        last = [n for n in model.graph.node if n.name.startswith(scope) and n.output]
        if last:
            found[name] = last[-1].output[0]
    return found


def explain(model: Any, torch_model: Any, images: np.ndarray, batch: BatchRange) -> dict[str, Any]:
    """Per-block cosine similarity and max |Δ| of artifact vs reference; `first_bad` is the first below 0.99."""
    onnx = lazy_import("onnx")
    names = block_names(torch_model)
    ref = _torch_blocks(torch_model, names, images)
    tensors = _onnx_block_tensors(model, [n for n in names if n in ref])
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe = onnx.shape_inference.infer_shapes(probe)
    known = {o.name for o in probe.graph.output}
    types = {vi.name: vi for vi in probe.graph.value_info}
    for tensor in tensors.values():
        if tensor not in known and tensor in types:
            probe.graph.output.append(types[tensor])
            known.add(tensor)
    wanted = [t for t in tensors.values() if t in known]
    outs = dict(zip(wanted, run_batches(ort_session(probe), images, batch, wanted), strict=True))
    rows = []
    for name, tensor in tensors.items():
        if tensor not in outs:
            continue
        a, b = ref[name].reshape(len(images), -1).astype(np.float64), outs[tensor].reshape(len(images), -1)
        cos = np.sum(a * b, 1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
        rows.append({"block": name, "cosine": float(cos.mean()), "max_abs_diff": float(np.abs(a - b).max())})
    first = next((r["block"] for r in rows if r["cosine"] < THRESHOLD), None)
    return {"threshold": THRESHOLD, "blocks": rows, "first_bad": first}
