"""Per-target pipelines and `compile_model`.

Every target runs static_gpsa, static_spatial_prior, fold_cvt_projections and fold_stem_batchnorm
(pure wins: less work, fewer parameters); they differ in the GPSA lowering, in whether plain
attention goes to SDPA, and in whether bias-free qkv GEMMs get a zero bias, chosen by measurement
(224×224, 2 CPU cores; figures and commands in docs/benchmarks.md):

* cpu (PyTorch eager): GPSA "eager" (the sdpa lowering's separable positional term in fewer kernel
  calls) + static_attention, qkv with a zero bias. "mix" materialises the B·H·N² probabilities,
  which costs memory traffic as the batch grows (it loses clearly at batch 8), and wins at batch 1
  by too little to pay for that.
* onnx (ONNX Runtime CPU): GPSA "sdpa", plain attention left as it is (the exporter decomposes
  SDPA into the same MatMul/Softmax anyway). Exported convit_tiny runs as fast with either
  lowering, and the sdpa file is smaller (two S×S tables per block instead of an N×N one), the
  same graph the tensorrt target builds.
* cuda (PyTorch on a GPU): GPSA "eager" + static_attention, no zero bias (cuBLAS fuses a bias
  into the GEMM epilogue anyway). The content term is SDPA in every lowering, so flash kernels see
  it either way; what differs is the positional term's kernel launches, which a small model's
  steps on a big GPU wait for: "eager" dispatches fewer operators than "sdpa", and "heads" fewer
  still for more FLOPs per GPSA block (docs/benchmarks.md, "Compiled ConViT-Ti's operators"). Its
  GPU time is not measured yet: docs/inference_ablation.py (gpu_check's `inference`) times it
  beside the other two.
* tensorrt: GPSA "sdpa" + static_attention, so that TensorRT's MHA fusion sees a standard attention
  and the file holds two S×S tables per block, not an (H·S, S, S) one (a design choice, not yet
  measured on a GPU). No zero bias.

CvT's k and v convs (fold_cvt_projections `merge_kv`): merged into one grouped conv with channel
multiplier 2 for cpu and onnx, two plain depthwise convs for cuda and tensorrt, because compiled
cvt_13 ran slower than uncompiled on an H200 and the merged conv is the likely cause: a multiplier-2
depthwise conv is outside the plain depthwise case that cuDNN's fp16 kernels and TensorRT's tactics
are tuned for, and its interleaved output makes k and v strided slices that are copied before their
Linears (inferred, not measured apart). On CPU merged and separate tie, so the merge stays for cpu
and onnx as it was. Figures and commands: docs/benchmarks.md, "PyTorch inference on CUDA: CUDA
graphs, CvT's k/v convs, torch.compile"; change these choices only with docs/inference_ablation.py's.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

import vitc.compile.fold_cvt_projections
import vitc.compile.fold_stem_batchnorm
import vitc.compile.static_attention
import vitc.compile.static_gpsa
import vitc.compile.static_spatial_prior  # noqa: F401  (the imports register the passes)
from vitc._modules import eval_mode
from vitc._numerics import strict_fp32
from vitc.compile._base import PASSES
from vitc.compile.report import TOLERANCE, CompileReport, PassRow
from vitc.errors import CheckFailed, VitcError

__all__ = ["PIPELINES", "TARGETS", "check_inputs", "compile_model", "strict_fp32"]

Step = tuple[str, dict[str, Any]]


def _fused_attention(gpsa: str, qkv_bias: bool, merge_kv: bool) -> tuple[Step, ...]:
    return (
        ("static_gpsa", {"lowering": gpsa, "qkv_bias": qkv_bias}),
        ("static_spatial_prior", {"qkv_bias": qkv_bias}),
        ("fold_cvt_projections", {"merge_kv": merge_kv}),
        ("fold_stem_batchnorm", {}),
        ("static_attention", {"qkv_bias": qkv_bias}),
    )


PIPELINES: dict[str, tuple[Step, ...]] = {
    "cpu": _fused_attention("eager", qkv_bias=True, merge_kv=True),
    "cuda": _fused_attention("eager", qkv_bias=False, merge_kv=False),
    "onnx": (
        ("static_gpsa", {"lowering": "sdpa"}),
        ("static_spatial_prior", {}),
        ("fold_cvt_projections", {"merge_kv": True}),
        ("fold_stem_batchnorm", {}),
    ),
    "tensorrt": _fused_attention("sdpa", qkv_bias=False, merge_kv=False),
}
TARGETS = tuple(PIPELINES)
# One image keeps `vitc compile convit_base` quick on 2 cores; tests/compile checks every zoo model at
# batch 3 (and export/trace at batch 5), which is where a rewrite that mixed batch elements would show.
CHECK_BATCH = 1
CHECK_SEED = 0


def check_inputs(
    input_size: tuple[int, int, int], batch: int = CHECK_BATCH, device: torch.device | None = None
) -> torch.Tensor:
    """The fixed random inputs (standard normal, seed 0) on which compile_model measures |Δ|."""
    generator = torch.Generator().manual_seed(CHECK_SEED)
    return torch.randn(batch, *input_size, generator=generator).to(device)


def _float_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of the model's floating parameters (float32 for a model without any)."""
    for tensor in model.parameters():
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.float32


def _device(model: nn.Module) -> torch.device:
    for tensor in list(model.parameters()) + list(model.buffers()):
        return tensor.device
    return torch.device("cpu")


def _input_size(model: nn.Module, input_size: tuple[int, int, int] | None) -> tuple[int, int, int]:
    if input_size is None:
        cfg = getattr(model, "vitc_cfg", None)
        if cfg is None:
            raise VitcError("pass input_size: this model was not built by vitc.create_model and carries no config")
        input_size = cfg.input_size
    if len(input_size) != 3:
        raise VitcError(f"input_size must be (C, H, W), got {tuple(input_size)}")
    return (int(input_size[0]), int(input_size[1]), int(input_size[2]))


def _max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max())


def _steps(target: str, pass_options: Mapping[str, Mapping[str, Any] | None] | None) -> list[Step]:
    """`target`'s pipeline with `pass_options` applied: arguments merged into a pass's, None drops the pass."""
    if target not in PIPELINES:
        raise VitcError(f"unknown compile target {target!r} (choose one of: {', '.join(TARGETS)})")
    options = dict(pass_options or {})
    unknown = sorted(set(options) - {name for name, _ in PIPELINES[target]})
    if unknown:
        raise VitcError(f"pass_options names {', '.join(unknown)}, not in the {target} pipeline")
    steps = []
    for name, kwargs in PIPELINES[target]:
        if name in options and options[name] is None:
            continue
        steps.append((name, {**kwargs, **(options.get(name) or {})}))
    return steps


@torch.no_grad()
def compile_model(
    model: nn.Module,
    input_size: tuple[int, int, int] | None = None,
    target: str = "cpu",
    check: bool = True,
    pass_options: Mapping[str, Mapping[str, Any] | None] | None = None,
) -> tuple[nn.Module, CompileReport]:
    """Run `target`'s pipeline on a deep copy of `model`; return the eval-mode result and a report.

    With `check`, the original and the model after every pass that fired run on the same random
    input (one image) and the report records max |Δ logits|; a final max |Δ| above 1e-4 raises
    VitcError. A bfloat16 or float16 model is rewritten and checked in float32 (its tables computed
    from its weights in full precision), and returned in its own dtype. `model` itself is left as it
    was (its training flags are restored). `pass_options`
    varies the pipeline for measurements, e.g. `{"fold_cvt_projections": {"merge_kv": True},
    "static_attention": None}` (None leaves that pass out).
    """
    if not isinstance(model, nn.Module):  # `vitc compile NAME` takes a name; this takes the model
        raise VitcError(
            f"compile_model takes a model (vitc.create_model or vitc.load_model gives one), not "
            f"{type(model).__name__} {model!r:.60}"
        )
    steps = _steps(target, pass_options)
    start = time.perf_counter()
    size = _input_size(model, input_size)
    report = CompileReport(model=str(getattr(model, "vitc_name", type(model).__name__)), target=target, input_size=size)
    dtype = _float_dtype(model)
    if dtype != torch.float32:  # a bf16/fp16 model: rewritten and checked in float32, then cast back
        model = copy.deepcopy(model).float()
    compiled = copy.deepcopy(model).eval()
    reference = None
    inputs = None
    with strict_fp32():  # the check measures the rewrite, not the user's TF32 or autocast settings
        if check:
            inputs = check_inputs(size, device=_device(model))
            report.check_batch = inputs.shape[0]
            with eval_mode(model):
                reference = model(inputs)
        delta: float | None = 0.0 if check else None
        for name, kwargs in steps:
            fired = PASSES[name](**kwargs)(compiled)
            if check and fired:
                assert reference is not None
                delta = _max_abs_diff(compiled(inputs), reference)
            report.rows.append(PassRow(name, fired, delta))
    compiled.eval().to(dtype)
    compiled.vitc_compiled = target  # its static tables are no checkpoint's weights: save_checkpoint refuses it
    report.max_abs_diff = delta  # the model after the last pass that fired, vs the original: no extra forward
    report.seconds = time.perf_counter() - start
    if report.max_abs_diff is not None and not report.max_abs_diff <= TOLERANCE:  # also catches NaN
        raise CheckFailed(
            f"compiling {report.model} for {target} changed the logits by {report.max_abs_diff:.3g} "
            f"(> {TOLERANCE:g}); per pass: "
            + ", ".join(f"{r.name}={r.max_abs_diff:.3g}" for r in report.rows if r.max_abs_diff is not None)
        )
    return compiled, report
