"""The device and precision a run trains on, and what it says when the GPU fails."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import torch

from vitc._device import cpu_cores
from vitc._run_layout import RunLayout
from vitc.errors import VitcError, gpu_failure
from vitc.train.distributed import DistInfo, broadcast_from_main

if TYPE_CHECKING:
    from vitc.train.config import TrainConfig

TUNED_DEVICES = ("cuda",)  # where `vitc train` measures GPSA's and SP-SA's formulations
GPU_WORKERS = 8  # the most decoding processes a GPU gets by default (timm's -j is 4 to 8, Ultralytics' 8)


def pick_workers(choice: int | None, device: torch.device, world_size: int = 1) -> int:
    """DataLoader processes decoding streamed images (run.workers; None: the default). A GPU gets this
    process's share of the cores, less one for the training process, up to GPU_WORKERS: one core decodes
    224² JPEGs several times slower than a GPU trains on them (docs/benchmarks.md, "Decode throughput").
    A CPU gets none: the workers would take the cores its own step runs on."""
    if choice is not None:
        return choice
    if device.type != "cuda":
        return 0
    return max(1, min(GPU_WORKERS, cpu_cores() // world_size - 1))


def pick_amp(choice: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype. auto: bf16 on CUDA (fp16 where bf16 is missing); on a CPU, bf16 where it has
    native bf16 instructions (AVX512-BF16/AMX: convit_micro trains faster at the same accuracy,
    docs/benchmarks.md, "Training throughput"), otherwise fp32."""
    if choice == "auto":
        if device.type == "cuda":
            # native bf16 only (Ampere and later): by default torch also counts the emulated bf16 of a
            # V100 or T4, where fp16 runs on the tensor cores and bf16 does not
            choice = "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"
        else:
            choice = "bf16" if cpu_has_native_bf16() else "off"
    if choice == "fp16" and device.type != "cuda":
        raise VitcError("fp16 autocast needs CUDA; use --set run.amp=bf16 on CPU")
    return {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[choice]


def precision_name(amp_dtype: torch.dtype | None) -> str:
    """What a score was computed in, as the records say it: "bf16" or "fp16" autocast, else "fp32"."""
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(amp_dtype, "fp32")


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 (Cooper Lake, Sapphire Rapids and later); torch exposes the check privately."""
    check = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    return bool(check and check())


def reraise_gpu(exc: RuntimeError, doing: str, hint: str, kept: str) -> NoReturn:
    """Raise a CUDA failure as its one-line VitcError; anything else as it was (call in `except`)."""
    failure = gpu_failure(exc, doing, hint, kept)
    if failure is None:
        raise exc  # not a CUDA failure: a bug, with its traceback
    raise failure from exc


def gpu_advice(
    cfg: TrainConfig, batch: int, amp: torch.dtype | None, run_dir: Path, epochs_done: int
) -> tuple[str, str]:
    """(what to try after running out of GPU memory, what of the run is kept)."""
    processes = cfg.optim.batch_size // batch  # the global batch splits evenly over them
    hint = f"a smaller batch (--set optim.batch_size={max(1, batch // 2) * processes})"
    if amp is None:
        hint += " or mixed precision (--set run.amp=bf16)"
    if cfg.run.compile == "off":
        hint += " or torch.compile (--set run.compile=inductor: fused kernels keep fewer activations)"
    if not epochs_done:
        return hint, "; no epoch had finished, so nothing was saved"
    return hint, f"; {RunLayout(run_dir).last} (epoch {epochs_done}) is kept, --resume continues from it"


def choose_attention(
    model: torch.nn.Module,
    pinned: bool,
    batch: int,
    cast: Any,
    say: Callable[[str], None],
    dist: DistInfo | None = None,
    chosen: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]] | None:
    """On a GPU, GPSA's and SP-SA's formulation measured at the run's batch and precision
    (vitc.models.formulation) unless the run pins one (model.args.attn_impl); on a CPU `fused`,
    which docs/benchmarks.md measured fastest there. Under DDP the main process measures and every
    process takes its choice, so that all ranks run the same kernels. A resumed run passes the first
    session's record as `chosen` and keeps it: measuring again could pick other kernels.

    The measurement draws its inputs from forked generators: drawn from torch's own, they would move
    the streams a resumed run has just restored (drop-path's masks on a GPU)."""
    from vitc.models.formulation import apply_choices, choose_formulations, describe, tunable_groups

    device = next(model.parameters()).device
    if device.type not in TUNED_DEVICES or pinned or not tunable_groups(model):
        return None
    if chosen is not None:
        apply_choices(model, chosen)
        say(f"attention: as the run chose when it started ({', '.join(row['chosen'] for row in chosen)})")
        return chosen
    dist = dist or DistInfo()
    say(f"attention: timing each GPSA/SP-SA formulation on {device} at batch {batch} (a first FlexAttention compiles)")
    record = None
    if dist.is_main:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            record = choose_formulations(model, batch, cast)
    record = broadcast_from_main(dist, record)
    apply_choices(model, record)
    for row in record:
        say(f"attention: {describe(row)}")
    return record
