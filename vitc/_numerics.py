"""Floating-point settings that a check must not inherit from the user's session.

torch's fp32 switches (TF32 on CUDA, oneDNN bf16 on CPU) are process-wide; a check that compares
two computations to 1e-4 runs under `strict_fp32`, which restores the user's settings afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

__all__ = ["precision_flags", "strict_fp32"]


def precision_flags() -> list[tuple[Any, str]]:
    """(object, attribute) of every fp32 precision switch this torch has (TF32, oneDNN bf16)."""
    backends = torch.backends
    if not hasattr(backends.cuda.matmul, "fp32_precision"):  # before torch 2.9: the legacy switches
        return [(backends.cuda.matmul, "allow_tf32"), (backends.cudnn, "allow_tf32")]
    owners = [backends, backends.cuda.matmul, backends.cudnn.conv, backends.cudnn.rnn]
    owners += [backends.mkldnn.matmul, backends.mkldnn.conv, backends.mkldnn.rnn]
    return [(owner, "fp32_precision") for owner in owners if hasattr(owner, "fp32_precision")]


@contextmanager
def strict_fp32() -> Iterator[None]:
    """Full-precision float32 maths and no autocast, whatever the user set; their settings come back after.

    The compile check compares logits to 1e-4, and `vitc.models.formulation` a formulation's
    gradients to 1e-4 relative: TF32 (`torch.backends.cuda.matmul.allow_tf32 = True`,
    `set_float32_matmul_precision("high")`) or oneDNN's bf16 matmuls change them by more than that on
    their own. torch 2.9+ refuses reads of the legacy switches once the new `fp32_precision` ones were
    set differently, so each torch's own kind of switch is saved and restored, the legacy one first.
    Before 2.9 `cuda.matmul.allow_tf32` is the matmul precision seen as a bool (setting it True makes
    "medium" "high"), so there the precision is restored after the switches.
    """
    flags = precision_flags()
    saved = [getattr(owner, name) for owner, name in flags]
    matmul = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("highest")
        for owner, name in flags:
            setattr(owner, name, False if name == "allow_tf32" else "ieee")
        with torch.autocast("cpu", enabled=False), torch.autocast("cuda", enabled=False):
            yield
    finally:
        legacy = any(name == "allow_tf32" for _, name in flags)
        if not legacy:
            torch.set_float32_matmul_precision(matmul)
        for (owner, name), value in zip(flags, saved, strict=True):
            setattr(owner, name, value)
        if legacy:
            torch.set_float32_matmul_precision(matmul)
