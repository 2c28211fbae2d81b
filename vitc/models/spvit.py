"""SP-ViT: vision transformers with learned 2D spatial priors (SP-SA) on an LV-ViT base.

Zhou et al., "SP-ViT: Learning 2D Spatial Priors for Vision Transformers", BMVC 2022 (arXiv
2206.07662). Keys and numerics follow the official release
(github.com/ZhouYuxuanYX/SP-ViT-Learning-2D-Spatial-Priors-for-Vision-Transformers, built on
TokenLabeling/LV-ViT): a 4-conv "4_2" patch stem, pre-norm blocks whose residuals are divided by
`skip_lam`, MLP ratio 3, LayerNorm eps 1e-5, no qkv bias, a depthwise-conv PosCNN after every block,
SP-SA in blocks < `local_up_to_layer`, the class token inserted right before that block, and the
token-labelling `aux_head` whose eval output is head(cls) + 0.5·max_tokens(aux_head(patches)).

SP-SA multiplies the scaled logits by a per-head prior computed by an MLP over raw (dx, dy) offsets:
A^h = softmax((q·kᵀ)·d_h^-0.5 · SP^h), SP^h_ij = w2_hᵀ ReLU(W1_h r_ij + b1_h) + b2_h. SP ≡ 1 at init.

Differences from the release, on purpose:
* PosCNN knows whether the class token is present from the block index; the release tests "N is
  odd", which misfires on odd token grids (7×7, 9×9, ...).
* `spvit_l` uses SP-SA in blocks 0–21 as the paper and training script intend. The released
  `lvvit_l` builds every block as plain attention by mistake (150,205,520 parameters); ours has
  22·(4D+H) = 67,848 more: 150,273,368. `checkpoint_filter_fn` turns a released plain-attention
  block into an exactly equivalent SP-SA one (qkv split into qk/v, prior ≡ 1), so those weights load.
* Training mode returns the same single logit tensor as eval (no MixToken, no dense tuple): the vitc
  trainer optimises one output, and this keeps train and eval logits the same function.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vitc.models._checks import check_blocks, check_class_token, check_rates
from vitc.models._registry import build_model, register_model
from vitc.models.layers import (
    Attention,
    DropPath,
    Mlp,
    check_attn_impl,
    check_input_size,
    check_patch_grid,
    check_tokens,
    depthwise_conv_on_tokens,
    drop_path_rates,
    grid_to_tokens,
    init_weights_vit,
    qk_v_heads,
    relative_offsets,
    resample_pos_embed,
    run_block,
    runs_custom_backward,
    to_2tuple,
    without_autocast,
)
from vitc.models.prior_attention import PriorAttention, flex_prior_attention, prior_attention
from vitc.models.zoo_model import GLOBAL_POOLS, ZooModel, check_global_pool

__all__ = ["SPSA", "Block", "PatchEmbed4x2", "PosCNN", "SPViT", "checkpoint_filter_fn"]


class SPSA(nn.Module):
    """Self-attention whose scaled logits are multiplied by a learned 2D spatial prior (per head).

    `attn_impl="reference"` evaluates the prior MLP on all N×N (query, key) offsets, as the release
    does. `"fused"` (the default) computes the same function with less work: the prior depends
    only on the offset (dx, dy), of which an S×S grid has (2S−1)² distinct ones (729 against
    38,416 pairs at 14×14), so the MLP runs on those and a gather spreads them over (H, N, N),
    with the scale folded in, once per forward for every batch element.
    The prior multiplies the logits inside the softmax, which no fixed fused attention kernel
    expresses (it is not an additive mask), so the attention itself stays q·kᵀ, ⊙, softmax, @v.
    `"flex"` computes the same function with FlexAttention, the prior as a score modification
    (`flex_prior_attention`; CUDA only for training, where `vitc.models.formulation` measures it).
    """

    ATTN_IMPLS = ("fused", "flex", "reference")

    rel_indices: torch.Tensor
    offsets: torch.Tensor
    offset_index: torch.Tensor

    def __init__(
        self,
        dim: int,
        num_heads: int,
        grid: int,
        qkv_bias: bool = False,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        attn_impl: str = "fused",
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.attn_impl = check_attn_impl(attn_impl, self.ATTN_IMPLS)
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qk = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.v = nn.Linear(dim, dim, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.w1 = nn.Linear(2, dim)  # one 2 → d_h hidden layer per head
        self.w2 = nn.Parameter(torch.zeros(dim, 1))  # zeros + b2 ones: SP ≡ 1, plain attention at init
        self.b2 = nn.Parameter(torch.ones(num_heads))
        # Raw integer [dx, dy] offsets; fixed by the grid, rebuilt rather than stored in checkpoints.
        self.register_buffer("rel_indices", relative_offsets(grid)[None], persistent=False)
        # The (2S−1)² distinct [dx, dy] (row-major by dy, then dx) and each pair's index into them.
        span = torch.arange(1 - grid, grid, dtype=torch.float32)
        self.register_buffer("offsets", torch.cartesian_prod(span, span).flip(-1), persistent=False)
        index = (self.rel_indices[0, ..., 1] + grid - 1) * (2 * grid - 1) + self.rel_indices[0, ..., 0] + grid - 1
        self.register_buffer("offset_index", index.long(), persistent=False)

    def spatial_prior(self) -> torch.Tensor:
        """SP (H, N, N): the multiplicative prior, evaluated from the MLP every call (no cache)."""
        tokens = self.rel_indices.shape[1]
        hidden = F.relu(self.w1(self.rel_indices)).view(tokens, tokens, self.num_heads, self.head_dim)
        prior = torch.einsum("nmhc,hc->hnm", hidden, self.w2.view(self.num_heads, self.head_dim))
        return prior + self.b2[:, None, None]

    def offset_prior(self) -> torch.Tensor:
        """SP per distinct offset (H, (2S−1)²): the prior MLP on `offsets`; differentiable."""
        hidden = F.relu(self.w1(self.offsets)).view(-1, self.num_heads, self.head_dim)
        return torch.einsum("khc,hc->hk", hidden, self.w2.view(self.num_heads, self.head_dim)) + self.b2[:, None]

    def _forward_fused(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        check_tokens("SP-SA", self.rel_indices.shape[1], tokens)
        q, k, v = qk_v_heads(x, self.qk, self.v, self.num_heads)
        with without_autocast(x.device):  # batch-independent and small: fp32, no casts of the MLP and its gradients
            prior = (self.offset_prior() * self.scale)[:, self.offset_index]  # (H, N, N), scale folded in
        if self.attn_impl == "flex":
            out = flex_prior_attention(q, k, v, prior)
        elif runs_custom_backward() and any(t.requires_grad for t in (q, k, v, prior)):
            out = PriorAttention.apply(q, k, v, prior)
        else:
            out = prior_attention(q, k, prior)[0].to(v.dtype) @ v
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(batch, tokens, dim)))

    def _attention(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = x.shape
        check_tokens("SP-SA", self.rel_indices.shape[1], tokens)
        qk = self.qk(x).reshape(batch, tokens, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = qk.unbind(0)
        logits = (q @ k.transpose(-2, -1)) * self.scale
        return (logits * self.spatial_prior()).softmax(dim=-1)

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """Attention probabilities (B, H, N, N), for analysis."""
        return self._attention(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.attn_impl != "reference" and not (self.training and self.attn_drop.p > 0):
            return self._forward_fused(x)
        batch, tokens, dim = x.shape
        attn = self.attn_drop(self._attention(x))
        v = self.v(x).reshape(batch, tokens, self.num_heads, self.head_dim).permute(0, 2, 1, 3)
        x = (attn @ v).transpose(1, 2).reshape(batch, tokens, dim)
        return self.proj_drop(self.proj(x))


class PatchEmbed4x2(nn.Module):
    """LV-ViT's "4_2" stem: conv7×7/2 + two conv3×3 (BN, ReLU), then a k = s = patch/2 projection."""

    def __init__(
        self, img_size: int | tuple[int, int], patch_size: int, in_chans: int, embed_dim: int, stem_chans: int = 64
    ) -> None:
        super().__init__()
        height, width = self.img_size = to_2tuple(img_size)
        if patch_size % 2 or patch_size < 2:
            raise ValueError(f"the 4_2 stem needs an even patch size (stem stride 2 × projection), got {patch_size}")
        check_patch_grid((height, width), patch_size)
        self.grid_size = (height // patch_size, width // patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.conv1 = nn.Conv2d(in_chans, stem_chans, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_chans)
        self.conv2 = nn.Conv2d(stem_chans, stem_chans, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(stem_chans)
        self.conv3 = nn.Conv2d(stem_chans, stem_chans, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(stem_chans)
        # In place: BatchNorm's backward reads its input, not its output, so training keeps one
        # (B, 64, H/2, W/2) tensor fewer per stage.
        self.relu = nn.ReLU(inplace=True)
        self.proj = nn.Conv2d(stem_chans, embed_dim, kernel_size=patch_size // 2, stride=patch_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input_size(x, self.img_size)
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        x = self.relu(self.bn3(self.conv3(x)))
        return grid_to_tokens(self.proj(x))


class PosCNN(nn.Module):
    """CPVT-style conditional position encoding: x_grid + depthwise conv3×3(x_grid) on patch tokens."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Sequential(depthwise_conv_on_tokens(dim, kernel_size=3, stride=1, padding=1, bias=True))

    def forward(self, x: torch.Tensor, grid_size: tuple[int, int], has_cls: bool) -> torch.Tensor:
        batch, _, dim = x.shape
        cls, patches = (x[:, :1], x[:, 1:]) if has_cls else (None, x)
        feat = patches.transpose(1, 2).reshape(batch, dim, *grid_size)
        patches = grid_to_tokens(self.proj(feat) + feat)
        return patches if cls is None else torch.cat((cls, patches), dim=1)


class Block(nn.Module):
    """Pre-norm block with residuals divided by skip_lam, then PosCNN on the patch tokens."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        grid_size: tuple[int, int],
        use_spsa: bool,
        has_cls: bool,
        mlp_ratio: float = 3.0,
        qkv_bias: bool = False,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        skip_lam: float = 1.0,
        attn_impl: str = "fused",
    ) -> None:
        super().__init__()
        self.grid_size = grid_size
        self.has_cls = has_cls  # fixed by the block index: the class token joins before local_up_to_layer
        self.skip_lam = skip_lam
        self.norm1 = nn.LayerNorm(dim, eps=1e-5)
        if use_spsa:
            self.attn: nn.Module = SPSA(dim, num_heads, grid_size[0], qkv_bias, attn_drop, drop, attn_impl)
        else:
            self.attn = Attention(dim, num_heads, qkv_bias, attn_drop, drop, scale_queries=True)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=1e-5)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)
        self.pos_block = PosCNN(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x))) / self.skip_lam
        x = x + self.drop_path(self.mlp(self.norm2(x))) / self.skip_lam
        return self.pos_block(x, self.grid_size, self.has_cls)


class SPViT(ZooModel):
    """LV-ViT with SP-SA in the first `local_up_to_layer` blocks and a late class token.

    `attn_impl` picks SP-SA's formulation ("fused" by default, "flex", "reference"; see SPSA): the
    same function, modules and state-dict keys in every case. `global_pool` is timm's ConViT's (the
    final norm stays before it: token labelling's `aux_head` reads the normed patch tokens).
    """

    first_conv = "patch_embed.conv1"
    global_pools = GLOBAL_POOLS
    # The release resizes pos_embed for another img_size with plain bicubic F.interpolate, no antialias
    # (tlt/utils/utils.py resize_pos_embed_without_cls, from LV-ViT's TokenLabeling): see docs/models.md.
    pos_embed_antialias = False
    classifier_modules = ("head", "aux_head")  # token labelling: head(cls) + 0.5·max(aux_head(patches))

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dim: int = 384,
        depth: int = 16,
        num_heads: int = 6,
        mlp_ratio: float = 3.0,
        qkv_bias: bool = False,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        skip_lam: float = 1.0,
        local_up_to_layer: int = 10,
        stem_chans: int = 64,
        aux_head: bool = True,
        attn_impl: str = "fused",
        global_pool: str = "token",
    ) -> None:
        super().__init__()
        check_blocks(depth, embed_dim, num_heads, mlp_ratio)
        check_rates({"drop_rate": drop_rate, "attn_drop_rate": attn_drop_rate, "drop_path_rate": drop_path_rate})
        if not skip_lam > 0:
            raise ValueError(f"skip_lam must be positive (every residual branch is divided by it), got {skip_lam}")
        check_attn_impl(attn_impl, SPSA.ATTN_IMPLS)
        self.global_pool = check_global_pool(type(self).__name__, global_pool, self.global_pools)
        check_class_token(local_up_to_layer, depth, global_pool, other_reader=aux_head and num_classes > 0)
        self.num_classes = num_classes
        self.embed_dim = embed_dim
        self.local_up_to_layer = local_up_to_layer
        self.patch_embed = PatchEmbed4x2(img_size, patch_size, in_chans, embed_dim, stem_chans)
        grid = self.patch_embed.grid_size
        if local_up_to_layer > 0 and grid[0] != grid[1]:
            raise ValueError(f"SP-SA needs a square token grid, got {grid[0]}x{grid[1]}")
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        # With a late class token the position embedding covers the patches only (no class slot).
        self.num_prefix_tokens = 0 if local_up_to_layer > 0 else 1
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches + self.num_prefix_tokens, embed_dim))
        self.pos_drop = nn.Dropout(drop_rate)
        rates = drop_path_rates(drop_path_rate, depth)
        self.blocks = nn.ModuleList(
            Block(
                embed_dim,
                num_heads,
                grid,
                use_spsa=i < local_up_to_layer,
                has_cls=i >= local_up_to_layer,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                drop=drop_rate,
                attn_drop=attn_drop_rate,
                drop_path=rate,
                skip_lam=skip_lam,
                attn_impl=attn_impl,
            )
            for i, rate in enumerate(rates)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-5)
        self.use_aux_head = aux_head
        self.aux_head: nn.Module | None = None
        self._new_head(num_classes)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.apply(init_weights_vit)

    def no_weight_decay(self) -> set[str]:
        return {"pos_embed", "cls_token"}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised tokens (B, 1 + N, D), class token first."""
        x = self.patch_embed(x)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        if self.local_up_to_layer == 0:
            x = torch.cat((cls, x), dim=1)
        x = self.pos_drop(x + self.pos_embed)
        for i, block in enumerate(self.blocks):
            if i == self.local_up_to_layer and i > 0:
                x = torch.cat((cls, x), dim=1)
            x = run_block(block, self.grad_checkpointing, x)
        if self.local_up_to_layer == len(self.blocks) and self.local_up_to_layer > 0:
            x = torch.cat((cls, x), dim=1)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """head(pooled) + 0.5·max over patch tokens of aux_head: the release's eval output (token labelling);
        with `pre_logits` the pooled features, as timm's VOLO (LV-ViT's successor) gives."""
        if pre_logits:
            return super().forward_head(x, pre_logits=True)
        logits = self.head(self.pool(x))
        if self.aux_head is not None:
            aux = 0.5 * self.aux_head(x[:, 1:]).max(dim=1)[0]
            logits = logits + (aux if logits.dim() == 2 else aux.unsqueeze(1))  # global_pool='': every token's
        return logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def _new_head(self, num_classes: int) -> None:
        """The class token's head and, with `aux_head`, token labelling's over the patches, ViT-initialised."""
        super()._new_head(num_classes)
        use_aux = self.use_aux_head and num_classes > 0
        self.aux_head = nn.Linear(self.embed_dim, num_classes) if use_aux else None
        for module in (self.head, self.aux_head):
            if module is not None:
                module.apply(init_weights_vit)


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: SPViT) -> dict[str, torch.Tensor]:
    """Adapt an official SP-ViT state dict (already unwrapped) to `model`.

    Drops `rel_indices`, resamples `pos_embed` to the model's grid, and converts a plain `attn.qkv`
    block into the equivalent SP-SA block where the model has one (released SP-ViT-L has none).
    """
    own = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    fresh = torch.Generator().manual_seed(0)  # the prior MLP's first layer, as the model inits it, reproducibly
    for key, value in state_dict.items():
        key = key.removeprefix("module.")
        if key.endswith("rel_indices"):
            continue
        if key == "pos_embed" and value.shape != own[key].shape:
            value = resample_pos_embed(
                value, model.patch_embed.grid_size, model.num_prefix_tokens, antialias=model.pos_embed_antialias
            )
        prefix = key.removesuffix("attn.qkv.weight")
        if prefix != key and f"{prefix}attn.qk.weight" in own and f"{prefix}attn.qkv.weight" not in own:
            dim = value.shape[1]
            out[f"{prefix}attn.qk.weight"], out[f"{prefix}attn.v.weight"] = value[: 2 * dim], value[2 * dim :]
            # w2 = 0 and b2 = 1 make the prior exactly 1 (plain attention); w1 keeps a fresh init, as a new
            # model's: all-zero w1 and w2 would pass no gradient to either, and the prior could never train
            w1 = torch.empty(own[f"{prefix}attn.w1.weight"].shape)
            out[f"{prefix}attn.w1.weight"] = nn.init.trunc_normal_(w1, std=0.02, generator=fresh).to(value.device)
            out[f"{prefix}attn.w1.bias"] = torch.zeros_like(own[f"{prefix}attn.w1.bias"], device=value.device)
            out[f"{prefix}attn.w2"] = torch.zeros_like(own[f"{prefix}attn.w2"], device=value.device)
            out[f"{prefix}attn.b2"] = torch.ones_like(own[f"{prefix}attn.b2"], device=value.device)
            continue
        out[key] = value
    return out


def _spvit(overrides: dict[str, object], **defaults: object) -> SPViT:
    return build_model(SPViT, defaults, overrides)


_LARGE = "SP-SA in 22 blocks as intended; the release builds L with none (see spvit.py)"


@register_model("spvit", crop_pct=0.9)
def spvit_s(**kwargs: object) -> SPViT:
    """SP-ViT-S: 16 blocks of width 384, SP-SA in 0–13, 26,234,468 parameters."""
    return _spvit(kwargs, embed_dim=384, depth=16, num_heads=6, skip_lam=2.0, local_up_to_layer=14)


@register_model("spvit", crop_pct=1.0)
def spvit_m(**kwargs: object) -> SPViT:
    """SP-ViT-M: 20 blocks of width 512, SP-SA in 0–9, 55,952,992 parameters."""
    return _spvit(kwargs, embed_dim=512, depth=20, num_heads=8, skip_lam=2.0, local_up_to_layer=10)


@register_model("spvit", crop_pct=1.0, notes=_LARGE)
def spvit_l(**kwargs: object) -> SPViT:
    """SP-ViT-L: 24 blocks of width 768, stem 128, SP-SA in 0–21, 150,273,368 parameters."""
    return _spvit(kwargs, embed_dim=768, depth=24, num_heads=12, skip_lam=3.0, local_up_to_layer=22, stem_chans=128)


@register_model(
    "spvit", input_size=(3, 32, 32), num_classes=10, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), crop_pct=1.0
)
def spvit_micro(**kwargs: object) -> SPViT:
    """A 32×32 digits model: 8×8 tokens (stem stride 2 × projection 2), SP-SA in 4 of 6 blocks."""
    return _spvit(
        kwargs, img_size=32, patch_size=4, num_classes=10, embed_dim=96, depth=6, num_heads=4,
        local_up_to_layer=4, stem_chans=32,
    )  # fmt: skip
