"""DeiT: the plain ViT baseline that ConViT and SP-ViT are measured against.

Touvron et al., "Training data-efficient image transformers & distillation through attention",
ICML 2021. Keys and numerics follow facebookresearch/deit `models.py` and timm's
`deit_*_patch16_224` (qkv bias, LayerNorm eps 1e-6, class token before block 0, pos_embed over
class token + patches, head on the class token).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vitc.models._checks import check_blocks, check_rates
from vitc.models._registry import build_model, register_model
from vitc.models.layers import (
    Attention,
    DropPath,
    Mlp,
    PatchEmbed,
    drop_path_rates,
    init_weights_vit,
    resample_pos_embed,
    run_block,
)
from vitc.models.zoo_model import GLOBAL_POOLS, ZooModel, check_global_pool

__all__ = ["Block", "DeiT"]


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(LN(x)), then x + mlp(LN(x))."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        norm_eps: float = 1e-6,
        scale_queries: bool = True,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias, attn_drop, drop, scale_queries=scale_queries)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class DeiT(ZooModel):
    """Vision transformer with a class token and learned absolute position embeddings.

    `global_pool` and `fc_norm` are timm's VisionTransformer's: 'avg' pools the patch tokens, and by
    default (fc_norm=None) it moves the final LayerNorm after the pooling (`fc_norm`, `norm` an
    Identity), so a timm checkpoint trained that way loads as it is; fc_norm=False pools the normed
    tokens, as `reset_classifier(n, 'avg')` leaves a model built for the class token.
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
        num_heads: int = 3,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        global_pool: str = "token",
        fc_norm: bool | None = None,
    ) -> None:
        super().__init__()
        check_blocks(depth, embed_dim, num_heads, mlp_ratio)
        check_rates({"drop_rate": drop_rate, "attn_drop_rate": attn_drop_rate, "drop_path_rate": drop_path_rate})
        self.global_pool = check_global_pool(type(self).__name__, global_pool, self.global_pools)
        if fc_norm is not None and not isinstance(fc_norm, bool):
            raise ValueError(f"fc_norm must be true, false or left out (the pooling's default), got {fc_norm!r}")
        use_fc_norm = global_pool == "avg" if fc_norm is None else fc_norm
        self.num_classes = num_classes
        self.embed_dim = embed_dim
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches + 1, embed_dim))
        self.pos_drop = nn.Dropout(drop_rate)
        rates = drop_path_rates(drop_path_rate, depth)
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias, drop_rate, attn_drop_rate, rate) for rate in rates
        )
        self.norm = nn.Identity() if use_fc_norm else nn.LayerNorm(embed_dim, eps=1e-6)
        self.fc_norm = nn.LayerNorm(embed_dim, eps=1e-6) if use_fc_norm else nn.Identity()
        self._new_head(num_classes)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.apply(init_weights_vit)

    def no_weight_decay(self) -> set[str]:
        return {"pos_embed", "cls_token"}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        x = self.pos_drop(x + self.pos_embed)
        for block in self.blocks:
            x = run_block(block, self.grad_checkpointing, x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """timm's ViT head: the pooled tokens through `fc_norm` (an Identity unless it holds the final norm)."""
        pooled = self.fc_norm(self.pool(x))
        return pooled if pre_logits else self.head(pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def pooling_args(self) -> dict[str, Any]:
        """global_pool, and fc_norm where it is not the pooling's default (after reset_classifier changed the pool)."""
        after = isinstance(self.fc_norm, nn.LayerNorm)
        return {**super().pooling_args(), "fc_norm": None if after == (self.global_pool == "avg") else after}


def _deit(overrides: dict[str, object], **defaults: object) -> DeiT:
    return build_model(DeiT, defaults, overrides)


@register_model("deit")
def deit_tiny(**kwargs: object) -> DeiT:
    """DeiT-Ti: 192 wide, 3 heads, 5.7M parameters."""
    return _deit(kwargs, embed_dim=192, num_heads=3)


@register_model("deit")
def deit_small(**kwargs: object) -> DeiT:
    """DeiT-S: 384 wide, 6 heads, 22.1M parameters."""
    return _deit(kwargs, embed_dim=384, num_heads=6)


@register_model("deit")
def deit_base(**kwargs: object) -> DeiT:
    """DeiT-B: 768 wide, 12 heads, 86.6M parameters."""
    return _deit(kwargs, embed_dim=768, num_heads=12)


@register_model("deit", input_size=(3, 32, 32), num_classes=10, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), crop_pct=1.0)
def deit_micro(**kwargs: object) -> DeiT:
    """A 0.7M DeiT for 32×32 inputs (4×4 patches), sized like convit_micro for a fair comparison on CPU."""
    return _deit(kwargs, img_size=32, patch_size=4, num_classes=10, embed_dim=96, depth=6, num_heads=4)


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: DeiT) -> dict[str, torch.Tensor]:
    """Adapt an official/timm DeiT state dict: drop distillation extras, resample pos_embed to the model's grid."""
    out = {k: v for k, v in state_dict.items() if not k.startswith(("dist_token", "head_dist"))}
    if "pos_embed" in out:
        pos_embed = out["pos_embed"]
        if "dist_token" in state_dict and pos_embed.dim() == 3:  # distilled: [cls, dist, grid...]
            pos_embed = torch.cat([pos_embed[:, :1], pos_embed[:, 2:]], dim=1)
        out["pos_embed"] = resample_pos_embed(pos_embed, model.patch_embed.grid_size, num_prefix_tokens=1)
    _check_final_norm(out, model)
    return out


def _check_final_norm(state_dict: dict[str, torch.Tensor], model: DeiT) -> None:
    """A ValueError where the weights' final LayerNorm sits on the other side of the pooling than the model's:
    timm's global_pool='avg' moves it after (fc_norm), and the key table alone would not say what to pass."""
    after = "fc_norm.weight" in state_dict
    if not after and "norm.weight" not in state_dict:
        return  # no final norm at all: the key table says so
    if after and not isinstance(model.fc_norm, nn.LayerNorm):
        raise ValueError(
            "their final LayerNorm is fc_norm, after an average pooling, as timm builds global_pool='avg': "
            "pass global_pool='avg'"
        )
    if not after and isinstance(model.fc_norm, nn.LayerNorm):
        raise ValueError(
            "their final LayerNorm is norm, before the pooling, where this model's global_pool='avg' has it after "
            "(fc_norm, timm's default): pass fc_norm=False to average their normed tokens"
        )
