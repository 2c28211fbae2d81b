"""Pass 4, static_attention: plain multi-head attention → F.scaled_dot_product_attention.

Matches DeiT's, ConViT's MHSA and SP-ViT's plain `layers.Attention` (the 1/√d_h scale is folded
into the q rows of qkv, SDPA gets scale=1.0), and CvT's StaticConvAttention after
fold_cvt_projections (its C^-0.5 scale, not the head default, is already in proj_q). Run only for
targets where SDPA's fused kernels win (see vitc.compile.pipeline for the measurements).
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from vitc.compile._base import Pass, fuse_linears, register_pass
from vitc.compile.fold_cvt_projections import StaticConvAttention
from vitc.models.layers import Attention

__all__ = ["SDPAAttention", "StaticAttentionPass"]


class SDPAAttention(nn.Module):
    """Fused-qkv attention via scaled_dot_product_attention; q rows of qkv carry the scale."""

    def __init__(self, qkv: nn.Linear, proj: nn.Linear, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.dim = proj.in_features
        self.head_dim = self.dim // num_heads
        self.qkv = qkv
        self.proj = proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], scale=1.0)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, self.dim))

    def extra_repr(self) -> str:
        return f"heads={self.num_heads}"


@register_pass
class StaticAttentionPass(Pass):
    name: ClassVar[str] = "static_attention"

    def __init__(self, qkv_bias: bool = False) -> None:
        """`qkv_bias` gives the fused qkv a (zero) bias even where the model has none (see fuse_linears)."""
        self.qkv_bias = qkv_bias

    def matches(self, module: nn.Module) -> bool:
        return isinstance(module, Attention) or (isinstance(module, StaticConvAttention) and not module.sdpa)

    def rewrite(self, module: nn.Module) -> nn.Module:
        if isinstance(module, StaticConvAttention):
            module.sdpa = True
            return module
        assert isinstance(module, Attention)
        dim, scale = module.proj.in_features, module.scale
        qkv = fuse_linears(module.qkv, row_scale=lambda i: scale if i < dim else 1.0, force_bias=self.qkv_bias)
        return SDPAAttention(qkv, module.proj, module.num_heads)
