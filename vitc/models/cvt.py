"""CvT: convolutional token embeddings and convolutional q/k/v projections, no position embeddings.

Wu et al., "CvT: Introducing Convolutions to Vision Transformers", ICCV 2021. Keys and numerics
follow microsoft/CvT `lib/models/cls_cvt.py` (`stage{i}.patch_embed`, `attn.conv_proj_q.conv/bn`,
`attn.proj_q`, `stage2.cls_token`, `norm`, `head`): `dw_bn` projections (depthwise 3×3 + BN,
stride 1 for q and 2 for k/v), class token in the last stage only and kept out of the convolutions,
attention scale dim_out^-0.5 (the full stage width, not the head width), pre-norm blocks.

The official weights were trained with QuickGELU (`act="quick_gelu"`, the default). Hugging Face
transformers' `CvtForImageClassification` uses exact erf GELU; `act="gelu"` reproduces its logits.
`checkpoint_filter_fn` loads both the official and the Hugging Face key layout.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vitc.limits import MAX_IMG_SIZE
from vitc.models._checks import check_blocks, check_rates
from vitc.models._registry import build_model, register_model
from vitc.models.layers import (
    DropPath,
    Mlp,
    QuickGELU,
    depthwise_conv_on_tokens,
    drop_path_rates,
    init_weights_vit,
    run_block,
    runs_written_attention,
    to_2tuple,
)
from vitc.models.zoo_model import ZooModel, check_global_pool

__all__ = ["ConvAttention", "ConvEmbed", "CvT", "CvTBlock", "CvTStage", "checkpoint_filter_fn"]

_ACTS: dict[str, type[nn.Module]] = {"quick_gelu": QuickGELU, "gelu": nn.GELU}


class ConvEmbed(nn.Module):
    """Overlapping strided conv (with bias) then LayerNorm over channels; keeps the (B, C, H, W) map."""

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int, stride: int, padding: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=stride, padding=padding)
        self.norm = nn.LayerNorm(embed_dim, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        batch, chans, height, width = x.shape
        x = self.norm(x.flatten(2).transpose(1, 2))
        return x.transpose(1, 2).reshape(batch, chans, height, width)


class ConvProj(nn.Module):
    """`dw_bn`: depthwise 3×3 conv without bias, BatchNorm, then back to tokens (B, H'·W', C)."""

    def __init__(self, dim: int, kernel_size: int, stride: int, padding: int) -> None:
        super().__init__()
        self.conv = depthwise_conv_on_tokens(dim, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x)).flatten(2).transpose(1, 2)


class ConvAttention(nn.Module):
    """Multi-head attention whose q/k/v come from depthwise convs (k/v at half resolution).

    The class token skips the convolutions and is prepended again before the Linear projections.
    The scale is dim^-0.5 over the whole width, as in both the official code and HF.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        with_cls_token: bool = False,
        kernel_size: int = 3,
        stride_q: int = 1,
        stride_kv: int = 2,
        padding: int = 1,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.with_cls_token = with_cls_token
        self.scale = dim**-0.5  # full stage width, NOT head_dim (official `dim_out ** -0.5`)
        self.conv_proj_q = ConvProj(dim, kernel_size, stride_q, padding)
        self.conv_proj_k = ConvProj(dim, kernel_size, stride_kv, padding)
        self.conv_proj_v = ConvProj(dim, kernel_size, stride_kv, padding)
        self.proj_q = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj_k = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj_v = nn.Linear(dim, dim, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        return x.reshape(batch, tokens, self.num_heads, dim // self.num_heads).transpose(1, 2)  # (B, h, T, d)

    def _qkv(self, x: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.with_cls_token:
            cls_token, x = torch.split(x, [1, height * width], dim=1)
        grid = x.transpose(1, 2).reshape(x.shape[0], x.shape[2], height, width)
        q, k, v = self.conv_proj_q(grid), self.conv_proj_k(grid), self.conv_proj_v(grid)
        if self.with_cls_token:
            q, k, v = (torch.cat((cls_token, t), dim=1) for t in (q, k, v))
        return self._heads(self.proj_q(q)), self._heads(self.proj_k(k)), self._heads(self.proj_v(v))

    def attention_map(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Attention probabilities (B, heads, T_q, T_kv), for analysis."""
        q, k, _ = self._qkv(x, height, width)
        return (torch.einsum("bhlk,bhtk->bhlt", q, k) * self.scale).softmax(dim=-1)

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        q, k, v = self._qkv(x, height, width)
        if runs_written_attention(x):
            attn = self.attn_drop((torch.einsum("bhlk,bhtk->bhlt", q, k) * self.scale).softmax(dim=-1))
            x = torch.einsum("bhlt,bhtv->bhlv", attn, v)
        else:
            x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop.p * self.training, scale=self.scale)
        x = x.transpose(1, 2).flatten(2)  # heads merged in (h d) order
        return self.proj_drop(self.proj(x))


class CvTBlock(nn.Module):
    """Pre-norm block: x + attn(LN(x)), then x + mlp(LN(x)); the grid size travels with the tokens."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        with_cls_token: bool = False,
        act_layer: type[nn.Module] = QuickGELU,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-5)
        self.attn = ConvAttention(dim, num_heads, qkv_bias, attn_drop, drop, with_cls_token)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=1e-5)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=drop)

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), height, width))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class CvTStage(nn.Module):
    """One resolution: conv embedding, optional class token, blocks. Returns the map and the class token."""

    grad_checkpointing = False  # set by CvT.set_grad_checkpointing

    def __init__(
        self,
        in_chans: int,
        dim: int,
        depth: int,
        num_heads: int,
        patch_size: int,
        stride: int,
        padding: int,
        mlp_ratio: float,
        qkv_bias: bool,
        drop: float,
        attn_drop: float,
        drop_path_rate: float,
        with_cls_token: bool,
        act_layer: type[nn.Module],
    ) -> None:
        super().__init__()
        self.patch_embed = ConvEmbed(in_chans, dim, patch_size, stride, padding)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if with_cls_token else None
        self.pos_drop = nn.Dropout(drop)  # official placement: after the class token is prepended
        self.blocks = nn.ModuleList(
            CvTBlock(dim, num_heads, mlp_ratio, qkv_bias, drop, attn_drop, rate, with_cls_token, act_layer)
            for rate in drop_path_rates(drop_path_rate, depth)
        )
        if self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=0.02)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = self.patch_embed(x)
        batch, chans, height, width = x.shape
        x = x.flatten(2).transpose(1, 2)
        if self.cls_token is not None:
            x = torch.cat((self.cls_token.expand(batch, -1, -1), x), dim=1)
        x = self.pos_drop(x)
        for block in self.blocks:
            x = run_block(block, self.grad_checkpointing, x, height, width)
        cls_token = None
        if self.cls_token is not None:
            cls_token, x = torch.split(x, [1, height * width], dim=1)
        return x.transpose(1, 2).reshape(batch, chans, height, width), cls_token


class CvT(ZooModel):
    """Convolutional vision transformer: three stages, class token in the last, head on that token.

    `drop_path_rate` is per stage (a sequence) or, as a float, the last stage's rate with the
    others 0 (what every official config does); each stage ramps linspace(0, rate, depth).
    `img_size` is recorded only: without position embeddings any input size works. `global_pool` is
    timm's argument, 'token' only: the class token exists in the last stage alone, and the official
    CvT and Hugging Face's classify it (their mean over tokens is for models built without one).
    """

    first_conv = "stage0.patch_embed.proj"
    fixed_input_size = False

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dims: Sequence[int] = (64, 192, 384),
        depths: Sequence[int] = (1, 2, 10),
        num_heads: Sequence[int] = (1, 3, 6),
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float | Sequence[float] = 0.0,
        patch_sizes: Sequence[int] = (7, 3, 3),
        patch_strides: Sequence[int] = (4, 2, 2),
        patch_paddings: Sequence[int] = (2, 1, 1),
        act: str = "quick_gelu",
        global_pool: str = "token",
    ) -> None:
        super().__init__()
        check_global_pool(type(self).__name__, global_pool, self.global_pools)
        num_stages = len(embed_dims)
        lengths = {len(s) for s in (depths, num_heads, patch_sizes, patch_strides, patch_paddings)}
        if lengths != {num_stages} or not num_stages:
            raise ValueError(
                "per-stage settings (embed_dims, depths, num_heads, patch_sizes, patch_strides, patch_paddings) must "
                f"all have one entry per stage, at least one: got {num_stages} embed_dims"
            )
        if act not in _ACTS:
            raise ValueError(f"act must be one of {', '.join(_ACTS)}, got {act!r}")
        if isinstance(drop_path_rate, (int, float)):
            drop_path_rate = [0.0] * (num_stages - 1) + [float(drop_path_rate)]
        if len(drop_path_rate) != num_stages:
            raise ValueError(f"drop_path_rate needs {num_stages} entries, got {len(drop_path_rate)}")
        for i in range(num_stages):
            # a stage before the last may be its embedding alone; the last holds the class token's blocks
            check_blocks(depths[i], embed_dims[i], num_heads[i], mlp_ratio, stage=i, empty_ok=i < num_stages - 1)
        check_rates({"drop_rate": drop_rate, "attn_drop_rate": attn_drop_rate})
        check_rates({f"drop_path_rate[{i}]": rate for i, rate in enumerate(drop_path_rate)})
        _check_stage_maps(to_2tuple(img_size), patch_sizes, patch_strides, patch_paddings)
        self.img_size = to_2tuple(img_size)
        self.num_classes = num_classes
        self.num_stages = num_stages
        self.embed_dim = embed_dims[-1]
        chans = in_chans
        for i in range(num_stages):
            stage = CvTStage(
                chans,
                embed_dims[i],
                depths[i],
                num_heads[i],
                patch_sizes[i],
                patch_strides[i],
                patch_paddings[i],
                mlp_ratio,
                qkv_bias,
                drop_rate,
                attn_drop_rate,
                drop_path_rate[i],
                with_cls_token=i == num_stages - 1,
                act_layer=_ACTS[act],
            )
            self.add_module(f"stage{i}", stage)  # official key layout: stage{i}.…
            chans = embed_dims[i]
        self.norm = nn.LayerNorm(self.embed_dim, eps=1e-5)
        self._new_head(num_classes)
        self.apply(init_weights_vit)

    @property
    def stages(self) -> list[CvTStage]:
        return [getattr(self, f"stage{i}") for i in range(self.num_stages)]

    def no_weight_decay(self) -> set[str]:
        return {f"stage{self.num_stages - 1}.cls_token"}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Last-stage tokens (B, 1 + H·W, C), class token first, all through the final LayerNorm.

        LayerNorm is per token, so token 0 equals the official norm(cls_token).
        """
        cls_token = None
        for stage in self.stages:
            x, cls_token = stage(x)
        assert cls_token is not None
        return self.norm(torch.cat((cls_token, x.flatten(2).transpose(1, 2)), dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _stage_maps(
    size: tuple[int, int], kernels: Sequence[int], strides: Sequence[int], paddings: Sequence[int]
) -> list[tuple[int, int]]:
    """Each stage's input map for an image of `size`, as far as the stages' patch embeddings can take it (a
    map smaller than a stage's padded kernel stops the list: the convolution fails there)."""
    maps = [size]
    for kernel, stride, padding in zip(kernels, strides, paddings, strict=True):
        height, width = maps[-1]
        if min(height, width) + 2 * padding < kernel:
            break
        maps.append(((height + 2 * padding - kernel) // stride + 1, (width + 2 * padding - kernel) // stride + 1))
    return maps


def _check_stage_maps(
    size: tuple[int, int], kernels: Sequence[int], strides: Sequence[int], paddings: Sequence[int]
) -> None:
    """A ValueError where `img_size` shrinks below a stage's patch kernel: any size works otherwise (no position
    embedding), but the images are trained and evaluated at this one, and torch's error came at the first step."""
    maps = _stage_maps(size, kernels, strides, paddings)
    if len(maps) > len(kernels):
        return
    stage = len(maps) - 1
    sides = range(1, MAX_IMG_SIZE + 1)
    smallest = next((n for n in sides if len(_stage_maps((n, n), kernels, strides, paddings)) > len(kernels)), None)
    fits = (
        f"the smallest img_size these stages take is {smallest}"
        if smallest
        else f"no img_size up to {MAX_IMG_SIZE} fits these stages"
    )
    raise ValueError(
        f"img_size {size[0]}x{size[1]} is too small for CvT's stage {stage}: its {maps[-1][0]}x{maps[-1][1]} map, "
        f"padded by patch_paddings[{stage}]={paddings[stage]}, is smaller than patch_sizes[{stage}]={kernels[stage]}; "
        f"{fits}"
    )


# Hugging Face `CvtForImageClassification` → official names (the table in HF's convert script).
_HF_LAYER_RENAMES = (
    ("layernorm_before.", "norm1."),
    ("layernorm_after.", "norm2."),
    ("attention.attention.convolution_projection_query.convolution_projection.convolution.", "attn.conv_proj_q.conv."),
    ("attention.attention.convolution_projection_query.convolution_projection.normalization.", "attn.conv_proj_q.bn."),
    ("attention.attention.convolution_projection_key.convolution_projection.convolution.", "attn.conv_proj_k.conv."),
    ("attention.attention.convolution_projection_key.convolution_projection.normalization.", "attn.conv_proj_k.bn."),
    ("attention.attention.convolution_projection_value.convolution_projection.convolution.", "attn.conv_proj_v.conv."),
    ("attention.attention.convolution_projection_value.convolution_projection.normalization.", "attn.conv_proj_v.bn."),
    ("attention.attention.projection_query.", "attn.proj_q."),
    ("attention.attention.projection_key.", "attn.proj_k."),
    ("attention.attention.projection_value.", "attn.proj_v."),
    ("attention.output.dense.", "attn.proj."),
    ("intermediate.dense.", "mlp.fc1."),
    ("output.dense.", "mlp.fc2."),
)
_HF_LAYER = re.compile(r"encoder\.stages\.(\d+)\.layers\.(\d+)\.(.*)")
_HF_EMBED = r"encoder\.stages\.(\d+)\.embedding\.convolution_embeddings\."
_HF_STAGE = (
    (re.compile(_HF_EMBED + r"projection\."), r"stage\1.patch_embed.proj."),
    (re.compile(_HF_EMBED + r"normalization\."), r"stage\1.patch_embed.norm."),
    (re.compile(r"encoder\.stages\.(\d+)\.cls_token$"), r"stage\1.cls_token"),
    (re.compile(r"layernorm\."), "norm."),
    (re.compile(r"classifier\."), "head."),
)


def _hf_to_official(key: str) -> str:
    key = key.removeprefix("cvt.")
    match = _HF_LAYER.fullmatch(key)
    if match:
        stage, layer, rest = match.groups()
        for old, new in _HF_LAYER_RENAMES:  # attention.output.dense precedes output.dense
            if rest.startswith(old):
                return f"stage{stage}.blocks.{layer}.{new}{rest[len(old) :]}"
        return key  # left unmapped so that strict loading reports it
    for pattern, repl in _HF_STAGE:
        if pattern.match(key):
            return pattern.sub(repl, key, count=1)
    return key


def checkpoint_filter_fn(state_dict: Mapping[str, Any], model: nn.Module) -> dict[str, torch.Tensor]:
    """Official microsoft/CvT keys pass as they are; Hugging Face keys (with or without `cvt.`) are renamed.

    All renames are one-to-one; no tensor is reshaped. `num_batches_tracked` is dropped only when the
    model has no such buffer.
    """
    for wrapper in ("state_dict", "model"):
        if wrapper in state_dict and isinstance(state_dict[wrapper], Mapping):
            state_dict = state_dict[wrapper]
    is_hf = any(k.startswith(("cvt.", "encoder.stages.", "classifier.")) for k in state_dict)
    expected = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        key = key.removeprefix("module.")
        if is_hf:
            key = _hf_to_official(key)
        if key.endswith("num_batches_tracked") and key not in expected:
            continue
        out[key] = value
    return out


def _cvt(overrides: dict[str, object], **defaults: object) -> CvT:
    return build_model(CvT, defaults, overrides)


_NOTES = "official weights use QuickGELU (act='quick_gelu'); act='gelu' matches HF transformers"


@register_model("cvt", notes=_NOTES)
def cvt_13(**kwargs: object) -> CvT:
    """CvT-13: dims 64/192/384, depths 1/2/10, 20.0M parameters, 4.57 GMACs at 224."""
    return _cvt(kwargs, embed_dims=(64, 192, 384), depths=(1, 2, 10), num_heads=(1, 3, 6))


@register_model("cvt", notes=_NOTES)
def cvt_21(**kwargs: object) -> CvT:
    """CvT-21: dims 64/192/384, depths 1/4/16, 31.6M parameters, 7.18 GMACs at 224."""
    return _cvt(kwargs, embed_dims=(64, 192, 384), depths=(1, 4, 16), num_heads=(1, 3, 6))


@register_model("cvt", input_size=(3, 384, 384), crop_pct=1.0, crop_mode="squash", notes=_NOTES)
def cvt_w24(**kwargs: object) -> CvT:
    """CvT-W24: dims 192/768/1024, depths 2/2/20, 277.2M parameters; released only at 384, evaluated squashed
    to 384×384 (the official config's CENTER_CROP: False; Hugging Face's processor from 384 up)."""
    return _cvt(kwargs, img_size=384, embed_dims=(192, 768, 1024), depths=(2, 2, 20), num_heads=(3, 12, 16))


@register_model("cvt", input_size=(3, 32, 32), num_classes=10, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), crop_pct=1.0)
def cvt_micro(**kwargs: object) -> CvT:
    """A ~0.5M-parameter CvT for 32×32 digits: first embedding 3×3 stride 2, so grids are 16/8/4."""
    return _cvt(
        kwargs,
        img_size=32,
        num_classes=10,
        embed_dims=(32, 64, 96),
        depths=(1, 1, 3),
        num_heads=(1, 2, 3),
        patch_sizes=(3, 3, 3),
        patch_strides=(2, 2, 2),
        patch_paddings=(1, 1, 1),
    )
