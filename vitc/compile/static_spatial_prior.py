"""Pass 2, static_spatial_prior: SP-ViT's SP-SA → attention with a precomputed multiplicative prior.

The per-head prior MLP SP = w2ᵀ·ReLU(W1·r + b1) + b2 sees only the fixed (dx, dy) offsets, so it is
evaluated once (in float64) into Ω′ = s·SP (H, N, N) with the scale s folded in:

    out = proj(softmax((q·kᵀ) ⊙ Ω′) · v)

w1, w2, b2 and rel_indices disappear; qk and v become one qkv Linear. A multiplicative prior has
no scaled_dot_product_attention form, so this is the only lowering.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from vitc.compile._base import Pass, fuse_linears, register_pass
from vitc.models.spvit import SPSA

__all__ = ["StaticSPSA", "StaticSpatialPriorPass"]


class StaticSPSA(nn.Module):
    """SP-SA for one fixed grid: fused qkv and the buffer prior = scale·SP (H, N, N)."""

    prior: torch.Tensor

    def __init__(self, qkv: nn.Linear, proj: nn.Linear, prior: torch.Tensor) -> None:
        super().__init__()
        self.num_heads, self.tokens = prior.shape[0], prior.shape[1]
        self.dim = proj.in_features
        self.head_dim = self.dim // self.num_heads
        self.qkv = qkv
        self.proj = proj
        self.register_buffer("prior", prior)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        qkv = self.qkv(x).reshape(batch, self.tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        scores = q @ k.transpose(-2, -1)
        scores *= self.prior  # in place: one (B, H, N, N) buffer fewer
        attn = scores.softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(batch, self.tokens, self.dim))

    def extra_repr(self) -> str:
        return f"heads={self.num_heads}, tokens={self.tokens}"


def spatial_prior_f64(module: SPSA) -> torch.Tensor:
    """SPSA.spatial_prior() evaluated in float64, (H, N, N)."""
    rel = module.rel_indices[0].double()  # (N, N, 2)
    tokens = rel.shape[0]
    hidden = F.relu(F.linear(rel, module.w1.weight.double(), module.w1.bias.double()))
    hidden = hidden.view(tokens, tokens, module.num_heads, module.head_dim)
    prior = torch.einsum("nmhc,hc->hnm", hidden, module.w2.double().view(module.num_heads, module.head_dim))
    return prior + module.b2.double()[:, None, None]


@register_pass
class StaticSpatialPriorPass(Pass):
    name: ClassVar[str] = "static_spatial_prior"

    def __init__(self, qkv_bias: bool = False) -> None:
        """`qkv_bias` gives the fused qkv a (zero) bias even where SP-SA has none (see fuse_linears)."""
        self.qkv_bias = qkv_bias

    def matches(self, module: nn.Module) -> bool:
        return isinstance(module, SPSA)

    def rewrite(self, module: nn.Module) -> nn.Module:
        assert isinstance(module, SPSA)
        qkv = fuse_linears(module.qk, module.v, force_bias=self.qkv_bias)
        prior = (spatial_prior_f64(module) * module.scale).to(module.qk.weight.dtype)
        return StaticSPSA(qkv, module.proj, prior)
