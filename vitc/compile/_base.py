"""The pass framework: a pass matches modules, rewrites each match into a static module, counts.

A pass is a small class: `matches(module)` says what it rewrites, `rewrite(module)` returns the
replacement (built from the matched module's weights, never sharing storage that a later pass
could mutate), and calling the pass on a model replaces every match in place and returns how many
times it fired. Passes register under a name; pipelines (`vitc.compile.pipeline`) list them per
target. Helpers that several passes share (Linear fusion, BatchNorm folding) live here too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, TypeVar

import torch
from torch import nn

__all__ = ["PASSES", "Pass", "conv_like", "fold_batchnorm", "fuse_linears", "linear_like", "register_pass"]

P = TypeVar("P", bound=type["Pass"])
PASSES: dict[str, type[Pass]] = {}


def register_pass(cls: P) -> P:
    """Register a Pass subclass under its `name`."""
    PASSES[cls.name] = cls
    return cls


class Pass:
    """Rewrite every submodule that `matches` into `rewrite(module)`; `__call__` returns the count.

    The walk is top-down: a replaced module is not searched again, so a pass never rewrites its
    own output. The root module itself is never replaced (the compiled model keeps its class).
    """

    name: ClassVar[str] = ""

    def matches(self, module: nn.Module) -> bool:
        raise NotImplementedError

    def rewrite(self, module: nn.Module) -> nn.Module:
        raise NotImplementedError

    @torch.no_grad()
    def __call__(self, model: nn.Module) -> int:
        return self._walk(model)

    def _walk(self, parent: nn.Module) -> int:
        fired = 0
        for child_name, child in list(parent.named_children()):
            if self.matches(child):
                setattr(parent, child_name, self.rewrite(child))
                fired += 1
            else:
                fired += self._walk(child)
        return fired

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


def fuse_linears(
    *linears: nn.Linear, row_scale: Callable[[int], float] | None = None, force_bias: bool = False
) -> nn.Linear:
    """One Linear whose output is the concatenation of `linears`' outputs (they must share the input).

    A missing bias counts as zero; the fused Linear has a bias if one of the parts does, or with
    `force_bias`. An all-zero bias is exact (x·W + 0 = x·W) and can be faster: PyTorch CPU runs
    a Linear with bias as addmm, which measured faster than the bias-free mm for ConViT-Ti's qkv
    at batch 1 (docs/benchmarks.md, "mm vs addmm"). `row_scale(i)` multiplies output row i (e.g.
    to fold an attention scale into the q rows).
    """
    weight = torch.cat([lin.weight for lin in linears], dim=0)
    has_bias = force_bias or any(lin.bias is not None for lin in linears)
    fused_bias = None
    if has_bias:
        fused_bias = torch.cat(
            [lin.bias if lin.bias is not None else lin.weight.new_zeros(lin.out_features) for lin in linears]
        )
    if row_scale is not None:
        scale = torch.tensor([row_scale(i) for i in range(weight.shape[0])], dtype=weight.dtype, device=weight.device)
        weight = weight * scale[:, None]
        fused_bias = None if fused_bias is None else fused_bias * scale
    return linear_like(weight, fused_bias, linears[0].weight.requires_grad)  # torch.cat made fresh storage


def linear_like(weight: torch.Tensor, bias: torch.Tensor | None, requires_grad: bool) -> nn.Linear:
    """A Linear holding `weight` (out, in) and `bias` (or none) as they are.

    Built on the meta device, then given the real tensors: no random init to overwrite (seconds on
    convit_base). The parameters share the tensors' storage: pass fresh ones.
    """
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device="meta")
    linear.weight = nn.Parameter(weight.detach(), requires_grad=requires_grad)
    if bias is not None:
        linear.bias = nn.Parameter(bias.detach(), requires_grad=requires_grad)
    return linear


def fold_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight, bias) of the conv that equals bn(conv(x)) in eval mode, computed in float64."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("cannot fold a BatchNorm without running statistics")
    var = bn.running_var.double()
    gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(var)
    beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(var)
    factor = gamma / torch.sqrt(var + bn.eps)
    conv_bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(var)
    weight = conv.weight.double() * factor.view(-1, *([1] * (conv.weight.dim() - 1)))
    bias = (conv_bias - bn.running_mean.double()) * factor + beta
    return weight.to(conv.weight.dtype), bias.to(conv.weight.dtype)


def conv_like(conv: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor, groups: int) -> nn.Conv2d:
    """A biased Conv2d with `conv`'s geometry holding `weight` and `bias` (no random init first)."""
    out = nn.Conv2d(
        weight.shape[1] * groups,
        weight.shape[0],
        conv.kernel_size,  # type: ignore[arg-type]
        stride=conv.stride,  # type: ignore[arg-type]
        padding=conv.padding,  # type: ignore[arg-type]
        groups=groups,
        bias=True,
        device="meta",
    )
    grad = conv.weight.requires_grad
    out.weight = nn.Parameter(weight.detach(), requires_grad=grad)  # fresh storage from the caller (fold_batchnorm)
    out.bias = nn.Parameter(bias.detach(), requires_grad=grad)
    return out
