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

Four lowerings, chosen per target by measurement (vitc.compile.pipeline):
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
  layout, so proj reads it without the transpose copy. Four kernels instead of six. torch.export
  records content + g·(P·v − content) instead: lerp needs one dtype, the traced program keeps no cast,
  and a program run under autocast meets bf16 operands beside the float32 gate.
* "heads": GPSA as one SDPA over 2·H heads, the launches of a plain attention block (qkv, SDPA,
  proj). Head H + h has query 0 and the additive mask log P_h, so softmax(0·kᵀ + log P_h) = P_h and
  its output is P_h·v; heads 0..H−1 are the content heads, mask 0. The qkv GEMM writes
  [q, 0, k, v, v] (the positional heads' keys are the v columns, which a zero query ignores), and
  proj = [(1 − g)·W | g·W] does the mix as part of its GEMM. It pays in FLOPs what it saves in
  launches: a 5/3 wider qkv, twice the attention and a 2× deep proj, and the mask rules out flash
  kernels (the memory-efficient ones take it). For PyTorch eager where the host's launches bound
  the forward; docs/inference_ablation.py times it beside the target's lowering.

Every lowering flushes subnormal table entries to zero (vitc.models.layers.flush_subnormals): the
float64 tables rounded to float32 keep values down to ~1e-45 at far offsets, and each multiply that
touches one takes a microcode assist on Intel cores, which slows the positional product several
times over (docs/benchmarks.md, "Intel: compiled ConViT-Ti").
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from vitc.compile._base import Pass, fuse_linears, linear_like, register_pass
from vitc.compile._exporting import is_exporting
from vitc.models.convit import GPSA, separable_product
from vitc.models.layers import flush_subnormals

__all__ = ["LOWERINGS", "StaticGPSA", "StaticGPSAPass", "separable_positional_attention"]

LOWERINGS = ("mix", "sdpa", "eager", "heads")
MASK_ALIGNMENT = 16  # elements: the memory-efficient SDPA kernels pad (copy) a mask whose rows are not aligned
SEPARABILITY_TOLERANCE = 1e-9  # float64: the identity is exact up to rounding


def _check_lowering(lowering: str) -> None:
    if lowering not in LOWERINGS:
        raise ValueError(f"unknown GPSA lowering {lowering!r} (choose one of: {', '.join(LOWERINGS)})")


class StaticGPSA(nn.Module):
    """GPSA for one fixed grid: fused qkv (q pre-scaled), the gated positional table, the gate.

    "mix" keeps the dense table pos_attn = g·P (H, N, N) and content_gate = 1 − g; "sdpa" keeps its
    factors pos_rows = P_y and pos_cols = g·P_x (H, S, S) and content_gate; "eager" keeps
    pos_rows = P_y, pos_cols = P_x repeated per grid row (H·S, S, S) and gate = g (H, 1, 1);
    "heads" keeps the mask head_logits = [0, log P] (1, 2·H, N, N padded to MASK_ALIGNMENT) and gate,
    with qkv and proj widened (stacked_qkv, gated_proj).
    """

    pos_attn: torch.Tensor
    pos_rows: torch.Tensor
    pos_cols: torch.Tensor
    content_gate: torch.Tensor
    gate: torch.Tensor
    head_logits: torch.Tensor

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

        if lowering == "heads":
            self.qkv, self.proj = stacked_qkv(qkv), gated_proj(proj, gate)
            self.register_buffer("head_logits", head_logits(pos_rows, pos_cols, dtype))
        elif lowering == "mix":
            self.register_buffer("pos_attn", table(kronecker(pos_rows, gate * pos_cols)))  # (H, N, N) = g·P
        elif lowering == "sdpa":
            self.register_buffer("pos_rows", table(pos_rows))  # (H, S, S) = P_y
            self.register_buffer("pos_cols", table(gate * pos_cols))  # (H, S, S) = g·P_x
        elif lowering == "eager":
            self.register_buffer("pos_rows", table(pos_rows))  # (H, S, S) = P_y
            per_row = pos_cols.unsqueeze(1).expand(-1, self.side, -1, -1)  # (H, S, S, S): P_x for every grid row
            self.register_buffer("pos_cols", table(per_row.reshape(-1, self.side, self.side)))  # (H·S, S, S)
        if lowering in ("eager", "heads"):
            self.register_buffer("gate", gate.to(dtype))  # (H, 1, 1) = g
        else:
            self.register_buffer("content_gate", (1.0 - gate).to(dtype))  # (H, 1, 1) = 1 − g

    def positional_table(self) -> torch.Tensor:
        """The dense g·P (H, N, N) this module applies, whichever the lowering."""
        if self.lowering == "mix":
            return self.pos_attn
        if self.lowering == "sdpa":
            return kronecker(self.pos_rows, self.pos_cols)
        if self.lowering == "heads":
            return self.gate * self.head_logits[0, self.num_heads :, :, : self.tokens].softmax(-1)
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

    def _forward_heads(self, x: torch.Tensor) -> torch.Tensor:
        """SDPA over 2·H heads on views of the [q, 0, k, v, v] GEMM output; proj mixes them."""
        batch, width = x.shape[0], self.dim  # width = H·d: one block of the qkv output
        fused = self.qkv(x)

        def heads(start: int) -> torch.Tensor:  # columns [start, start + 2·width) as (B, 2·H, N, d), a view
            block = fused[..., start : start + 2 * width]
            return block.view(batch, self.tokens, 2 * self.num_heads, self.head_dim).transpose(1, 2)

        mask = self.head_logits[..., : self.tokens]
        out = F.scaled_dot_product_attention(heads(0), heads(2 * width), heads(3 * width), mask, scale=1.0)
        return self.proj(out.transpose(1, 2).reshape(batch, self.tokens, 2 * self.dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.lowering == "heads":
            return self._forward_heads(x)
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
            if is_exporting():  # traced casts are no-ops, so none is kept: promote instead
                out = torch.addcmul(content, positional - content, self.gate)
            else:
                out = torch.lerp(content, _as(positional, content.dtype), _as(self.gate, content.dtype))
        return self.proj(out.transpose(1, 2).reshape(batch, self.tokens, self.dim))

    def extra_repr(self) -> str:
        return f"heads={self.num_heads}, tokens={self.tokens}, lowering={self.lowering!r}"


def _as(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """`tensor` in `dtype`, cast only under autocast: torch.export records even a no-op `.to()` as an
    assertion of the traced dtype and device (aten._assert_tensor_metadata), so a program exported on the
    CPU would refuse to run once moved to a GPU."""
    return tensor if tensor.dtype == dtype else tensor.to(dtype)


def kronecker(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Per head, rows[h] ⊗ cols[h]: (H, S, S) × (H, S, S) → (H, S², S²) on the row-major grid."""
    heads, side = rows.shape[0], rows.shape[1]
    return (rows[:, :, None, :, None] * cols[:, None, :, None, :]).reshape(heads, side * side, side * side)


def stacked_qkv(qkv: nn.Linear) -> nn.Linear:
    """qkv = [q, k, v] (3·D outputs) → [q, 0, k, v, v] (5·D): "heads"' queries [q, 0], keys [k, v]
    (read by zero queries only, where they are v) and values [v, v], as three overlapping views."""

    def stack(t: torch.Tensor) -> torch.Tensor:
        q, k, v = t.chunk(3)
        return torch.cat([q, torch.zeros_like(q), k, v, v])

    bias = None if qkv.bias is None else stack(qkv.bias)
    return linear_like(stack(qkv.weight), bias, qkv.weight.requires_grad)


def gated_proj(proj: nn.Linear, gate: torch.Tensor) -> nn.Linear:
    """proj over [content, positional] heads (2·D inputs) with the gate folded in, per head:
    proj((1 − g)·c + g·p) = [(1 − g)·W | g·W]·[c, p] + b, computed in float64."""
    heads, dim = gate.shape[0], proj.in_features
    per_column = gate.double().reshape(heads, 1).expand(heads, dim // heads).reshape(dim)
    weight = proj.weight.double()
    gated = torch.cat([weight * (1.0 - per_column), weight * per_column], dim=1).to(proj.weight.dtype)
    return linear_like(gated, proj.bias, proj.weight.requires_grad)


def head_logits(rows: torch.Tensor, cols: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The (1, 2·H, N, N) additive mask of "heads": zeros for the content heads, log(P_y ⊗ P_x) for the
    positional ones, in a buffer padded to MASK_ALIGNMENT columns (callers slice the first N). 4-D:
    PyTorch's CPU flash kernel takes a 4-D mask only (a 3-D one runs SDPA's eight-kernel math form).

    log P is taken in float64, before rounding to `dtype`; an entry flush_subnormals would zero (or
    that rounds to zero) becomes −inf, which softmax turns into the same exact zero.
    """
    heads, tokens = rows.shape[0], rows.shape[1] ** 2
    table = kronecker(rows.double(), cols.double())  # (H, N, N) = P, float64
    logits = table.log().masked_fill(flush_subnormals(table.to(dtype)) == 0, float("-inf"))
    padded = -(-tokens // MASK_ALIGNMENT) * MASK_ALIGNMENT
    mask = torch.zeros(1, 2 * heads, tokens, padded, dtype=dtype, device=rows.device)
    mask[0, heads:, :, :tokens] = logits.to(dtype)
    return mask


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
