"""Pass 1, static_gpsa: ConViT's GPSA → a static attention with a precomputed positional table.

For the model's fixed grid the positional half of GPSA, P = softmax(pos_proj(rel_indices)) (H, N, N),
depends on no input, and the gate g = σ(λ) is a constant per head. So

    out = proj(((1 − g)·softmax(q·kᵀ·s) + g·P) · v)

with g·P and (1 − g) stored as buffers. pos_proj, rel_indices, gating_param and the row
renormalisation disappear (a convex mix of row-stochastic matrices is row-stochastic). The qk and
v Linears become one qkv Linear (one GEMM), with the scale s folded into the q rows.

Two lowerings:
* "mix": softmax(q·kᵀ), then one addcmul mixes it with g·P, then @v. Fewest ops; best on ONNX
  Runtime CPU, and in PyTorch eager at batch 1 (by ~4%).
* "sdpa": (1 − g)·SDPA(q, k, v) + (g·P)@v. The content term is a standard attention that fused
  kernels (flash on CPU and GPU, TensorRT's MHA fusion) pick up; best in PyTorch eager from batch 8
  (-17%). (1 − g) scales the (B, H, N, d) output rather than v, so g → 1 cannot blow up a folded
  1/(1 − g). Numbers: vitc.compile.pipeline.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from vitc.compile._base import Pass, fuse_linears, register_pass
from vitc.models.convit import GPSA

__all__ = ["LOWERINGS", "StaticGPSA", "StaticGPSAPass"]

LOWERINGS = ("mix", "sdpa")


class StaticGPSA(nn.Module):
    """GPSA for one fixed grid: fused qkv (q pre-scaled), buffers pos_attn = g·P and content_gate = 1 − g."""

    pos_attn: torch.Tensor
    content_gate: torch.Tensor

    def __init__(self, qkv: nn.Linear, proj: nn.Linear, pos_attn: torch.Tensor, gate: torch.Tensor, lowering: str):
        super().__init__()
        if lowering not in LOWERINGS:
            raise ValueError(f"unknown GPSA lowering {lowering!r} (choose one of: {', '.join(LOWERINGS)})")
        self.num_heads, self.tokens = pos_attn.shape[0], pos_attn.shape[1]
        self.dim = proj.in_features
        self.head_dim = self.dim // self.num_heads
        self.lowering = lowering
        self.qkv = qkv
        self.proj = proj
        self.register_buffer("pos_attn", pos_attn)  # (H, N, N) = g·P
        self.register_buffer("content_gate", gate)  # (H, 1, 1) = 1 − g

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        qkv = self.qkv(x).reshape(batch, self.tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        if self.lowering == "mix":
            attn = torch.addcmul(self.pos_attn, (q @ k.transpose(-2, -1)).softmax(dim=-1), self.content_gate)
            out = attn @ v
        else:
            content = F.scaled_dot_product_attention(q, k, v, scale=1.0)  # q carries the scale
            out = torch.addcmul(self.pos_attn @ v, content, self.content_gate)
        return self.proj(out.transpose(1, 2).reshape(batch, self.tokens, self.dim))

    def extra_repr(self) -> str:
        return f"heads={self.num_heads}, tokens={self.tokens}, lowering={self.lowering!r}"


@register_pass
class StaticGPSAPass(Pass):
    name: ClassVar[str] = "static_gpsa"
    matches_doc: ClassVar[str] = "ConViT GPSA"

    def __init__(self, lowering: str = "mix") -> None:
        if lowering not in LOWERINGS:
            raise ValueError(f"unknown GPSA lowering {lowering!r} (choose one of: {', '.join(LOWERINGS)})")
        self.lowering = lowering

    def matches(self, module: nn.Module) -> bool:
        return isinstance(module, GPSA)

    def rewrite(self, module: nn.Module) -> nn.Module:
        assert isinstance(module, GPSA)
        dim, scale = module.dim, module.scale
        qkv = fuse_linears(module.qk, module.v, row_scale=lambda i: scale if i < dim else 1.0)
        # P in float64 from the float32 parameters: closer to exact maths than the reference's float32.
        rel = module.rel_indices[0].double()
        logits = F.linear(rel, module.pos_proj.weight.double(), module.pos_proj.bias.double())
        pos = logits.permute(2, 0, 1).softmax(dim=-1)  # (H, N, N)
        gate = torch.sigmoid(module.gating_param.double()).view(-1, 1, 1)
        dtype = module.qk.weight.dtype
        return StaticGPSA(qkv, module.proj, (gate * pos).to(dtype), (1.0 - gate).to(dtype), self.lowering)
