"""ConViT: a ViT whose first layers use gated positional self-attention (GPSA).

d'Ascoli et al., "ConViT: Improving Vision Transformers with Soft Convolutional Inductive Biases",
ICML 2021 (arXiv 2103.10697). Keys and numerics follow facebookresearch/convit `convit.py` and
timm's `convit_*` (the two are interchangeable): GPSA blocks 0 … local_up_to_layer−1 mix a content
softmax with a positional softmax over relative offsets, gated per head; the class token joins
only before the first plain MHSA block; pos_embed has no class slot; LayerNorm eps 1e-6.
`embed_dim` is the TOTAL width, as in the official class (timm's takes the per-head width).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vitc.models._checks import check_blocks, check_class_token, check_rates
from vitc.models._registry import build_model, register_model
from vitc.models.layers import (
    Attention,
    DropPath,
    Mlp,
    PatchEmbed,
    check_attn_impl,
    check_tokens,
    content_attention,
    drop_path_rates,
    flush_subnormals,
    init_weights_vit,
    qk_v_heads,
    relative_offsets,
    resample_pos_embed,
    run_block,
    runs_custom_backward,
    square_grid,
    without_autocast,
)
from vitc.models.zoo_model import GLOBAL_POOLS, ZooModel, check_global_pool

__all__ = ["GPSA", "MHSA", "Block", "ConViT", "DensePositional", "checkpoint_filter_fn", "rel_indices"]


def rel_indices(grid: int, dtype: torch.dtype = torch.float32, device: torch.device | None = None) -> torch.Tensor:
    """(1, N, N, 3) channels [dx, dy, dx²+dy²] from query n to key m: the input of GPSA's pos_proj."""
    offsets = relative_offsets(grid, dtype=dtype, device=device)
    dist = offsets.pow(2).sum(-1, keepdim=True)
    return torch.cat((offsets, dist), dim=-1).unsqueeze(0)


def separable_product(v: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """(P_y ⊗ P_x)·v per head without forming the (N, N) table: P_x along grid columns, then P_y
    along rows. v (B, H, S·S, d) row-major tokens; rows = P_y, cols = P_x (H, S, S), v's dtype."""
    batch, heads, tokens, head_dim = v.shape
    side = rows.shape[-1]
    along_cols = cols.unsqueeze(1) @ v.reshape(batch, heads, side, side, head_dim)
    return (rows @ along_cols.reshape(batch, heads, side, side * head_dim)).reshape(batch, heads, tokens, head_dim)


class SeparablePositional(torch.autograd.Function):
    """`separable_product` that saves only its inputs for the backward.

    Autograd would keep a (B, H, N, d) copy of v and the intermediate P_x·v of every block, two
    more activations than the content attention's; the backward recomputes the intermediate (one
    product of S×S tables, 1/S of the dense table's work) and reuses v, which the content
    attention saves anyway.
    """

    @staticmethod
    def forward(ctx, v: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(v, rows, cols)
        return separable_product(v, rows, cols)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        v, rows, cols = ctx.saved_tensors
        batch, heads, tokens, head_dim = v.shape
        side = rows.shape[-1]
        grid_v = v.reshape(batch, heads, side, side, head_dim)
        grad_out = grad_out.reshape(batch, heads, side, side * head_dim)
        grad_rows = grad_cols = None
        if ctx.needs_input_grad[1]:
            along_cols = (cols.unsqueeze(1) @ grid_v).reshape(batch, heads, side, side * head_dim)
            grad_rows = (grad_out @ along_cols.transpose(-2, -1)).sum(dim=0)
            del along_cols
        grad_along = (rows.transpose(-2, -1) @ grad_out).reshape(batch, heads, side, side, head_dim)
        if ctx.needs_input_grad[2]:
            grad_cols = (grad_along @ grid_v.transpose(-2, -1)).sum(dim=(0, 2))
        grad_v = (cols.transpose(-2, -1).unsqueeze(1) @ grad_along).reshape(batch, heads, tokens, head_dim)
        return grad_v, grad_rows, grad_cols


def dense_product(v: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """P·v per head for v (B, H, N, d) and P (H, N, N): one (N×N)·(N×B·d) GEMM per head."""
    batch, heads, tokens, head_dim = v.shape
    per_head = v.permute(1, 2, 0, 3).reshape(heads, tokens, batch * head_dim)
    return (table @ per_head).view(heads, tokens, batch, head_dim).permute(2, 0, 1, 3)


class DensePositional(torch.autograd.Function):
    """`dense_product` that saves v and P rather than v's per-head (H, N, B·d) copy, which autograd
    would keep for every block; the backward rebuilds it (one copy of v, as the forward did)."""

    @staticmethod
    def forward(ctx, v: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(v, table)
        return dense_product(v, table)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        v, table = ctx.saved_tensors
        batch, heads, tokens, head_dim = v.shape
        grad = grad_out.permute(1, 2, 0, 3).reshape(heads, tokens, batch * head_dim)
        grad_table = None
        if ctx.needs_input_grad[1]:
            per_head = v.permute(1, 2, 0, 3).reshape(heads, tokens, batch * head_dim)
            grad_table = grad @ per_head.transpose(-2, -1)
            del per_head
        grad_v = (table.transpose(-2, -1) @ grad).view(heads, tokens, batch, head_dim).permute(2, 0, 1, 3)
        return grad_v, grad_table


class GPSA(nn.Module):
    """Gated positional self-attention: out = proj(((1 − g)·softmax(q·kᵀ·s) + g·P) · v), g = σ(λ).

    `attn_impl="reference"` runs the reference's training-time forward as written: the positional
    scores pos_proj(rel_indices) expanded to every batch element, two softmaxes over B·H·N², the
    mix, and a row renormalisation (a no-op in exact arithmetic: a convex mix of row-stochastic
    matrices is row-stochastic). `"fused"` (the default) computes the same function:

    * the content term is softmax(q·kᵀ·s)·v, one `scaled_dot_product_attention` call, whose fused
      kernels never materialise the (B, H, N, N) probabilities (`content_attention`);
    * the positional term P·v uses P = softmax(pos_proj(rel_indices)) built once per forward for
      all heads and no batch. Its logits w₀·dx + w₁·dy + w₂·(dx² + dy²) + b are a term in dx plus a
      term in dy (b cancels in the softmax), so on the row-major S×S grid P = P_y ⊗ P_x with
      (H, S, S) factors, applied along grid columns then rows: 2·S³ instead of S⁴ multiply-adds
      per head and channel, and autograd reaches pos_proj.weight through both factors (small
      grids use the dense P, see `dense_positional_grid`; `"fused_dense"` uses it at every grid:
      the (2·S³ vs S⁴) saving in work against one large GEMM per head, which a GPU may run faster
      than many small ones — `vitc.models.formulation` measures which, on the device that trains);
    * the gate g is folded into the positional table and (1 − g) scales the content output, so
      autograd keeps no extra (B, H, N, d) tensor for the gate's gradient.

    pos_proj.bias has no effect on the output (softmax is shift-invariant): its gradient is zero
    in exact arithmetic, rounding noise in both forms.
    attention_map() always shows the reference's probabilities; with attention dropout active in
    training the module runs the reference form (dropout acts on the mixed matrix).

    rel_indices is a non-persistent buffer for the model's fixed grid, so it follows `.to()` and
    never enters the state_dict (official checkpoints do not have it).
    """

    ATTN_IMPLS = ("fused", "fused_dense", "reference")
    rel_indices: torch.Tensor
    # Up to this grid side the dense P (S⁴ per head and channel, in one GEMM per head) ran faster
    # than the separable form's small batched products (docs/benchmarks.md, "Training throughput").
    dense_positional_grid = 8

    def __init__(
        self,
        dim: int,
        num_heads: int,
        grid: int,
        qkv_bias: bool = False,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        locality_strength: float = 1.0,
        attn_impl: str = "fused",
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.attn_impl = check_attn_impl(attn_impl, self.ATTN_IMPLS)
        self.grid = grid
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.locality_strength = locality_strength
        self.qk = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.v = nn.Linear(dim, dim, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.pos_proj = nn.Linear(3, num_heads)
        self.proj_drop = nn.Dropout(proj_drop)
        self.gating_param = nn.Parameter(torch.ones(num_heads))
        self.register_buffer("rel_indices", rel_indices(grid), persistent=False)

    @torch.no_grad()
    def local_init(self, locality_strength: float | None = None) -> None:
        """v = identity; head p = h1 + k·h2 attends around offset (h2−c, h1−c), sharpness α."""
        alpha = self.locality_strength if locality_strength is None else locality_strength
        self.v.weight.copy_(torch.eye(self.dim, device=self.v.weight.device, dtype=self.v.weight.dtype))
        locality_distance = 1  # hard-coded in the reference
        kernel_size = int(self.num_heads**0.5)
        center = (kernel_size - 1) / 2 if kernel_size % 2 == 0 else kernel_size // 2
        weight = self.pos_proj.weight
        for h1 in range(kernel_size):
            for h2 in range(kernel_size):
                position = h1 + kernel_size * h2
                weight[position, 2] = -1
                weight[position, 1] = 2 * (h1 - center) * locality_distance
                weight[position, 0] = 2 * (h2 - center) * locality_distance
        weight.mul_(alpha)

    def _attention(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = x.shape
        check_tokens("GPSA", self.rel_indices.shape[1], tokens)
        qk = self.qk(x).reshape(batch, tokens, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = qk.unbind(0)
        pos_score = self.pos_proj(self.rel_indices.expand(batch, -1, -1, -1)).permute(0, 3, 1, 2)
        patch_score = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        pos_score = pos_score.softmax(dim=-1)
        gating = torch.sigmoid(self.gating_param.view(1, -1, 1, 1))
        attn = (1.0 - gating) * patch_score + gating * pos_score
        return attn / attn.sum(dim=-1).unsqueeze(-1)  # a no-op in exact arithmetic; kept to match bits

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """Final attention probabilities (B, H, N, N), for analysis."""
        return self._attention(x)

    def positional_attention(self) -> torch.Tensor:
        """The input-independent positional term softmax(pos_proj(rel_indices)), (H, N, N)."""
        return self.pos_proj(self.rel_indices[0]).permute(2, 0, 1).softmax(dim=-1)

    def separable_positional(self, dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(P_y, P_x), each (H, S, S), with P_y ⊗ P_x = positional_attention(); differentiable."""
        weight, bias = self.pos_proj.weight, self.pos_proj.bias  # weight columns: dx, dy, d²
        if dtype is not None:
            weight, bias = weight.to(dtype), bias.to(dtype)
        side = self.grid
        delta = self.rel_indices[0, :side, :side, 0].to(weight.dtype)  # [a, b] = b − a along one grid axis
        quad = weight[:, 2, None, None] * delta**2
        # The bias cancels in the softmax; it stays in the graph so that every parameter gets a
        # gradient (DDP requires it), ~0 as in the reference.
        rows = (weight[:, 1, None, None] * delta + quad + bias[:, None, None]).softmax(dim=-1)
        cols = (weight[:, 0, None, None] * delta + quad).softmax(dim=-1)
        return rows, cols

    def _forward_fused(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        check_tokens("GPSA", self.rel_indices.shape[1], tokens)
        q, k, v = qk_v_heads(x, self.qk, self.v, self.num_heads)
        content = content_attention(q, k, v, self.scale)
        gate = torch.sigmoid(self.gating_param).view(-1, 1, 1)
        out = torch.addcmul(self._positional(v, gate), content, (1.0 - gate).to(content.dtype))
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(batch, tokens, dim)))

    def _positional(self, v: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        """g·P·v for v (B, H, N, d) and gate g (H, 1, 1), P built once for the whole batch.

        The tables are built in fp32 even under autocast: they are batch-independent and small, and
        autocast would cast rel_indices and pos_proj's weights and their gradients at every step.
        """
        dense = self.attn_impl == "fused_dense" or self.grid <= self.dense_positional_grid
        with without_autocast(v.device):
            if dense:
                table = flush_subnormals((gate * self.positional_attention()).to(v.dtype))
            else:
                rows, cols = self.separable_positional()
                rows, cols = flush_subnormals((gate * rows).to(v.dtype)), flush_subnormals(cols.to(v.dtype))
        if dense:
            return DensePositional.apply(v, table) if runs_custom_backward() else dense_product(v, table)
        product = SeparablePositional.apply if runs_custom_backward() else separable_product
        return product(v, rows, cols)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.attn_impl != "reference" and not (self.training and self.attn_drop.p > 0):
            return self._forward_fused(x)
        batch, tokens, dim = x.shape
        attn = self.attn_drop(self._attention(x))
        v = self.v(x).reshape(batch, tokens, self.num_heads, self.head_dim).permute(0, 2, 1, 3)
        x = (attn @ v).transpose(1, 2).reshape(batch, tokens, dim)
        return self.proj_drop(self.proj(x))

    def extra_repr(self) -> str:
        return f"heads={self.num_heads}, grid={self.grid}, attn_impl={self.attn_impl!r}"


def MHSA(dim: int, num_heads: int, qkv_bias: bool = False, attn_drop: float = 0.0, proj_drop: float = 0.0) -> Attention:
    """ConViT's plain blocks: fused qkv, scores computed as (q@kᵀ)·scale."""
    return Attention(dim, num_heads, qkv_bias, attn_drop, proj_drop, scale_queries=False)


class Block(nn.Module):
    """Pre-norm block whose attention is GPSA (`use_gpsa`) or plain MHSA."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        grid: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = False,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        use_gpsa: bool = True,
        locality_strength: float = 1.0,
        attn_impl: str = "fused",
    ) -> None:
        super().__init__()
        self.use_gpsa = use_gpsa
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn: nn.Module
        if use_gpsa:
            self.attn = GPSA(dim, num_heads, grid, qkv_bias, attn_drop, drop, locality_strength, attn_impl)
        else:
            self.attn = MHSA(dim, num_heads, qkv_bias, attn_drop, drop)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class ConViT(ZooModel):
    """ViT with GPSA blocks first and a class token inserted before block `local_up_to_layer`.

    `attn_impl` picks GPSA's formulation ("fused" by default, "fused_dense", "reference"; see GPSA):
    the same function, modules and state-dict keys in every case. `global_pool` is timm's ConViT's.
    """

    global_pools = GLOBAL_POOLS

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dim: int = 192,
        depth: int = 12,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = False,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        local_up_to_layer: int = 10,
        locality_strength: float = 1.0,
        attn_impl: str = "fused",
        global_pool: str = "token",
    ) -> None:
        super().__init__()
        check_blocks(depth, embed_dim, num_heads, mlp_ratio)
        check_rates({"drop_rate": drop_rate, "attn_drop_rate": attn_drop_rate, "drop_path_rate": drop_path_rate})
        check_attn_impl(attn_impl, GPSA.ATTN_IMPLS)
        self.global_pool = check_global_pool(type(self).__name__, global_pool, self.global_pools)
        check_class_token(local_up_to_layer, depth, global_pool)
        self.num_classes = num_classes
        self.embed_dim = embed_dim
        self.local_up_to_layer = local_up_to_layer
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        rows, cols = self.patch_embed.grid_size
        if rows != cols:
            raise ValueError(
                f"ConViT needs a square token grid (GPSA's relative offsets), got {rows}x{cols} patches; "
                "use a square img_size"
            )
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches, embed_dim))
        self.pos_drop = nn.Dropout(drop_rate)
        rates = drop_path_rates(drop_path_rate, depth)
        self.blocks = nn.ModuleList(
            Block(
                embed_dim,
                num_heads,
                rows,
                mlp_ratio,
                qkv_bias,
                drop_rate,
                attn_drop_rate,
                rate,
                use_gpsa=i < local_up_to_layer,
                locality_strength=locality_strength,
                attn_impl=attn_impl,
            )
            for i, rate in enumerate(rates)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self._new_head(num_classes)
        # Reference order: standard init everywhere, then the local init overrides v and pos_proj.
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.apply(init_weights_vit)
        for module in self.modules():
            if isinstance(module, GPSA):
                module.local_init()

    def no_weight_decay(self) -> set[str]:
        gates = {f"blocks.{i}.attn.gating_param" for i in range(self.local_up_to_layer)}
        return {"pos_embed", "cls_token"} | gates

    def _add_cls(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """All normed tokens (B, 1+N, D), class token first (timm semantics)."""
        x = self.pos_drop(self.patch_embed(x) + self.pos_embed)
        for i, block in enumerate(self.blocks):
            if i == self.local_up_to_layer:
                x = self._add_cls(x)
            x = run_block(block, self.grad_checkpointing, x)
        if self.local_up_to_layer == len(self.blocks):  # all-GPSA: the class token still needs a slot
            x = self._add_cls(x)
        return self.norm(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def checkpoint_filter_fn(state_dict: dict[str, Any], model: ConViT) -> dict[str, Any]:
    """Adapt an official/timm state dict (same keys as ours): drop cached rel_indices, resample pos_embed."""
    if "model" in state_dict and isinstance(state_dict["model"], dict):  # official training checkpoints wrap it
        state_dict = state_dict["model"]
    out: dict[str, Any] = {}
    grid = model.patch_embed.grid_size
    for key, value in state_dict.items():
        if key.endswith("rel_indices"):
            continue
        if key == "pos_embed" and value.shape[1] != grid[0] * grid[1]:
            square_grid(value.shape[1], "ConViT pos_embed")  # a clear error for a malformed file
            value = resample_pos_embed(value, grid, num_prefix_tokens=0)
        out[key] = value
    return out


def _convit(overrides: dict[str, object], **defaults: object) -> ConViT:
    return build_model(ConViT, defaults, overrides)


@register_model("convit")
def convit_tiny(**kwargs: object) -> ConViT:
    """ConViT-Ti: 4 heads × 48 = 192 wide, 5.7M parameters."""
    return _convit(kwargs, embed_dim=192, num_heads=4)


@register_model("convit")
def convit_tiny_plus(**kwargs: object) -> ConViT:
    """ConViT-Ti+: 4 heads × 64 = 256 wide, 10.0M parameters."""
    return _convit(kwargs, embed_dim=256, num_heads=4)


@register_model("convit")
def convit_small(**kwargs: object) -> ConViT:
    """ConViT-S: 9 heads × 48 = 432 wide (an exact 3×3 local init), 27.8M parameters."""
    return _convit(kwargs, embed_dim=432, num_heads=9)


@register_model("convit")
def convit_small_plus(**kwargs: object) -> ConViT:
    """ConViT-S+: 9 heads × 64 = 576 wide, 49.0M parameters."""
    return _convit(kwargs, embed_dim=576, num_heads=9)


@register_model("convit")
def convit_base(**kwargs: object) -> ConViT:
    """ConViT-B: 16 heads × 48 = 768 wide, 86.5M parameters."""
    return _convit(kwargs, embed_dim=768, num_heads=16)


@register_model("convit")
def convit_base_plus(**kwargs: object) -> ConViT:
    """ConViT-B+: 16 heads × 64 = 1024 wide, 153.1M parameters."""
    return _convit(kwargs, embed_dim=1024, num_heads=16)


@register_model(
    "convit", input_size=(3, 32, 32), num_classes=10, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), crop_pct=1.0
)
def convit_micro(**kwargs: object) -> ConViT:
    """A 32×32 digits-sized ConViT (8×8 grid, 4 GPSA + 2 MHSA blocks) for quick experiments."""
    return _convit(
        kwargs, img_size=32, patch_size=4, num_classes=10, embed_dim=96, depth=6, num_heads=4, local_up_to_layer=4
    )
