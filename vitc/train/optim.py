"""AdamW parameter groups (with layer-wise lr decay), a frozen backbone, the warm-up + cosine schedule, and an EMA."""

from __future__ import annotations

import copy
import math
import re

import torch
from torch import nn

from vitc.models.layers import classifier_of


def param_groups(model: nn.Module, weight_decay: float, layer_decay: float = 1.0) -> list[dict[str, object]]:
    """AdamW groups: decayed weights and the rest, per layer when `layer_decay` < 1.

    No decay for norms and biases (every 1-D parameter, which also covers GPSA gates and SP-ViT's
    b2) nor for what the model names in `no_weight_decay()` (position embeddings, class tokens).
    Each group carries `lr_scale`, the share of the scheduled learning rate it trains at:
    layer_decay ** (depth + 1 - layer), with the embeddings at layer 0, block i at layer i + 1 and
    the final norm and classifier at depth + 1 (full rate), as in BEiT and MAE fine-tuning (timm puts the
    final norm with the last block).
    """
    skip = set(getattr(model, "no_weight_decay", lambda: set())())
    layers, depth = layer_ids(model)
    groups: dict[tuple[int, bool], dict[str, object]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        decayed = not (param.ndim <= 1 or name in skip)
        layer = layers[name] if layer_decay < 1.0 else depth + 1
        group = groups.setdefault(
            (layer, decayed),
            {
                "params": [],
                "weight_decay": weight_decay if decayed else 0.0,
                "lr_scale": layer_decay ** (depth + 1 - layer),
            },
        )
        group["params"].append(param)  # type: ignore[union-attr]
    return [groups[key] for key in sorted(groups, key=lambda k: (k[0], not k[1]))]


_BLOCK = re.compile(r"(?:stage(\d+)\.)?blocks\.(\d+)\.")
_STAGE = re.compile(r"stage(\d+)\.")
_FINAL_NORMS = ("norm.", "fc_norm.")  # with the classifier, the top layer of layer-wise decay


def layer_ids(model: nn.Module) -> tuple[dict[str, int], int]:
    """Each parameter's layer for layer-wise decay, and the depth (number of blocks).

    Blocks are `blocks.i` (DeiT, ConViT, SP-ViT) or `stage{s}.blocks.j` (CvT, numbered on across
    stages); a CvT stage's own embedding and class token sit with the last block before it.
    """
    names = [name for name, _ in model.named_parameters()]
    top = (*(f"{module}." for module in classifier_of(model)), *_FINAL_NORMS)
    blocks = sorted({(int(m[1] or 0), int(m[2])) for n in names if (m := _BLOCK.match(n))})
    order = {block: i + 1 for i, block in enumerate(blocks)}
    depth = len(blocks)
    ids = {}
    for name in names:
        if (m := _BLOCK.match(name)) is not None:
            ids[name] = order[(int(m[1] or 0), int(m[2]))]
        elif name.startswith(top):
            ids[name] = depth + 1
        elif (m := _STAGE.match(name)) is not None:
            ids[name] = sum(1 for stage, _ in blocks if stage < int(m[1]))
        else:
            ids[name] = 0
    return ids, depth


def freeze_backbone(model: nn.Module) -> int:
    """Train the classifier only (a linear probe): every other parameter stops requiring gradients.
    Returns how many tensors were frozen."""
    frozen, classifier = 0, tuple(f"{module}." for module in classifier_of(model))
    for name, param in model.named_parameters():
        if not name.startswith(classifier):
            param.requires_grad_(False)
            frozen += 1
    return frozen


def backbone_eval(model: nn.Module) -> None:
    """Put a frozen backbone in eval mode after `model.train()`: its BatchNorm statistics (CvT) stay those
    of the pretrained weights and drop-path stays off, so the features the probe learns on are fixed."""
    for name, module in model.named_children():
        if name not in classifier_of(model):
            module.eval()


def lr_at(
    step: int, total_steps: int, warmup_steps: int, base_lr: float, min_lr: float, warmup_lr: float | None = None
) -> float:
    """Linear warm-up to `base_lr`, then cosine decay to `min_lr`, per optimiser step.

    The warm-up starts at `warmup_lr` (timm's --warmup-lr: step 0 trains at it, step `warmup_steps` at
    `base_lr`); None (vitc's default) starts at base_lr / warmup_steps, reaching base_lr on the last warm-up step.
    """
    if step < warmup_steps:
        if warmup_lr is None:
            return base_lr * (step + 1) / warmup_steps
        return warmup_lr + (base_lr - warmup_lr) * step / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * min(1.0, progress)))


class ModelEma:
    """Exponential moving average of a model's weights and float buffers (BatchNorm's statistics; integer
    buffers copied), as timm's ModelEmaV3, evaluated instead of the model."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One multi-tensor lerp over the floating tensors (one kernel launch per chunk on a GPU, as
        timm's ModelEmaV3 does, instead of one per tensor); the others are copied."""
        floats: tuple[list[torch.Tensor], list[torch.Tensor]] = ([], [])
        for ema, live in zip(self.module.state_dict().values(), model.state_dict().values(), strict=True):
            if ema.dtype.is_floating_point:
                floats[0].append(ema)
                floats[1].append(live.detach())
            else:
                ema.copy_(live)
        if floats[0]:
            torch._foreach_lerp_(floats[0], floats[1], 1.0 - self.decay)
