"""torch's SyncBatchNorm on a CPU, for the tests of run.sync_bn (torch's runs on GPUs only).

torch's own module and autograd Function run unchanged, with their collectives over gloo (the all_gather of
each process's mean, invstd and count in the forward, the all_reduce of the gradient sums in the backward,
an empty batch's zeros): only the five per-device kernels they call, which torch has for GPUs only, are
replaced by the same arithmetic in torch operators, and the forward's check for a GPU tensor and DDP's for
GPU modules let CPU ones through. A stand-in for what only a GPU runs: it checks vitc's use of
SyncBatchNorm (which collectives every process joins, in which order, with what), not the CUDA kernels.

`python sync_bn_cpu.py train ARGS` is one DDP process of `vitc train ARGS` with it installed (torchrun's
environment); `python sync_bn_cpu.py steps OUT` is one process of the step checks (`steps`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


def _acc(t: torch.Tensor) -> torch.dtype:
    """The CUDA kernels' accumulation type: float32 for float32 and below, as batch_norm_stats returns."""
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _dims(t: torch.Tensor) -> list[int]:
    return [0, *range(2, t.dim())]


def _per_channel(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.reshape(1, -1, *([1] * (like.dim() - 2)))


def batch_norm_stats(input: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    x = input.to(_acc(input))
    return x.mean(_dims(x)), torch.rsqrt(x.var(_dims(x), unbiased=False) + eps)


def batch_norm_gather_stats_with_counts(
    input: torch.Tensor,
    mean_all: torch.Tensor,
    invstd_all: torch.Tensor,
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    momentum: float,
    eps: float,
    counts: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The global mean and invstd from each process's (mean, invstd, count); the running statistics updated
    with the unbiased variance, as the CUDA kernel does."""
    counts = counts.to(mean_all.dtype)[:, None]
    total = counts.sum()
    mean = (counts * mean_all).sum(0) / total
    var = (counts * (1 / invstd_all**2 - eps + (mean_all - mean) ** 2)).sum(0) / total
    if running_mean is not None and running_var is not None:
        running_mean.mul_(1 - momentum).add_((momentum * mean).to(running_mean.dtype))
        running_var.mul_(1 - momentum).add_((momentum * var * total / (total - 1)).to(running_var.dtype))
    return mean, torch.rsqrt(var + eps)


def batch_norm_elemt(
    input: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    mean: torch.Tensor,
    invstd: torch.Tensor,
    eps: float,
) -> torch.Tensor:
    out = (input.to(mean.dtype) - _per_channel(mean, input)) * _per_channel(invstd, input)
    if weight is not None:
        out = out * _per_channel(weight.to(mean.dtype), input)
    if bias is not None:
        out = out + _per_channel(bias.to(mean.dtype), input)
    return out.to(input.dtype)


def batch_norm_backward_reduce(
    grad_out: torch.Tensor,
    input: torch.Tensor,
    mean: torch.Tensor,
    invstd: torch.Tensor,
    weight: torch.Tensor | None,
    input_g: bool,
    weight_g: bool,
    bias_g: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    dy = grad_out.to(mean.dtype)
    xmu = input.to(mean.dtype) - _per_channel(mean, input)
    sum_dy, sum_dy_xmu = dy.sum(_dims(dy)), (dy * xmu).sum(_dims(dy))
    dtype = weight.dtype if weight is not None else mean.dtype
    grad_weight = (sum_dy_xmu * invstd).to(dtype) if weight_g else None
    grad_bias = sum_dy.to(dtype) if bias_g else None
    return sum_dy, sum_dy_xmu, grad_weight, grad_bias


def batch_norm_backward_elemt(
    grad_out: torch.Tensor,
    input: torch.Tensor,
    mean: torch.Tensor,
    invstd: torch.Tensor,
    weight: torch.Tensor | None,
    sum_dy: torch.Tensor,
    sum_dy_xmu: torch.Tensor,
    count: torch.Tensor,
) -> torch.Tensor:
    """The input's gradient from the sums over every process (count: each process's batch)."""
    total = count.sum().to(mean.dtype)
    xmu = input.to(mean.dtype) - _per_channel(mean, input)
    grad = grad_out.to(mean.dtype) - _per_channel(sum_dy / total, input)
    grad = grad - xmu * _per_channel(invstd**2 * sum_dy_xmu / total, input)
    scale = invstd if weight is None else invstd * weight.to(mean.dtype)
    return (grad * _per_channel(scale, input)).to(input.dtype)


KERNELS: dict[str, Callable[..., Any]] = {
    f.__name__: f
    for f in (
        batch_norm_stats,
        batch_norm_gather_stats_with_counts,
        batch_norm_elemt,
        batch_norm_backward_reduce,
        batch_norm_backward_elemt,
    )
}


def install() -> None:
    """torch's SyncBatchNorm runs on CPU tensors in this process (torch's module and Function, these kernels),
    and vitc's refusal of it on a CPU is lifted."""
    from vitc.train import distributed

    distributed.SYNC_BN_DEVICES = (*distributed.SYNC_BN_DEVICES, "cpu")
    for name, kernel in KERNELS.items():
        setattr(torch, name, kernel)
    forward = torch.nn.SyncBatchNorm.forward
    backend_name = torch._C._get_privateuse1_backend_name

    def on_cpu(self: torch.nn.SyncBatchNorm, input: torch.Tensor) -> torch.Tensor:
        torch._C._get_privateuse1_backend_name = lambda: "cpu"  # the one check that wants a GPU tensor
        try:
            return forward(self, input)
        finally:
            torch._C._get_privateuse1_backend_name = backend_name

    torch.nn.SyncBatchNorm.forward = on_cpu  # type: ignore[method-assign]
    ddp = torch.nn.parallel.DistributedDataParallel
    ddp._passing_sync_batchnorm_handle = lambda self, module: None  # type: ignore[method-assign]


def train_process(argv: list[str]) -> None:
    """One DDP process of `vitc train ARGV` (torchrun's environment), with vitc's CPU refusal lifted."""
    install()
    from vitc.cli import main

    sys.argv = ["vitc", "train", *argv]
    main.main()


@dataclass(frozen=True)
class StepCase:
    """One training step of `steps`: the model, how it runs, whether process 1's batch is unreadable."""

    model: str
    checkpointed: bool = False  # run.grad_checkpointing: a block's recomputation gathers again
    compiled: bool = False  # run.compile=aot_eager: torch.compile cannot trace SyncBatchNorm
    unreadable: bool = False  # process 1 takes vitc's stand-in step
    bf16: bool = False  # run.amp=bf16: the others' BatchNorms take bfloat16 inputs, their statistics in float32

    def cast(self) -> AbstractContextManager[Any]:
        return torch.autocast("cpu", dtype=torch.bfloat16) if self.bf16 else nullcontext()


STEP_CASES = {  # CvT's BatchNorms are in its blocks, SP-ViT's in its stem (before an in-place ReLU)
    "combined": StepCase("cvt_micro", checkpointed=True),
    "compiled": StepCase("cvt_micro", checkpointed=True, compiled=True, unreadable=True),
    "stand_in": StepCase("spvit_micro", unreadable=True),
    "bf16": StepCase("spvit_micro", unreadable=True, bf16=True),
}
BATCH = 8  # the global batch of `steps`, split over 2 processes


def step_model(name: str, checkpointed: bool = False) -> torch.nn.Module:
    """The model every process of `steps` and its one-process reference start from (no drop-path: the
    processes would draw their own)."""
    from vitc.models import create_model

    torch.manual_seed(0)
    model = create_model(name, num_classes=3, drop_path_rate=0.0)
    model.set_grad_checkpointing(checkpointed)
    return model.train()


def step_batch() -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.randn(BATCH, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    return images, torch.arange(BATCH) % 3


def steps(out: Path) -> None:
    """One of 2 DDP processes (gloo) taking each of STEP_CASES's steps with sync-BN, through vitc's step
    functions, each process on its half of a batch or, where process 1's is unreadable, on vitc's stand-in;
    then process 0 writes the last model's checkpoint through vitc. What each saw goes to OUT/rank<R>.pt,
    which the tests compare with one process on the batch."""
    from datetime import timedelta
    from types import SimpleNamespace

    import torch.distributed as dist
    import torch.nn.functional as F

    from vitc.checkpoint import write_checkpoint
    from vitc.train.distributed import DistInfo, leave_process_group, sync_batchnorm
    from vitc.train.loop import _backward_and_step, _shadow_step
    from vitc.train.optim import ModelEma

    dist.init_process_group("gloo", timeout=timedelta(seconds=60))  # a mismatch fails, not hangs for 30 min
    install()
    rank, info = dist.get_rank(), DistInfo(dist.get_rank(), 2)
    images, labels = step_batch()
    share = slice(rank * BATCH // 2, (rank + 1) * BATCH // 2)
    seen: dict[str, Any] = {}
    for name, case in STEP_CASES.items():
        model = step_model(case.model, case.checkpointed)
        synced, note = sync_batchnorm(model, info, frozen=False, device="cpu")
        assert synced, note
        net = torch.nn.parallel.DistributedDataParallel(model)
        run = SimpleNamespace(  # what vitc's step reads of its Run
            net=torch.compile(net, backend="aot_eager") if case.compiled else net,
            model=model,
            sync_bn=True,
            device=torch.device("cpu"),
            cast=case.cast(),
            cfg=SimpleNamespace(optim=SimpleNamespace(clip_grad=0.0, freeze="none")),
            optimizer=torch.optim.SGD(model.parameters(), lr=0.0),  # the gradients stay to be compared
            scaler=torch.amp.GradScaler("cpu", enabled=False),
            ema=ModelEma(model, 0.5),
        )
        if case.unreadable and rank == 1:
            _shadow_step(run)
        else:
            with run.cast:
                logits = run.net(images[share])
            _backward_and_step(run, F.cross_entropy(logits.float(), labels[share]))
        seen[name] = {
            "state": {k: v.clone() for k, v in model.state_dict().items()},
            "grads": {k: p.grad.clone() for k, p in model.named_parameters()},
            "ema_logits": run.ema.module(images).detach(),  # eval mode: no collective, on one process alone
        }
    if rank == 0:
        write_checkpoint(out / "checkpoint.safetensors", model)
    torch.save(seen, out / f"rank{rank}.pt")
    leave_process_group()  # not dist.destroy_process_group(), which could hang on torch 2.4-2.7


if __name__ == "__main__":
    if sys.argv[1] == "train":
        train_process(sys.argv[2:])
    else:
        steps(Path(sys.argv[2]))
