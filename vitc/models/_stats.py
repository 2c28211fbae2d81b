"""Parameter and MAC counts, on the meta device so that even 277M-parameter models take a moment.

`vitc._zoo` caches the table of every registered model (`zoo_rows`) that `vitc models` reads;
`python -m vitc._zoo` regenerates the shipped one. This module knows nothing of that cache.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_size: tuple[int, int, int]) -> int:
    """Multiply-accumulates of one forward at batch 1, attention matmuls included (FLOPs / 2)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    device = next(model.parameters()).device
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model.eval()(torch.zeros(1, *input_size, device=device))
    return counter.get_total_flops() // 2


def model_stats(name: str, **overrides: Any) -> dict[str, Any]:
    """Name, family, parameters, GMACs and input size of a registered model, built on meta."""
    import torch

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


def zoo_rows() -> list[dict[str, Any]]:
    """Build every registered model on meta and count it: the rows of the zoo table."""
    from vitc.models import list_models

    return [model_stats(name) for name in list_models()]
