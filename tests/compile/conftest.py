"""Shared helpers for the compiler tests: small zoo builds and non-trivial random weights."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import nn

from vitc.models import create_model, list_models
from vitc.models.convit import GPSA
from vitc.models.spvit import SPSA

# Every family member at a size that runs in milliseconds; micro models are built as registered.
SMALL_ARGS: dict[str, dict[str, object]] = {
    "convit": {"img_size": 64, "patch_size": 16, "depth": 2, "local_up_to_layer": 1},
    "deit": {"img_size": 64, "patch_size": 16, "depth": 2},
    "spvit": {"img_size": 64, "patch_size": 16, "depth": 2, "local_up_to_layer": 1},
    "cvt": {"img_size": 64, "depths": (1, 1, 1)},
}


def small_args(name: str) -> dict[str, object]:
    if name.endswith("_micro"):
        return {}
    return dict(SMALL_ARGS[name.split("_")[0]])


@torch.no_grad()
def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Move the parameters that the passes fold away from their identity-like inits.

    GPSA gates (σ(λ) spread over (0, 1)) and positional projections, SP-SA's w2/b2 (SP ≡ 1 at init),
    every BatchNorm's affine parameters and running statistics.
    """
    g = torch.Generator().manual_seed(seed)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g)

    for module in model.modules():
        if isinstance(module, GPSA):
            module.gating_param.copy_(2.0 * rand(*module.gating_param.shape))
            module.pos_proj.weight.add_(0.5 * rand(*module.pos_proj.weight.shape))
            module.pos_proj.bias.copy_(rand(*module.pos_proj.bias.shape))
        elif isinstance(module, SPSA):
            module.w2.copy_(0.5 * rand(*module.w2.shape))
            module.b2.copy_(1.0 + 0.3 * rand(*module.b2.shape))
        elif isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.weight.copy_(1.0 + 0.2 * rand(n))
            module.bias.copy_(0.2 * rand(n))
            module.running_mean.copy_(0.2 * rand(n))
            module.running_var.copy_(0.5 + torch.rand(n, generator=g))
    return model


def build(name: str, seed: int = 0, **overrides: object) -> nn.Module:
    torch.manual_seed(seed)
    model = create_model(name, **{**small_args(name), **overrides})
    return randomize(model, seed).eval()


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """These tests check numbers, not speed: one thread is far faster than two on shared, busy CI cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


ZOO = list_models()
MICRO = list_models("*_micro")
