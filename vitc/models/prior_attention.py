"""SP-SA's attention kernels: softmax((q·kᵀ) ⊙ prior)·v, the prior multiplying the logits inside the softmax.

Three forms of one function, which `vitc.models.spvit.SPSA` picks among by its `attn_impl`: the eager
product (`prior_attention`), a custom autograd Function that recomputes the (B, H, N, N) scores in its
backward instead of keeping them (`PriorAttention`), and FlexAttention with the prior as a score
modification (`flex_prior_attention`). Apart from the model so that spvit.py reads as timm's families do:
blocks, then the model, then its registered entry points.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from vitc._lazy import torch_before
from vitc.errors import VitcError
from vitc.models.layers import without_autocast

__all__ = ["PriorAttention", "flex_prior_attention", "prior_attention"]


def prior_attention(q: torch.Tensor, k: torch.Tensor, prior: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(softmax((q·kᵀ) ⊙ prior), q·kᵀ): the product in q's dtype, the softmax in the promoted one
    (fp32 for bf16/fp16 q and an fp32 prior, as the reference's ops run under autocast)."""
    scores = q @ k.transpose(-2, -1)
    return (scores * prior).softmax(dim=-1), scores


class PriorAttention(torch.autograd.Function):
    """softmax((q·kᵀ) ⊙ prior)·v that saves only q, k, v and prior for the backward.

    Autograd would keep two (B, H, N, N) tensors of every block (the raw scores for the prior's
    gradient, the probabilities for the softmax's); the backward recomputes them instead, as flash
    attention does, for one more q·kᵀ product. q, k, v (B, H, N, d) share a dtype; prior (H, N, N)
    is shared by the batch, so its gradient sums over it. Autocast is off inside, with the dtypes
    of the eager form spelled out.
    """

    @staticmethod
    def forward(ctx, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        with without_autocast(q.device):
            probs, _ = prior_attention(q, k, prior)
            out = probs.to(v.dtype) @ v
        ctx.save_for_backward(q, k, v, prior)
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        q, k, v, prior = ctx.saved_tensors
        with without_autocast(q.device):
            probs, scores = prior_attention(q, k, prior)
            grad_v = probs.to(v.dtype).transpose(-2, -1) @ grad_out
            grad_attn = (grad_out @ v.transpose(-2, -1)).to(probs.dtype)
            grad_logits = torch.ops.aten._softmax_backward_data(grad_attn, probs, -1, probs.dtype)
            del probs, grad_attn
            grad_prior = (grad_logits * scores).sum(dim=0).to(prior.dtype) if ctx.needs_input_grad[3] else None
            del scores
            grad_scores = (grad_logits * prior).to(q.dtype)
            grad_q = grad_scores @ k
            grad_k = grad_scores.transpose(-2, -1) @ q
        return grad_q, grad_k, grad_v, grad_prior


def flex_prior_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
    """softmax((q·kᵀ) ⊙ prior)·v through FlexAttention, the prior a score modification.

    On CUDA, torch.compile turns it into one flash-style kernel for the forward and one for the
    backward (the prior's gradient included) that never hold the (B, H, N, N) scores; elsewhere it
    runs PyTorch's reference loop, and the CPU has no backward from torch 2.11 (NotImplementedError; 2.5 to 2.10
    run the reference loop's).
    """
    flex_attention = _flex_attention(q.device.type == "cuda")  # first: torch 2.4 has none
    _check_flex_head_dim(q.shape[-1])

    def times_prior(score: torch.Tensor, b: torch.Tensor, h: torch.Tensor, q_idx: torch.Tensor, kv_idx: torch.Tensor):
        return score * prior[h, q_idx, kv_idx]

    return flex_attention(q, k, v, score_mod=times_prior, scale=1.0)


# FlexAttention in torch 2.5 to 2.7 takes only power-of-two head widths (a ValueError "NYI: Currently non
# power of 2 embedding dimension", on the CPU too: spvit_micro's 24); 2.8.0, 2.9.1, 2.10.0, 2.11 and 2.13 take any.
_FLEX_POWER_OF_TWO_ONLY = torch_before(2, 8)


def _check_flex_head_dim(head_dim: int) -> None:
    """One line where this torch's FlexAttention refuses the head width (a constant to torch.compile)."""
    if _FLEX_POWER_OF_TWO_ONLY and head_dim & (head_dim - 1):
        raise VitcError(
            f"attn_impl 'flex' (FlexAttention) on torch {torch.__version__} takes power-of-two head widths, "
            f"this model's are {head_dim}: use 'fused' (the default) or a newer torch"
        )


@functools.cache
def _flex_attention(compiled: bool) -> Callable[..., torch.Tensor]:
    """flex_attention, torch.compile'd once per process where it runs as a fused kernel (CUDA)."""
    try:
        from torch.nn.attention.flex_attention import flex_attention
    except ImportError as exc:  # FlexAttention arrived in torch 2.5
        raise VitcError(
            f"attn_impl 'flex' (FlexAttention) needs torch >= 2.5, this is {torch.__version__}: "
            "use 'fused' (the default) or upgrade torch"
        ) from exc

    return torch.compile(flex_attention, dynamic=False) if compiled else flex_attention
