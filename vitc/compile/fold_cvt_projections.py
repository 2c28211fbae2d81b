"""Pass 3, fold_cvt_projections: CvT's conv projections → biased depthwise convs, k and v optionally merged.

Each `dw_bn` projection (depthwise conv, then BatchNorm) becomes one depthwise conv with a bias
(the eval-mode BatchNorm folded in float64). With `merge_kv` the k and v convs, which read the same
map with the same stride, become one grouped conv with channel multiplier 2 (weights interleaved
k0 v0 k1 v1 …, groups = C): one pass over the input instead of two, then strided slices for k and v.
Without it they stay two plain depthwise convs (multiplier 1), the kernel family cuDNN and TensorRT
tune most, with contiguous outputs. The pipeline chooses per target (vitc.compile.pipeline). The
attention scale C^-0.5 (the full stage width) is folded into proj_q. proj_q/k/v read three different
maps, so no two Linears share an input here and they stay separate GEMMs.

`StaticConvAttention.sdpa` is False after this pass; static_attention switches it on where the
target benefits.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from vitc.compile._base import Pass, conv_like, fold_batchnorm, fuse_linears, register_pass
from vitc.models.cvt import ConvAttention

__all__ = ["FoldCvTProjectionsPass", "StaticConvAttention"]


class StaticConvAttention(nn.Module):
    """CvT attention with folded convs, q pre-scaled: conv_q (C → C), and either conv_kv (C → 2C
    interleaved) or conv_k and conv_v (C → C each)."""

    def __init__(
        self,
        conv_q: nn.Conv2d,
        conv_kv: nn.Conv2d | tuple[nn.Conv2d, nn.Conv2d],
        proj_q: nn.Linear,
        proj_k: nn.Linear,
        proj_v: nn.Linear,
        proj: nn.Linear,
        num_heads: int,
        with_cls_token: bool,
        sdpa: bool = False,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.with_cls_token = with_cls_token
        self.sdpa = sdpa
        self.conv_q = conv_q
        self.conv_kv: nn.Conv2d | None = None
        self.conv_k: nn.Conv2d | None = None
        self.conv_v: nn.Conv2d | None = None
        if isinstance(conv_kv, tuple):
            self.conv_k, self.conv_v = conv_kv
        else:
            self.conv_kv = conv_kv
        self.proj_q = proj_q
        self.proj_k = proj_k
        self.proj_v = proj_v
        self.proj = proj

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        return x.reshape(batch, tokens, self.num_heads, dim // self.num_heads).transpose(1, 2)  # (B, h, T, d)

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        batch, _, dim = x.shape
        if self.with_cls_token:
            cls_token, x = torch.split(x, [1, height * width], dim=1)
        grid = x.transpose(1, 2).reshape(batch, dim, height, width)
        q = self.conv_q(grid).flatten(2).transpose(1, 2)
        if self.conv_kv is not None:
            kv = self.conv_kv(grid).reshape(batch, dim, 2, -1)  # (B, C, 2, T'): channels interleaved k0 v0 k1 v1 …
            k, v = kv[:, :, 0].transpose(1, 2), kv[:, :, 1].transpose(1, 2)
        else:
            assert self.conv_k is not None and self.conv_v is not None
            k, v = self.conv_k(grid).flatten(2).transpose(1, 2), self.conv_v(grid).flatten(2).transpose(1, 2)
        if self.with_cls_token:
            q, k, v = (torch.cat((cls_token, t), dim=1) for t in (q, k, v))
        q, k, v = self._heads(self.proj_q(q)), self._heads(self.proj_k(k)), self._heads(self.proj_v(v))
        if self.sdpa:
            out = F.scaled_dot_product_attention(q, k, v, scale=1.0)  # C^-0.5 is folded into proj_q
        else:
            out = (q @ k.transpose(-2, -1)).softmax(dim=-1) @ v
        return self.proj(out.transpose(1, 2).flatten(2))

    def extra_repr(self) -> str:
        merged = self.conv_kv is not None
        return f"heads={self.num_heads}, cls={self.with_cls_token}, sdpa={self.sdpa}, merge_kv={merged}"


@register_pass
class FoldCvTProjectionsPass(Pass):
    name: ClassVar[str] = "fold_cvt_projections"

    def __init__(self, merge_kv: bool = True) -> None:
        """`merge_kv`: one grouped conv for k and v (the cpu target's choice) instead of two depthwise convs."""
        self.merge_kv = merge_kv

    def matches(self, module: nn.Module) -> bool:
        return isinstance(module, ConvAttention)

    def rewrite(self, module: nn.Module) -> nn.Module:
        assert isinstance(module, ConvAttention)
        cq, ck, cv = module.conv_proj_q, module.conv_proj_k, module.conv_proj_v
        wq, bq = fold_batchnorm(cq.conv, cq.bn)
        wk, bk = fold_batchnorm(ck.conv, ck.bn)
        wv, bv = fold_batchnorm(cv.conv, cv.bn)
        dim = wq.shape[0]
        conv_q = conv_like(cq.conv, wq, bq, groups=dim)
        conv_kv: nn.Conv2d | tuple[nn.Conv2d, nn.Conv2d]
        if self.merge_kv:
            if (ck.conv.stride, ck.conv.padding, ck.conv.kernel_size) != (
                cv.conv.stride,
                cv.conv.padding,
                cv.conv.kernel_size,
            ):
                raise ValueError("fold_cvt_projections(merge_kv=True) needs k and v convs of the same geometry")
            # Output channel 2c+j of a grouped conv with groups=C belongs to input channel c: interleave k, v.
            wkv = torch.stack((wk, wv), dim=1).flatten(0, 1)
            bkv = torch.stack((bk, bv), dim=1).flatten()
            conv_kv = conv_like(ck.conv, wkv, bkv, groups=dim)
        else:
            conv_kv = (conv_like(ck.conv, wk, bk, groups=dim), conv_like(cv.conv, wv, bv, groups=dim))
        scale = module.scale
        proj_q = fuse_linears(module.proj_q, row_scale=lambda i: scale)
        return StaticConvAttention(
            conv_q, conv_kv, proj_q, module.proj_k, module.proj_v, module.proj, module.num_heads, module.with_cls_token
        )
