"""`--explain` names the first block whose ONNX output drifts from PyTorch's.

The fp32 export of the session's convit_micro (2 blocks) is faithful; scaling the weights of one
block inside the ONNX by -8 makes that block, and every block after it, drift. `explain` must name the
perturbed one: the first, not merely one that drifts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
from onnx import numpy_helper  # noqa: E402

from vitc.artifacts import BatchRange  # noqa: E402
from vitc.export.explain import THRESHOLD, explain  # noqa: E402


@pytest.fixture(scope="module")
def faithful(exports: dict, trained_ckpt: Path) -> tuple[Any, Any, np.ndarray]:
    """(the fp32 ONNX, the PyTorch model it came from, 8 input images)."""
    from vitc.checkpoint import read_checkpoint

    model, _meta = read_checkpoint(trained_ckpt)
    images = np.random.default_rng(0).standard_normal((8, 3, 32, 32)).astype(np.float32)
    return onnx.load(str(exports["fp32"].onnx_path)), model.eval(), images


def perturb_block(proto: Any, block: int, factor: float = -8.0) -> Any:
    """A copy of `proto` whose MatMul/Gemm weights inside /blocks.<block>/ are multiplied by `factor`."""
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    scope = f"/blocks.{block}/"
    weights = {
        name
        for node in out.graph.node
        if node.name.startswith(scope) and node.op_type in ("MatMul", "Gemm")
        for name in node.input
    }
    scaled = 0
    for tensor in out.graph.initializer:
        if tensor.name in weights:
            tensor.CopyFrom(numpy_helper.from_array(factor * numpy_helper.to_array(tensor), tensor.name))
            scaled += 1
    assert scaled >= 2, f"no weights found in {scope}"
    return out


def test_a_faithful_file_has_no_bad_block(faithful) -> None:
    proto, model, images = faithful
    report = explain(proto, model, images, BatchRange(1, 4, 8))
    assert [row["block"] for row in report["blocks"]] == ["blocks.0", "blocks.1"]
    assert report["first_bad"] is None and report["threshold"] == THRESHOLD
    assert all(row["cosine"] > 0.9999 and row["max_abs_diff"] < 1e-3 for row in report["blocks"])


@pytest.mark.parametrize("block", [0, 1])
def test_the_perturbed_block_is_named(faithful, block: int) -> None:
    proto, model, images = faithful
    report = explain(perturb_block(proto, block), model, images, BatchRange(1, 4, 8))
    cosines = {row["block"]: row["cosine"] for row in report["blocks"]}
    assert report["first_bad"] == f"blocks.{block}", cosines
    assert all(cosines[f"blocks.{b}"] > 0.9999 for b in range(block))  # upstream of it: untouched
    assert all(cosines[f"blocks.{b}"] < THRESHOLD for b in range(block, 2))  # it and what follows drift
