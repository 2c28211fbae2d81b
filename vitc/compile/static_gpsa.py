"""Pass 1, static_gpsa: ConViT's GPSA → a static attention with a precomputed positional table.

For the model's fixed grid the positional half of GPSA, P = softmax(pos_proj(rel_indices)) (H, N, N),
depends on no input, and the gate g = σ(λ) is a constant per head. So

    out = proj(((1 − g)·softmax(q·kᵀ·s) + g·P) · v)

with g and 1 − g folded into constants. pos_proj, rel_indices, gating_param and the row
renormalisation disappear (a convex mix of row-stochastic matrices is row-stochastic). The qk and
v Linears become one qkv Linear (one GEMM), with the scale s folded into the q rows.

P is separable. The logits are w₀·dx + w₁·dy + w₂·(dx² + dy²) + b, a sum of a term in dx and a term
in dy (b cancels in the softmax), so on the row-major S×S grid P = P_y ⊗ P_x (Kronecker product)
with P_x = softmax(w₀·dx + w₂·dx²) and P_y = softmax(w₁·dy + w₂·dy²), each (H, S, S). The pass
checks the identity against the dense table in float64 for every rewrite.

Three lowerings, chosen per target by measurement (vitc.compile.pipeline):
* "mix": softmax(q·kᵀ), one addcmul mixes it with the dense g·P, then @v. Fewest ops, but it
  materialises B·H·N² probabilities and the N×N table; it was ONNX Runtime's best form until the
  positional term became separable. No target picks it now; it stays for comparison.
* "sdpa": (1 − g)·SDPA(q, k, v) + g·P·v, with P·v applied as P_x along grid columns, then P_y along
  rows: 2·S³·d instead of S⁴·d multiply-adds per head (7× fewer at 14×14) and two S×S tables
  instead of an N×N one. The content term is a standard attention that fused kernels (flash on CPU
  and GPU, TensorRT's MHA fusion) pick up. (1 − g) scales the (B, H, N, d) output rather than v, so
  g → 1 cannot blow up a folded 1/(1 − g). The graph the exporters and TensorRT see.
* "eager": the same maths laid out for PyTorch eager, where every op and copy is a kernel call of
  its own, on a CPU (docs/benchmarks.md, "Intel: compiled ConViT-Ti") as on a GPU whose small
  kernels wait on their launches (vitc.compile.pipeline, cuda). v is copied once, heads
  first, so that each axis is one batched GEMM with no broadcast copies (P_x is stored repeated
  per grid row); the mix is one lerp(content, P·v, g) that writes in SDPA's (B, N, H, d) output
  layout, so proj reads it without the transpose copy. Four kernels instead of six.

Every lowering flushes subnormal table entries to zero (vitc.models.layers.flush_subnormals): the
float64 tables rounded to float32 keep values down to ~1e-45 at far offsets, and each multiply that
touches one took a microcode assist on an Intel Xeon (4–6× the positional product's time,
docs/benchmarks.md, "Intel: compiled ConViT-Ti").
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from vitc.compile._base import Pass, fuse_linears, register_pass
from vitc.models.convit import GPSA, separable_product
from vitc.models.layers import flush_subnormals

__all__ = ["LOWERINGS", "StaticGPSA", "StaticGPSAPass", "separable_positional_attention"]

LOWERINGS = ("mix", "sdpa", "eager")
SEPARABILITY_TOLERANCE = 1e-9  # float64: the identity is exact up to rounding


def _check_lowering(lowering: str) -> None:
    if lowering not in LOWERINGS:
        raise ValueError(f"unknown GPSA lowering {lowering!r} (choose one of: {', '.join(LOWERINGS)})")


class StaticGPSA(nn.Module):
    """GPSA for one fixed grid: fused qkv (q pre-scaled), the gated positional table, the gate.

    "mix" keeps the dense table pos_attn = g·P (H, N, N) and content_gate = 1 − g; "sdpa" keeps its
    factors pos_rows = P_y and pos_cols = g·P_x (H, S, S) and content_gate; "eager" keeps
    pos_rows = P_y, pos_cols = P_x repeated per grid row (H·S, S, S) and gate = g (H, 1, 1).
    """

    pos_attn: torch.Tensor
    pos_rows: torch.Tensor
    pos_cols: torch.Tensor
    content_gate: torch.Tensor
    gate: torch.Tensor

    def __init__(
        self,
        qkv: nn.Linear,
        proj: nn.Linear,
        pos_rows: torch.Tensor,
        pos_cols: torch.Tensor,
        gate: torch.Tensor,
        lowering: str,
    ) -> None:
        """pos_rows = P_y, pos_cols = P_x (H, S, S) and the gate g (H, 1, 1), float64 preferably:
        each lowering folds g into its tables before rounding them to qkv's dtype."""
        super().__init__()
        _check_lowering(lowering)
        self.num_heads, self.side = pos_rows.shape[0], pos_rows.shape[1]
        self.tokens = self.side * self.side
        self.dim = proj.in_features
        self.head_dim = self.dim // self.num_heads
        self.lowering = lowering
        self.qkv = qkv
        self.proj = proj
        dtype = qkv.weight.dtype

        def table(values: torch.Tensor) -> torch.Tensor:
            return flush_subnormals(values.to(dtype)).contiguous()

        if lowering == "mix":
            self.register_buffer("pos_attn", table(kronecker(pos_rows, gate * pos_cols)))  # (H, N, N) = g·P
        elif lowering == "sdpa":
            self.register_buffer("pos_rows", table(pos_rows))  # (H, S, S) = P_y
            self.register_buffer("pos_cols", table(gate * pos_cols))  # (H, S, S) = g·P_x
        else:
            self.register_buffer("pos_rows", table(pos_rows))  # (H, S, S) = P_y
            per_row = pos_cols.unsqueeze(1).expand(-1, self.side, -1, -1)  # (H, S, S, S): P_x for every grid row
            self.register_buffer("pos_cols", table(per_row.reshape(-1, self.side, self.side)))  # (H·S, S, S)
        if lowering == "eager":
            self.register_buffer("gate", gate.to(dtype))  # (H, 1, 1) = g
        else:
            self.register_buffer("content_gate", (1.0 - gate).to(dtype))  # (H, 1, 1) = 1 − g

    def positional_table(self) -> torch.Tensor:
        """The dense g·P (H, N, N) this module applies, whichever the lowering."""
        if self.lowering == "mix":
            return self.pos_attn
        if self.lowering == "sdpa":
            return kronecker(self.pos_rows, self.pos_cols)
        cols = self.pos_cols.view(self.num_heads, self.side, self.side, self.side)[:, 0]
        return kronecker(self.pos_rows, self.gate * cols)

    def _positional_heads_first(self, qkv: torch.Tensor) -> torch.Tensor:
        """P·v (B, H, N, d), stored (H, N, B, d), from the qkv output (B, N, 3·H·d) ("eager")."""
        batch, side, heads, d = qkv.shape[0], self.side, self.num_heads, self.head_dim
        v = qkv.view(batch, side, side, 3, heads, d)[:, :, :, 2]  # (B, Y, X, H, d), a view
        per_row = v.permute(3, 1, 2, 0, 4).reshape(heads * side, side, batch * d)  # (H·Y, X, B·d): the one copy
        along_cols = torch.bmm(self.pos_cols, per_row)  # P_x on every (head, grid row)
        along_rows = torch.bmm(self.pos_rows, along_cols.view(heads, side, side * batch * d))  # P_y per head
        return along_rows.view(heads, self.tokens, batch, d).permute(2, 0, 1, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        fused = self.qkv(x)
        qkv = fused.reshape(batch, self.tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        if self.lowering == "mix":
            attn = torch.addcmul(self.pos_attn, (q @ k.transpose(-2, -1)).softmax(dim=-1), self.content_gate)
            out = attn @ v
        elif self.lowering == "sdpa":
            content = F.scaled_dot_product_attention(q, k, v, scale=1.0)  # q carries the scale
            out = torch.addcmul(separable_product(v, self.pos_rows, self.pos_cols), content, self.content_gate)
        else:  # content first: the output takes SDPA's (B, N, H, d) layout, and the reshape below is a view
            content = F.scaled_dot_product_attention(q, k, v, scale=1.0)
            positional = self._positional_heads_first(fused)  # under autocast: SDPA's and bmm's dtype
            out = torch.lerp(content, positional.to(content.dtype), self.gate.to(content.dtype))
        return self.proj(out.transpose(1, 2).reshape(batch, self.tokens, self.dim))

    def extra_repr(self) -> str:
        return f"heads={self.num_heads}, tokens={self.tokens}, lowering={self.lowering!r}"


def kronecker(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Per head, rows[h] ⊗ cols[h]: (H, S, S) × (H, S, S) → (H, S², S²) on the row-major grid."""
    heads, side = rows.shape[0], rows.shape[1]
    return (rows[:, :, None, :, None] * cols[:, None, :, None, :]).reshape(heads, side * side, side * side)


@torch.no_grad()
def separable_positional_attention(gpsa: GPSA) -> tuple[torch.Tensor, torch.Tensor]:
    """(P_y, P_x), each (H, S, S) in float64, with P_y ⊗ P_x = softmax(pos_proj(rel_indices)).

    Raises ValueError if the identity does not hold (it always does for GPSA's [dx, dy, dx²+dy²]
    features; the check guards the rewrite against a change to them).
    """
    rows, cols = gpsa.separable_positional(torch.float64)
    weight, bias = gpsa.pos_proj.weight.double(), gpsa.pos_proj.bias.double()
    dense = F.linear(gpsa.rel_indices[0].double(), weight, bias).permute(2, 0, 1).softmax(-1)
    error = float((kronecker(rows, cols) - dense).abs().max())
    if not error <= SEPARABILITY_TOLERANCE:
        raise ValueError(f"GPSA positional attention is not separable on its grid (error {error:.3g})")
    return rows, cols


@register_pass
class StaticGPSAPass(Pass):
    name: ClassVar[str] = "static_gpsa"

    def __init__(self, lowering: str = "sdpa", qkv_bias: bool = False) -> None:
        """`qkv_bias` gives the fused qkv a (zero) bias even where GPSA has none (see fuse_linears)."""
        _check_lowering(lowering)
        self.lowering = lowering
        self.qkv_bias = qkv_bias

    def matches(self, module: nn.Module) -> bool:
        return isinstance(module, GPSA)

    def rewrite(self, module: nn.Module) -> nn.Module:
        assert isinstance(module, GPSA)
        dim, scale = module.dim, module.scale
        qkv = fuse_linears(module.qk, module.v, row_scale=lambda i: scale if i < dim else 1.0, force_bias=self.qkv_bias)
        # Tables in float64 from the float32 parameters: closer to exact maths than the reference's float32.
        rows, cols = separable_positional_attention(module)
        gate = torch.sigmoid(module.gating_param.double()).view(-1, 1, 1)
        return StaticGPSA(qkv, module.proj, rows, cols, gate, self.lowering)
