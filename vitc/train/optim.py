"""AdamW parameter groups, the warm-up + cosine schedule, and an EMA of the weights."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, object]]:
    """Two AdamW groups: decayed weights, and the rest.

    No decay for norms and biases (every 1-D parameter, which also covers GPSA gates and SP-ViT's
    b2) nor for what the model names in `no_weight_decay()` (position embeddings, class tokens).
    """
    skip = set(getattr(model, "no_weight_decay", lambda: set())())
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim <= 1 or name in skip else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_at(step: int, total_steps: int, warmup_steps: int, base_lr: float, min_lr: float) -> float:
    """Linear warm-up from ~0 to `base_lr`, then cosine decay to `min_lr`, per optimiser step."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * min(1.0, progress)))


class ModelEma:
    """Exponential moving average of a model's weights (buffers copied), evaluated instead of the model."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for ema, live in zip(self.module.state_dict().values(), model.state_dict().values(), strict=True):
            if ema.dtype.is_floating_point:
                ema.lerp_(live.detach(), 1.0 - self.decay)
            else:
                ema.copy_(live)
