"""Choose GPSA's and SP-SA's formulation on the device that trains, by measuring each one.

Every formulation of a module computes the same function (tests/models/test_attn_impl.py), but
which is fastest depends on the device: on the CPUs of docs/benchmarks.md `fused` won; on issue
20's H200 the reference form beat it. `choose_formulations` runs every candidate on one block of
each kind, on the model's device, at the run's batch and precision (forward and backward, the
gradients taken with torch.autograd.grad so no `.grad` changes), interleaving the candidates
round by round, and keeps the fastest one that

* is exact here: its output within 1e-5 and every gradient within 1e-4 (relative, as
  `_max_rel_diff` defines it) of the reference formulation's on this device in strict fp32, so a
  kernel that is wrong on this GPU and torch is refused rather than trained with, and never
  chosen: where `fused` itself fails, the fastest that passed runs (`reference` at least);
* keeps at most 5% more activations for the backward than `fused`, the default (a formulation
  may build its batch-independent positional tables differently; what grows with the batch may not);
* beats `fused` by more than `MARGIN`, so that noise does not move a run off the default.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from vitc._numerics import strict_fp32
from vitc.errors import named_first_line
from vitc.models.convit import GPSA
from vitc.models.spvit import SPSA

__all__ = ["MARGIN", "Trial", "apply_choices", "choose_formulations", "describe", "pick", "tunable_groups"]

DEFAULT = "fused"
MARGIN = 0.03  # a candidate must be 3% faster than `fused` to replace it
OUTPUT_TOL, GRAD_TOL = 1e-5, 1e-4
# A gradient whose largest entry is below this fraction of the block's largest gradient is zero up to
# rounding (GPSA's pos_proj.bias, ~1e-7 of it); the real ones of these blocks measure 5e-3 and up.
NEGLIGIBLE = 1e-3
FALLBACK = "reference"  # where no formulation passed: the published form
MEMORY_SLACK = 1.05  # the batch-independent positional tables; CUDA rounds blocks up to 512 bytes
TUNABLE = (GPSA, SPSA)


@dataclass
class Trial:
    """One formulation on one block: its time, the activations it keeps, or why it cannot be used."""

    impl: str
    ms: float | None = None  # median forward + backward at the run's batch
    saved_mib: float | None = None  # activations kept for the backward (and the output)
    max_rel_diff: float | None = None  # against the reference formulation, strict fp32
    error: str | None = None


def tunable_groups(model: nn.Module) -> dict[tuple[str, int, int, int], list[nn.Module]]:
    """GPSA/SP-SA modules grouped by (kind, tokens, width, heads): one measurement serves a group."""
    groups: dict[tuple[str, int, int, int], list[nn.Module]] = {}
    for module in model.modules():
        if isinstance(module, TUNABLE):
            tokens = module.rel_indices.shape[1]
            key = (type(module).__name__, tokens, module.num_heads * module.head_dim, module.num_heads)
            groups.setdefault(key, []).append(module)
    return groups


def choose_formulations(
    model: nn.Module,
    batch: int,
    cast: AbstractContextManager[Any] | None = None,
    rounds: int = 5,
    warmup: int = 2,
    impls: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Set every GPSA/SP-SA module's `attn_impl` to the one measured best here; return the record.

    `cast` is the run's autocast context (entered once per call, as the training loop does);
    `impls` limits the candidates (the default is always measured: it is what others must beat).
    """
    record = []
    for (kind, tokens, dim, heads), modules in tunable_groups(model).items():
        block = modules[0]
        candidates = [i for i in block.ATTN_IMPLS if impls is None or i in impls or i == DEFAULT]
        trials = _measure(block, candidates, batch, cast or nullcontext(), rounds, warmup)
        chosen = pick(trials)
        for module in modules:
            module.attn_impl = chosen
        row = {"module": kind, "tokens": tokens, "width": dim, "heads": heads, "blocks": len(modules)}
        record.append({**row, "batch": batch, "chosen": chosen, "trials": [asdict(t) for t in trials]})
    return record


def apply_choices(model: nn.Module, record: Sequence[dict[str, Any]]) -> None:
    """Set the formulations a record chose (another process's, under DDP) on this model's modules."""
    groups = tunable_groups(model)
    for row in record:
        for module in groups[(row["module"], row["tokens"], row["width"], row["heads"])]:
            module.attn_impl = row["chosen"]


def pick(trials: Sequence[Trial]) -> str:
    """The fastest usable trial that beats the default by MARGIN, keeping at most MEMORY_SLACK × its activations.

    A trial that failed (inexact here, or it raised) is never chosen, the default included: without
    it, the fastest that passed runs, whatever its activations, and `reference` where none did.
    """
    passed = [t for t in trials if t.error is None and t.ms is not None and t.saved_mib is not None]
    default = next((t for t in passed if t.impl == DEFAULT), None)
    if default is None:
        return min(passed, key=_ms).impl if passed else FALLBACK
    usable = [
        t for t in passed if t.saved_mib <= default.saved_mib * MEMORY_SLACK and t.ms < default.ms * (1 - MARGIN)
    ]  # fmt: skip
    return min(usable, key=_ms).impl if usable else DEFAULT


def _ms(trial: Trial) -> float:
    return trial.ms if trial.ms is not None else float("inf")


def describe(row: dict[str, Any]) -> str:
    """One line per group: what was chosen and what each candidate measured."""
    parts = []
    for t in row["trials"]:
        if t["error"]:
            parts.append(f"{t['impl']} unusable ({t['error']})")
        else:
            parts.append(f"{t['impl']} {t['ms']:.2f} ms, {t['saved_mib']:.0f} MiB")
    side = int(row["tokens"] ** 0.5)
    chosen = row["chosen"]
    if chosen != DEFAULT and any(t["impl"] == DEFAULT and t["error"] for t in row["trials"]):
        chosen += f", as {DEFAULT} failed here"
    return f"{row['module']} {side}×{side} ×{row['blocks']}: {chosen} ({'; '.join(parts)})"


# -- measuring ---------------------------------------------------------------------------------------
def _measure(
    block: nn.Module, impls: Sequence[str], batch: int, cast: AbstractContextManager[Any], rounds: int, warmup: int
) -> list[Trial]:
    before = block.attn_impl
    trials = {impl: Trial(impl) for impl in impls}
    try:
        reference = _outputs(block, "reference", _small_input(block))
        x = torch.randn(batch, *_token_shape(block), device=_device(block), requires_grad=True)
        steps: dict[str, Callable[[], None]] = {}
        for impl, trial in trials.items():
            try:
                output_diff, grad_diff = _max_rel_diff(_outputs(block, impl, _small_input(block)), reference)
                trial.max_rel_diff = max(output_diff, grad_diff)
                if output_diff > OUTPUT_TOL or grad_diff > GRAD_TOL:
                    trial.error = f"differs from the reference by {trial.max_rel_diff:.1e}"
                    continue
                steps[impl] = _step(block, impl, x, cast)
                for _ in range(warmup):  # the first calls compile (flex), pick kernels, make workspaces
                    steps[impl]()
                trial.saved_mib = _activation_bytes(block, impl, x, cast) / 2**20
            except Exception as exc:  # a formulation this device or torch cannot run is not a candidate
                trial.error = named_first_line(exc, limit=120)
                steps.pop(impl, None)
        times: dict[str, list[float]] = {impl: [] for impl in steps}
        for _ in range(rounds):  # round-robin: load from other processes hits every candidate alike
            for impl, step in steps.items():
                _sync(x.device)
                started = time.perf_counter()
                step()
                _sync(x.device)
                times[impl].append(time.perf_counter() - started)
        for impl, samples in times.items():
            trials[impl].ms = statistics.median(samples) * 1e3
    finally:
        block.attn_impl = before
    return list(trials.values())


def _device(block: nn.Module) -> torch.device:
    return next(block.parameters()).device


def _token_shape(block: nn.Module) -> tuple[int, int]:
    return block.rel_indices.shape[1], block.num_heads * block.head_dim


def _small_input(block: nn.Module) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, *_token_shape(block), generator=generator)
    return x.to(_device(block)).requires_grad_(True)


def _params(block: nn.Module) -> list[torch.Tensor]:
    return [p for p in block.parameters() if p.requires_grad]


def _outputs(block: nn.Module, impl: str, x: torch.Tensor) -> list[torch.Tensor]:
    """The block's output and the gradients of a fixed loss w.r.t. x and every parameter, fp32."""
    block.attn_impl = impl
    with strict_fp32():
        out = block(x)
        weights = torch.linspace(-1, 1, out.numel(), device=out.device).view_as(out)
        grads = torch.autograd.grad((out * weights).sum(), [x, *_params(block)], allow_unused=True)
    return [out.detach(), *[g if g is not None else torch.zeros(()) for g in grads]]


def _max_rel_diff(got: list[torch.Tensor], want: list[torch.Tensor]) -> tuple[float, float]:
    """(output, worst gradient) differences, each the largest entry's error over a scale.

    The output's scale, and a gradient's, is its reference's largest entry: "within 1e-4 relative"
    means max|got - want| <= 1e-4 × max|want| for each parameter (and the input) separately. A gradient
    whose max|want| is below NEGLIGIBLE × the block's largest gradient is zero in exact arithmetic
    (GPSA's pos_proj.bias, which the softmax cancels) and its entries rounding noise, which grows with
    the grid: its scale is the block's largest gradient instead, so it may differ by up to the
    tolerance of that, as any entry of the block's gradients may, but not more.
    """
    scale = max(w.abs().max().item() for w in want[1:])
    output = (got[0] - want[0]).abs().max().item() / max(want[0].abs().max().item(), 1e-30)
    grads = []
    for g, w in zip(got[1:], want[1:], strict=True):
        own = w.abs().max().item()
        grads.append((g - w).abs().max().item() / max(own if own >= NEGLIGIBLE * scale else scale, 1e-30))
    return output, max(grads, default=0.0)


def _step(block: nn.Module, impl: str, x: torch.Tensor, cast: AbstractContextManager[Any]) -> Callable[[], None]:
    params = _params(block)

    def step() -> None:
        block.attn_impl = impl
        with cast:
            out = block(x)
        torch.autograd.grad(out.float().sum(), [x, *params], allow_unused=True)

    return step


def _activation_bytes(block: nn.Module, impl: str, x: torch.Tensor, cast: AbstractContextManager[Any]) -> int:
    """Bytes a training forward keeps alive for the backward (with its output).

    On CUDA the allocator's count while the graph is alive: the truth, whatever a kernel saves. On
    a CPU, the distinct storages autograd saves (parameters, buffers and the input left out).
    """
    block.attn_impl = impl
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)
        start = torch.cuda.memory_allocated(x.device)
        with cast:
            out = block(x)
        torch.cuda.synchronize(x.device)
        kept = torch.cuda.memory_allocated(x.device) - start
        del out
        return kept
    skip = {t.untyped_storage().data_ptr() for t in [x, *block.parameters(), *block.buffers()]}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in skip:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), cast:
        out = block(x)
    return sum(saved.values()) + out.numel() * out.element_size()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
