"""Process-group plumbing for DistributedDataParallel: torchrun's environment in, one small record out."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from vitc.errors import VitcError
from vitc.train.agree import process_env

T = TypeVar("T")


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def on_this_machine(self) -> int:
        """Processes on this machine, which share its cores (torchrun's LOCAL_WORLD_SIZE; all of them on one)."""
        return int(os.environ.get("LOCAL_WORLD_SIZE", self.world_size))


def process_info(device_type: str) -> DistInfo:
    """This process's place in the run torchrun describes, its GPU chosen; the process group is joined later
    (`init_distributed`), once every process has said that it is ready to (vitc.train.agree)."""
    rank, world_size, local_rank = process_env()
    if world_size <= 1:
        return DistInfo()
    info = DistInfo(rank, world_size, local_rank)
    if device_type == "cuda" and info.local_rank >= torch.cuda.device_count():  # one GPU per process
        per_machine = os.environ.get("LOCAL_WORLD_SIZE", str(info.local_rank + 1))
        gpus = torch.cuda.device_count()
        raise VitcError(
            f"{per_machine} DDP processes on this machine need a GPU each, but torch sees {gpus}: "
            f"--nproc {gpus} (torchrun: --nproc-per-node {gpus})" + (", or leave --nproc out" if gpus == 1 else "")
        )
    if device_type == "cuda":
        torch.cuda.set_device(info.local_rank)
    return info


_store: Any = None  # this process's rendezvous store, from the first use until the process group is shut down
_made_group = False  # init_distributed made the process group (a library user's own is theirs to destroy)
_groups_made = 0  # in this process: each group's keys in the store are its own (torchrun's store outlives a group)


def rendezvous_store() -> Any:
    """The key-value store of torchrun's rendezvous (env://: torchrun's agent holds it, or rank 0 for `--nproc`),
    reachable before any process group: the processes exchange what they found on it (vitc.train.agree), and
    the process group is then built on it."""
    global _store
    if _store is None:
        import torch.distributed as dist

        if dist.is_initialized():  # a library user's own process group (rank 0's store already holds the port)
            _store = dist.distributed_c10d._get_default_store()
        else:
            if sys.platform == "win32":  # torch's Windows wheels have no libuv, which torch 2.4-2.5's store asked
                os.environ.setdefault("USE_LIBUV", "0")  # for (pytorch#139990)
            _store, _, _ = next(dist.rendezvous("env://"))
    return _store


def init_distributed(info: DistInfo, device_type: str) -> None:
    """Join the process group (gloo on CPU, nccl on CUDA where torch has it) on the rendezvous store; a no-op for
    one process."""
    if not info.enabled:
        return
    import torch.distributed as dist

    global _made_group, _groups_made
    if not dist.is_initialized():  # as init_process_group's own env:// rendezvous does, on the store shared above
        # under a prefix no earlier group of this launch used: a second run in the process found the first's
        # addresses under "default_pg" in torchrun's store and dialled its closed ports (every process makes its
        # groups in the same order, so the counts agree)
        _groups_made += 1
        restart = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        store = dist.PrefixStore(f"vitc/{restart}/pg{_groups_made}", rendezvous_store())
        backend = process_group_backend(device_type)
        dist.init_process_group(backend=backend, store=store, rank=info.rank, world_size=info.world_size)
        _made_group = True


def process_group_backend(device_type: str) -> str:
    """nccl for CUDA where torch has it, else gloo: torch's Windows wheels have no NCCL ("Distributed package
    doesn't have NCCL built in"), and gloo reduces CUDA tensors too."""
    import torch.distributed as dist

    return "nccl" if device_type == "cuda" and dist.is_nccl_available() else "gloo"


def barrier(info: DistInfo) -> None:
    if info.enabled:
        import torch.distributed as dist

        dist.barrier()


def broadcast_from_main(info: DistInfo, value: T) -> T:
    """The main process's `value` (picklable) on every process; `value` itself for one process."""
    if not info.enabled:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_sum(info: DistInfo, values: dict[str, float]) -> None:
    """Sum float values over all processes, in place (a no-op for one process)."""
    if not info.enabled or not values:
        return
    import torch.distributed as dist

    keys = sorted(values)
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    values.update(zip(keys, tensor.tolist(), strict=True))


def union_over_processes(info: DistInfo, values: set[str]) -> set[str]:
    """The union of every process's `values` (picklable strings), on every process; `values` for one."""
    if not info.enabled:
        return values
    import torch.distributed as dist

    gathered: list[set[str] | None] = [None] * info.world_size
    dist.all_gather_object(gathered, values)
    return set().union(*(part for part in gathered if part))


SYNC_BN_DEVICES = ("cuda", "xpu", "hpu")  # where torch's SyncBatchNorm has kernels (its forward refuses the others)


def sync_batchnorm(model: torch.nn.Module, info: DistInfo, frozen: bool, device: str) -> tuple[bool, str]:
    """timm's --sync-bn (run.sync_bn): the model's BatchNorms become torch's SyncBatchNorm in place, so that under
    DDP each normalises over the global batch; (whether any do, the line that says so). Nothing to convert (no
    BatchNorm, a frozen backbone's in eval mode, one process, as timm) is said in one line; BatchNorms to convert on
    a CPU are refused in one, since torch's SyncBatchNorm has no CPU kernels. A SyncBatchNorm keeps BatchNorm's
    parameters and buffers under the same names, so checkpoints and the resume file load into a plain model; in eval
    mode (validation, EMA, export) it is a plain BatchNorm."""
    from vitc.models.layers import BATCHNORMS

    layers = sum(isinstance(m, BATCHNORMS) for m in model.modules())
    if not layers:
        return False, f"sync-BN: {model.vitc_name} has no BatchNorm, so run.sync_bn changes nothing"
    if frozen:  # in eval mode throughout: nothing to gather
        return False, "sync-BN: off, as the frozen backbone's BatchNorms keep their statistics (optim.freeze)"
    if not info.enabled:
        return False, "sync-BN: off for one process, whose BatchNorm sees the whole batch (run.sync_bn is for DDP)"
    if device not in SYNC_BN_DEVICES:
        raise VitcError(
            f"run.sync_bn needs CUDA for {model.vitc_name}'s {layers} BatchNorm layers (torch's SyncBatchNorm has no "
            f"{device.upper()} kernels): train the {info.world_size} {device.upper()} processes without it "
            "(--set run.sync_bn=false) or on GPUs (--device cuda)"
        )
    torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # in place below the top: a zoo model is no BatchNorm
    return True, (
        f"sync-BN: {layers} BatchNorm layers normalise over the global batch of the {info.world_size} processes "
        "(run.sync_bn, timm's --sync-bn)"
    )


def shutdown(info: DistInfo) -> None:
    """Leave the process group init_distributed made (a library user's own stays theirs)."""
    global _store, _made_group
    if info.enabled and _made_group:  # before that, the store stays: a failed start is still being agreed on it
        import torch.distributed as dist

        if dist.is_initialized():
            leave_process_group()
        _store, _made_group = None, False  # a later run in this process rendezvouses anew, as torch's env:// does


def leave_process_group() -> None:
    """dist.destroy_process_group(), without gloo's deadlock (pytorch#154976): the backend's destructor joins
    gloo's worker threads, and where it runs holding the GIL (destroy_process_group before torch 2.8; on 2.13
    still a DDP reducer dropping the last reference) a worker freeing the last collective's tensors waits for
    the GIL to drop their Python objects, so a run could hang after its summary (the torch versions and rates
    measured: docs/reliability.md, the DDP row "a rank ... that ends while rank 0 waits for it"). Held past
    destroy_process_group, with every other holder (DDP) gone first, the backends are destroyed by the `del`,
    whose binding lets the GIL go first."""
    import torch.distributed as dist

    gloo = dist.get_backend() == "gloo"
    backends = _backends(dist.group.WORLD) if gloo else []  # with no other reference to the group
    dist.destroy_process_group()
    del backends


def _backends(group: Any) -> list[Any]:
    """The process group's backends (gloo's one, registered for the CPU and CUDA alike)."""
    return [group._get_backend(device) for device in group._device_types]
