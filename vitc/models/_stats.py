"""Parameter and MAC counts, computed on the meta device so that even 277M-parameter models are instant."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_size: tuple[int, int, int]) -> int:
    """Multiply-accumulates of one forward at batch 1, attention matmuls included (FLOPs / 2)."""
    device = next(model.parameters()).device
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model.eval()(torch.zeros(1, *input_size, device=device))
    return counter.get_total_flops() // 2


def model_stats(name: str, **overrides: Any) -> dict[str, Any]:
    """Name, family, parameters, GMACs and input size of a registered model, built on meta."""
    from vitc.models import create_model, get_model_cfg

    with torch.device("meta"):
        model = create_model(name, **overrides)
    cfg = get_model_cfg(model)
    return {
        "name": name,
        "family": cfg.family,
        "params": count_params(model),
        "gmacs": count_macs(model, cfg.input_size) / 1e9,
        "input_size": cfg.input_size,
    }
