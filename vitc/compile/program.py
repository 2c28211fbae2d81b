"""The compiled model as a `torch.export` program with a dynamic batch, for PyTorch deployments.

Torch-TensorRT (`torch_tensorrt.dynamo.compile`), `torch.compile` and AOTInductor take an
ExportedProgram as input. The program is traced at batch 2 (batch 1 would be specialised) with the
batch dimension symbolic, then checked at batch 1 and 3 against the module it was traced from.
"""

from __future__ import annotations

import inspect
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vitc._io import atomic_write
from vitc._lazy import torch_before
from vitc.artifacts.program import PROGRAM_RECORD
from vitc.compile._exporting import exporting
from vitc.compile.report import TOLERANCE
from vitc.errors import VitcError

CHECK_BATCHES = (1, 3)


def export_with_free_batch(model: nn.Module, example: torch.Tensor) -> Any:
    """torch.export `model` at `example` with dim 0 symbolic (any batch from 1).

    A guard the shape solver cannot prove becomes a runtime assert in the program rather than an
    export error: torch 2.11's solver cannot show min(192·B, 1536·B) = 192·B for B ≥ 1, a guard that
    the contiguity check of GPSA's batch-inner copy ("eager" lowering: the cpu and cuda targets)
    adds, so it refused an export that torch 2.13 makes. A torch without the switch exports as before.
    """
    batch = torch.export.Dim("batch", min=1, **_batch_max())
    extra = {}
    if "prefer_deferred_runtime_asserts_over_guards" in inspect.signature(torch.export.export).parameters:
        extra["prefer_deferred_runtime_asserts_over_guards"] = True
    with exporting():
        return torch.export.export(model, (example,), dynamic_shapes=({0: batch},), **extra)


def _batch_max() -> dict[str, int]:
    """torch 2.5 to 2.7 give a Dim without max the bound int_oo, and their slicing guards the batch against
    sys.maxsize (the end of `x[:, 0]`'s full slice), so every export in the zoo failed ("not all values of
    batch satisfy ... != 9223372036854775807"). There the batch is bounded at torch 2.4's default, which
    proves the guard; 2.8 to 2.13 (2.8, 2.9, 2.10, 2.11 and 2.13 run) keep int_oo and pass."""
    return {"max": sys.maxsize - 1} if torch_before(2, 8) else {}


@torch.no_grad()
def program_meta(
    model: nn.Module, class_names: list[str] | None = None, compile_record: dict[str, Any] | None = None
) -> dict[str, Any]:
    """What a .pt2 says of itself (`vitc info`, a deployment reading it), as an export's manifest says it, each
    fact once (mean and std in `preprocess`): the model, its arguments, input size, classes, preprocessing, and
    how `compile_model` rewrote it."""
    from vitc.models import get_model_cfg

    cfg = get_model_cfg(model)
    if compile_record is None and getattr(model, "vitc_compiled", None) is not None:
        compile_record = {"target": model.vitc_compiled}  # compile_model's report was not kept with the model
    return {
        "model": getattr(model, "vitc_name", type(model).__name__),
        "args": dict(getattr(model, "vitc_args", {})),
        "input_size": list(cfg.input_size),
        "class_names": class_names,
        "preprocess": cfg.preprocess.to_record(),
        "compile": compile_record,
    }


def export_program(
    model: nn.Module,
    input_size: tuple[int, int, int],
    path: str | os.PathLike[str],
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """torch.export `model` (eval) with a dynamic batch, save it to `path` with `meta` (by default
    `program_meta` of the model, its class names those it was loaded with); return the check record."""
    meta = meta if meta is not None else program_meta(model, getattr(model, "vitc_class_names", None))
    model = model.eval()
    example = torch.randn(2, *input_size, generator=torch.Generator().manual_seed(0))
    try:
        program = export_with_free_batch(model, example)
    except Exception as exc:  # torch.export reports untraceable code with many exception types
        raise VitcError(f"torch.export could not trace the compiled model: {type(exc).__name__}: {exc}") from exc
    exported = program.module()
    diffs = {}
    for size in CHECK_BATCHES:
        x = torch.randn(size, *input_size, generator=torch.Generator().manual_seed(size))
        with torch.no_grad():  # a comparison: no graph kept (torch warned of a scalar that requires grad)
            diffs[str(size)] = float((exported(x) - model(x)).abs().max())
    worst = max(diffs.values())
    if worst > TOLERANCE:
        raise VitcError(f"the exported program differs from the compiled model by {worst:.2e} (> {TOLERANCE:g})")
    record = {
        "file": Path(path).name,
        "input": ["batch", *input_size],
        "batch_min": 1,
        "checked_batches": list(CHECK_BATCHES),
        "max_abs_diff_vs_compiled": diffs,
        "torch": torch.__version__,
    }
    with atomic_write(path) as tmp, open(tmp, "wb") as handle:  # a handle: the temp name does not end in .pt2
        torch.export.save(program, handle, extra_files={PROGRAM_RECORD: json.dumps({**meta, "export": record})})
    return record


def load_program(path: str | os.PathLike[str]) -> tuple[Any, dict[str, Any]]:
    """The ExportedProgram in `path` and the vitc record saved with it."""
    extra = {PROGRAM_RECORD: ""}
    program = torch.export.load(str(path), extra_files=extra)
    return program, json.loads(extra[PROGRAM_RECORD] or "{}")
