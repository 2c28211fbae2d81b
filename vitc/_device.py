"""The device a command runs PyTorch on and the CPU cores this process may use, defined once for `vitc train`,
`eval`, `predict` and `bench` (no torch at import: the runtime path counts cores on a Jetson without it)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from vitc.errors import DEVICES, no_cuda, unknown_device

if TYPE_CHECKING:
    import torch


def cpu_cores() -> int:
    """The cores this process may run on (the affinity mask, which containers and taskset narrow; os.cpu_count()
    counts the machine's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def pick_device(choice: str) -> torch.device:
    """--device (auto, cpu, cuda) as a torch device: auto is the GPU where torch sees one; cuda without one
    is one line saying why (a CPU-only PyTorch build, or no usable GPU)."""
    import torch

    if choice not in DEVICES:
        raise unknown_device(choice, DEVICES)
    if choice == "cuda" and not torch.cuda.is_available():
        raise no_cuda("--device cuda", torch)
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(choice)
