"""Locality analysis, the ConViT paper's lens: how much each head relies on position, and how far it looks.

* gates: σ(λ) per GPSA layer and head (1 = purely positional attention, 0 = purely content).
* nonlocality / mean attention distance: Σ_k A[q, k]·‖pos(q) − pos(k)‖ averaged over queries and
  images, per layer and head, on each layer's real input for a batch of data. Distances are in
  input pixels so that ViTs (patch grid) and CvT (several strides) are comparable. Class-token
  rows and columns are left out and the remaining weights renormalised.
* positional attention (ConViT) and spatial priors (SP-ViT): per-head maps over key offsets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass
class LocalityReport:
    model: str
    layers: list[str] = field(default_factory=list)
    distance: list[list[float]] = field(default_factory=list)  # [layer][head], input pixels
    grids: list[tuple[int, int]] = field(default_factory=list)  # [layer]: its query tokens' grid, rows × columns
    patch: list[float] = field(default_factory=list)  # [layer]: the pixels between two of its query tokens
    uniform: list[float] = field(default_factory=list)  # [layer]: the distance uniform attention over its keys gives
    gates: dict[str, list[float]] = field(default_factory=dict)  # GPSA layer -> σ(λ) per head
    positional_maps: dict[str, torch.Tensor] = field(default_factory=dict)  # layer -> (H, s, s), centre query
    spatial_priors: dict[str, torch.Tensor] = field(default_factory=dict)  # layer -> (H, 2s−1, 2s−1) over (dy, dx)

    def summary(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "mean_attention_distance_px": {
                name: {"mean": sum(row) / len(row), "per_head": row, "uniform_attention": uniform, "one_patch": patch}
                for name, row, uniform, patch in zip(self.layers, self.distance, self.uniform, self.patch, strict=True)
            },
            "gates_sigmoid_lambda": self.gates,
            "spatial_prior_range": {k: [float(v.min()), float(v.max())] for k, v in self.spatial_priors.items()},
        }


def _attention_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(name, m) for name, m in model.named_modules() if callable(getattr(m, "attention_map", None))]


def _grid_positions(tokens: int, height: int | None, width: int | None) -> tuple[torch.Tensor, int]:
    """(row, col) of the patch tokens and how many prefix (class) tokens precede them."""
    if height is None or width is None:
        side = math.isqrt(tokens)
        prefix = tokens - side * side
        if prefix not in (0, 1):
            raise ValueError(f"cannot place {tokens} tokens on a square grid")
        height = width = side
    else:
        prefix = tokens - height * width
    rows = torch.arange(height).repeat_interleave(width)
    cols = torch.arange(width).repeat(height)
    return torch.stack((rows, cols), dim=1).float(), prefix


def _mean_distance(
    attn: torch.Tensor, q_pos: torch.Tensor, k_pos: torch.Tensor, prefix: int, k_prefix: int
) -> torch.Tensor:
    """Per-head Σ_k A·distance (on `attn`'s device), with class tokens removed and rows renormalised over
    patch keys."""
    attn = attn[:, :, prefix:, k_prefix:]
    attn = attn / attn.sum(-1, keepdim=True).clamp_min(1e-12)
    dist = torch.cdist(q_pos, k_pos).to(attn.device, attn.dtype)  # (Nq, Nk); a model on a GPU is analysed there
    return (attn * dist).sum(-1).mean(dim=(0, 2))


def _uniform_distance(q_pos: torch.Tensor, k_pos: torch.Tensor) -> float:
    """The mean distance uniform attention gives: every query looks at every key alike (the reference a head's
    distance is read against, from the layer's own grids: CvT's stages each have theirs)."""
    return float(torch.cdist(q_pos, k_pos).mean())


@torch.no_grad()
def analyse(model: nn.Module, images: torch.Tensor) -> LocalityReport:
    """Run `images` (normalised, B×C×H×W) through `model` and measure every attention layer."""
    model.eval()
    modules = _attention_modules(model)
    inputs: dict[str, tuple[Any, ...]] = {}
    hooks = [m.register_forward_pre_hook(lambda _m, args, n=name: inputs.__setitem__(n, args)) for name, m in modules]
    try:
        model(images)
    finally:
        for hook in hooks:
            hook.remove()
    image_side = images.shape[-1]
    report = LocalityReport(model=getattr(model, "vitc_name", type(model).__name__))
    for name, module in modules:
        args = inputs[name]
        attn = module.attention_map(*args)  # (B, H, Nq, Nk)
        if len(args) == 3:  # CvT: (x, height, width); keys/values on the stride-2 grid
            height, width = int(args[1]), int(args[2])
            q_pos, prefix = _grid_positions(attn.shape[2], height, width)
            k_pos, k_prefix = _grid_positions(attn.shape[3], math.ceil(height / 2), math.ceil(width / 2))
            k_pos = k_pos * 2
        else:
            q_pos, prefix = _grid_positions(attn.shape[2], None, None)
            k_pos, k_prefix = q_pos, prefix
            height = width = math.isqrt(attn.shape[2] - prefix)
        stride = image_side / width
        report.layers.append(name)
        report.distance.append((_mean_distance(attn, q_pos, k_pos, prefix, k_prefix) * stride).tolist())
        report.grids.append((height, width))
        report.patch.append(stride)
        report.uniform.append(_uniform_distance(q_pos, k_pos) * stride)
        if hasattr(module, "gating_param"):
            report.gates[name] = torch.sigmoid(module.gating_param).tolist()
        if hasattr(module, "positional_attention"):
            pos = module.positional_attention()  # (H, N, N)
            side = math.isqrt(pos.shape[-1])
            centre = (side // 2) * side + side // 2
            report.positional_maps[name] = pos[:, centre].reshape(-1, side, side).cpu()
        if hasattr(module, "spatial_prior"):
            report.spatial_priors[name] = offset_map(module.spatial_prior().cpu())  # one read per offset: on CPU
    return report


def offset_map(table: torch.Tensor) -> torch.Tensor:
    """(H, N, N) values that depend only on the key−query offset → (H, 2s−1, 2s−1) indexed [dy, dx]."""
    side = math.isqrt(table.shape[-1])
    out = table.new_zeros(table.shape[0], 2 * side - 1, 2 * side - 1)
    for dy in range(-(side - 1), side):
        for dx in range(-(side - 1), side):
            qr, qc = max(0, -dy), max(0, -dx)
            q, k = qr * side + qc, (qr + dy) * side + qc + dx
            out[:, dy + side - 1, dx + side - 1] = table[:, q, k]
    return out
