"""Building blocks shared by every family: patch embedding, MLP, drop-path, attention, offsets.

Key names (`proj`, `fc1`, `fc2`, `qkv`) follow timm so that upstream checkpoints load as they are.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from vitc.models._checks import multiples_near

# the model surface the families share moved to its own module; its names stay importable from here
from vitc.models.zoo_model import GLOBAL_POOLS, ZooModel, check_global_pool  # noqa: F401


def to_2tuple(value: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    height, width = value
    return (int(height), int(width))


def init_weights_vit(module: nn.Module) -> None:
    """timm's ViT init: trunc-normal(0.02) Linear weights with zero bias, LayerNorm (1, 0)."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def drop_path_rates(drop_path_rate: float, depth: int) -> list[float]:
    """The linear stochastic-depth ramp linspace(0, rate, depth), in plain Python so it works on meta."""
    return [drop_path_rate * i / (depth - 1) if depth > 1 else 0.0 for i in range(depth)]


def drop_path(x: torch.Tensor, drop_prob: float = 0.0, training: bool = False) -> torch.Tensor:
    """Stochastic depth per sample: drop the whole residual branch, rescale the survivors."""
    if drop_prob == 0.0 or not training:
        return x
    keep = 1.0 - drop_prob
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask / keep


class DropPath(nn.Module):
    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.drop_prob, self.training)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


class QuickGELU(nn.Module):
    """x·σ(1.702x): the activation CvT's official weights were trained with."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class Mlp(nn.Module):
    def __init__(
        self,
        in_features: int,
        hidden_features: int,
        act_layer: Callable[[], nn.Module] = nn.GELU,
        drop: float = 0.0,
    ) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_features, in_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


def grid_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) → (B, H·W, C), made contiguous.

    The references return the transposed view; a residual stream kept in that layout makes every
    later add and LayerNorm stride or copy (ConViT's GPSA blocks never concatenate the class token
    that would repack it). Same values; its adds ran at half speed before (docs/benchmarks.md).
    """
    return x.flatten(2).transpose(1, 2).contiguous()


def depthwise_conv_on_tokens(dim: int, kernel_size: int, stride: int, padding: int, bias: bool) -> nn.Conv2d:
    """A depthwise conv over a token grid, its (C, 1, k, k) weight stored with channels-last strides.

    A grid made from (B, N, C) tokens is channels-last in memory, and so is the weight's gradient on CPU
    and cuDNN. DDP compares each gradient's strides with its parameter's and warns on every rank ("Grad
    strides do not match bucket view strides") where they differ, although with one input channel both
    layouts are the same bytes: only the strides of the size-1 dimension change.
    """
    conv = nn.Conv2d(dim, dim, kernel_size, stride=stride, padding=padding, groups=dim, bias=bias)
    conv.weight.data = torch.empty_like(conv.weight, memory_format=torch.channels_last).copy_(conv.weight)
    return conv


def check_input_size(x: torch.Tensor, img_size: tuple[int, int]) -> None:
    """A ValueError unless x's height and width are the model's, as timm's PatchEmbed refuses another
    size (strict_img_size): the patch grid and position embedding are the built size's, and an image off
    it ran silently on its top-left corner. Shapes are static under export and compile, so is the check."""
    _check_quietly_when_traced(_require_size, x, img_size)


def check_tokens(layer: str, built: int, tokens: int) -> None:
    """A ValueError unless an attention layer gets the token count its positional tables were built for (a
    layer used on its own; a model checks the image size first). Constant under tracing, as is that size."""
    _check_quietly_when_traced(_require_tokens, layer, built, tokens)


def _check_quietly_when_traced(check: Callable[..., None], *args: Any) -> None:
    """The legacy tracer (torch.jit.trace, the ONNX export) sees sizes as tensors and warns that a check on
    them stays constant in the trace: as meant, shapes being static there."""
    if not torch.jit.is_tracing():
        return check(*args)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return check(*args)


def runs_custom_backward() -> bool:
    """Whether a formulation takes its custom autograd Function (a hand-written backward): grad is on and no
    tracer records. torch.jit.trace records a Function as a PythonOp that torch.jit.save cannot write; the
    plain formulation computes the same values, so the traced graph is the same model."""
    return torch.is_grad_enabled() and not torch.jit.is_tracing()


def _require_size(x: torch.Tensor, img_size: tuple[int, int]) -> None:
    height, width = x.shape[-2:]
    if (height, width) != img_size:
        raise ValueError(
            f"input {height}x{width} does not match the model's {img_size[0]}x{img_size[1]}: resize the images "
            "to it, or build the model for another size with create_model(..., img_size=...)"
        )


def _require_tokens(layer: str, built: int, tokens: int) -> None:
    if tokens != built:
        raise ValueError(f"{layer} was built for {built} tokens, got {tokens}")


def check_patch_grid(img_size: tuple[int, int], patch_size: int) -> None:
    """A ValueError unless the image's sides are multiples of the patch: the patch grid would drop their rest."""
    height, width = img_size
    for side in (height, width):
        if side % patch_size:
            raise ValueError(
                f"image size {height}x{width} is not a multiple of the patch size {patch_size}: pass img_size "
                f"(data.image_size in training) as a multiple of {patch_size}, e.g. {multiples_near(side, patch_size)}"
            )


class PatchEmbed(nn.Module):
    """Non-overlapping patches by one strided convolution; output (B, N, D), row-major tokens."""

    def __init__(self, img_size: int | tuple[int, int], patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        height, width = self.img_size = to_2tuple(img_size)
        check_patch_grid((height, width), patch_size)
        self.grid_size = (height // patch_size, width // patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input_size(x, self.img_size)
        return grid_to_tokens(self.proj(x))


BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


@contextmanager
def batchnorm_stats_kept(block: nn.Module) -> Iterator[None]:
    """The running statistics of `block`'s BatchNorms as they were on entering, restored on leaving: a
    checkpointed block's recomputation would count the batch a second time (CvT's projections)."""
    saved = [(b, b.clone()) for m in block.modules() if isinstance(m, BATCHNORMS) for b in m.buffers(recurse=False)]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in saved:
                buffer.copy_(value)


def checkpoints_batchnorm(model: nn.Module) -> bool:
    """Whether a block that activation checkpointing recomputes holds a BatchNorm (CvT's projections; SP-ViT's
    stem is not in a block)."""
    blocks = (m.blocks for m in model.modules() if isinstance(getattr(m, "blocks", None), nn.ModuleList))
    return any(isinstance(m, BATCHNORMS) for stage in blocks for m in stage.modules())


def run_block(block: nn.Module, checkpointed: bool, *args: Any) -> torch.Tensor:
    """block(*args); with `checkpointed`, in training with gradients, under activation checkpointing: the
    backward recomputes the block's activations instead of keeping them. Non-reentrant: drop-path's masks
    replay, so outputs and gradients are the same bits; the BatchNorm statistics the recomputation would
    update again are restored (torch.compile's recomputation leaves them alone and takes no context_fn).
    torch.compile cannot trace a SyncBatchNorm (run.sync_bn), so it would run the checkpoint eagerly without
    that restoring: such a block is checkpointed outside the compiled graph."""
    if not (checkpointed and block.training and torch.is_grad_enabled()):
        return block(*args)
    norms = [m for m in block.modules() if isinstance(m, BATCHNORMS)]
    synced = any(isinstance(m, nn.SyncBatchNorm) for m in norms)
    if norms and (synced or not torch.compiler.is_compiling()):
        return _checkpoint_keeping_stats(block, *args)
    return checkpoint(block, *args, use_reentrant=False)


# Eager under torch.compile, forward and recomputation alike: the checkpoint compares what each saved. torch's
# lazy form of torch.compiler.disable, which imports torch._dynamo (over a second of every process's start: each
# `vitc` command and DDP process that builds a model) at the first call instead of at import.
@torch._disable_dynamo
def _checkpoint_keeping_stats(block: nn.Module, *args: Any) -> torch.Tensor:
    return checkpoint(
        block, *args, use_reentrant=False, context_fn=lambda: (nullcontext(), batchnorm_stats_kept(block))
    )


WRITTEN_ATTENTION_ON = ("cpu",)


def runs_written_attention(x: torch.Tensor) -> bool:
    """Whether plain attention runs as written (q·kᵀ, softmax, @v) on x's device, not through SDPA.

    On CPUs as written: the form every CPU per-GMAC baseline in docs/benchmarks.md was measured
    with. Elsewhere `scaled_dot_product_attention`, whose flash / memory-efficient kernels never
    hold the (B, H, N, N) probabilities: the same function (tests/models/test_formulation.py).
    """
    return x.device.type in WRITTEN_ATTENTION_ON


class Attention(nn.Module):
    """Multi-head self-attention with a fused `qkv` projection, written out as in the references.

    `scale_queries` picks where the 1/√d_h scale goes: on q before q@kᵀ (DeiT, SP-ViT's plain
    blocks) or on the product (ConViT's MHSA). Mathematically equal; kept for bit-level matching.
    On a GPU the attention runs through `scaled_dot_product_attention`, as timm's does
    (`runs_written_attention`).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = False,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        scale_queries: bool = True,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.scale_queries = scale_queries
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """Attention probabilities (B, H, N, N), for analysis."""
        q, k, _ = self._qkv(x)
        return self._scores(q, k).softmax(dim=-1)

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        batch, tokens, _ = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return qkv.unbind(0)  # each (B, H, N, d_h); one stack in the backward, not three scatters and adds

    def _scores(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        if self.scale_queries:
            return (q * self.scale) @ k.transpose(-2, -1)
        return (q @ k.transpose(-2, -1)) * self.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        q, k, v = self._qkv(x)
        if runs_written_attention(x):
            x = self.attn_drop(self._scores(q, k).softmax(dim=-1)) @ v
        else:
            x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop.p * self.training, scale=self.scale)
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(batch, tokens, dim)))


def relative_offsets(grid: int, dtype: torch.dtype = torch.float32, device: torch.device | None = None) -> torch.Tensor:
    """(N, N, 2) offsets [dx, dy] from query n to key m on a row-major grid×grid token grid.

    dx = col(m) − col(n), dy = row(m) − row(n): the convention of ConViT's and SP-ViT's rel_indices.
    """
    coords = torch.arange(grid, dtype=dtype, device=device)
    rows = coords.repeat_interleave(grid)  # row of token n = n // grid
    cols = coords.repeat(grid)  # col of token n = n % grid
    dx = cols[None, :] - cols[:, None]
    dy = rows[None, :] - rows[:, None]
    return torch.stack((dx, dy), dim=-1)


def square_grid(num_tokens: int, what: str) -> int:
    """The side of a square token grid, or a ValueError naming the module that needs one."""
    side = math.isqrt(num_tokens)
    if side * side != num_tokens:
        raise ValueError(f"{what} needs a square token grid, got {num_tokens} tokens")
    return side


def resample_pos_embed(
    pos_embed: torch.Tensor, new_grid: tuple[int, int], num_prefix_tokens: int = 0, antialias: bool = True
) -> torch.Tensor:
    """Bicubically resample a (1, prefix + H·W, D) position embedding to another grid.

    `antialias=True` is timm's resample (its cubic kernel has a = -0.5, Pillow's); False is plain
    `F.interpolate(mode="bicubic")` (a = -0.75), as SP-ViT's release resizes: each family resamples as
    its reference does (`ZooModel.pos_embed_antialias`): the two kernels give other values, upsampling too.
    """
    prefix, grid_tokens = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    old = square_grid(grid_tokens.shape[1], "position-embedding resampling")
    if (old, old) == tuple(new_grid):
        return pos_embed
    dim = grid_tokens.shape[-1]
    grid_tokens = grid_tokens.reshape(1, old, old, dim).permute(0, 3, 1, 2).float()
    grid_tokens = F.interpolate(grid_tokens, size=new_grid, mode="bicubic", align_corners=False, antialias=antialias)
    grid_tokens = grid_tokens.permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], dim).to(pos_embed.dtype)
    return torch.cat((prefix, grid_tokens), dim=1)


def check_attn_impl(attn_impl: str, choices: tuple[str, ...]) -> str:
    """`attn_impl` if it is one of a module's `choices` (its ATTN_IMPLS: `fused`, the default, with
    batch-independent terms once per forward; `reference`; GPSA's `fused_dense`, SP-SA's `flex`)."""
    if attn_impl not in choices:
        raise ValueError(f"unknown attn_impl {attn_impl!r} (choose one of: {', '.join(choices)})")
    return attn_impl


def content_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """softmax(q·kᵀ·scale)·v for (B, H, N, d) inputs, through `scaled_dot_product_attention`.

    Except in bf16/fp16 on CPU (e.g. under `vitc train`'s bf16 autocast): there PyTorch's CPU
    flash-attention backward ran several times slower than the explicit product, softmax and
    product (docs/benchmarks.md, "Training throughput"), which is then used instead.
    """
    if runs_written_attention(q) and q.dtype in (torch.bfloat16, torch.float16):
        return ((q @ k.transpose(-2, -1)) * scale).softmax(dim=-1) @ v
    return F.scaled_dot_product_attention(q, k, v, scale=scale)


AUTOCAST_FREE_DEVICES = ("meta",)  # no autocast exists there (the tests' stand-in for a GPU)


def without_autocast(device: torch.device) -> AbstractContextManager[Any]:
    """Autocast off on `device` inside (a no-op where autocast does not exist, e.g. on meta).

    A fixed list, not `torch.amp.is_autocast_available`: torch 2.11's dynamo cannot trace that call
    and broke `run.compile`'s graph at every GPSA and SP-SA block.
    """
    if device.type in AUTOCAST_FREE_DEVICES:
        return nullcontext()
    return torch.autocast(device.type, enabled=False)


FLUSH_SUBNORMALS_ON = ("cpu",)


def flush_subnormals(table: torch.Tensor) -> torch.Tensor:
    """`table` with its subnormal entries (0 < |t| < the dtype's smallest normal) set to zero, on CPUs.

    Positional softmax tables over distant offsets hold such values (ConViT's init puts 36 entries
    of each 14×14 table near 4e-40), and Intel CPUs run every multiply that touches one through a
    microcode assist (docs/benchmarks.md, "Training throughput"). An entry below 1.2e-38 (float32,
    bfloat16) moves a product by less than that times Σ|v|, far below the rounding of the row's
    dominant entry. Differentiable: flushed entries pass no gradient (theirs is as negligible).
    NVIDIA GPUs compute with subnormals at full speed, so there the table stays as the reference
    has it, without the flush's kernels (forward and backward, twice per GPSA block).
    """
    if table.device.type not in FLUSH_SUBNORMALS_ON:
        return table
    return torch.where(table.abs() < torch.finfo(table.dtype).tiny, table.new_zeros(()), table)


def qk_v_heads(
    x: torch.Tensor, qk: nn.Linear, v: nn.Linear, num_heads: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v (B, H, N, d_h) from the separate `qk` and `v` Linears of GPSA and SP-SA.

    On CPUs two GEMMs: as fast there as one over concatenated weights, whose (3D, D) copy autograd
    would keep for every block. Elsewhere one GEMM over the concatenated weights, as timm's fused
    `qkv`: one input cast under autocast instead of two, and a backward of two GEMMs instead of four
    and an add, where a step's kernel launches are what it waits for (docs/operator_counts.py).
    """
    batch, tokens, dim = x.shape
    if runs_written_attention(x) or (qk.bias is None) != (v.bias is None):
        qk_out = qk(x).reshape(batch, tokens, 2, num_heads, dim // num_heads).permute(2, 0, 3, 1, 4)
        q, k = qk_out.unbind(0)
        return q, k, v(x).reshape(batch, tokens, num_heads, dim // num_heads).transpose(1, 2)
    bias = None if qk.bias is None else torch.cat((qk.bias, v.bias))
    qkv = F.linear(x, torch.cat((qk.weight, v.weight)), bias)
    return qkv.reshape(batch, tokens, 3, num_heads, dim // num_heads).permute(2, 0, 3, 1, 4).unbind(0)


def classifier_of(model: nn.Module) -> tuple[str, ...]:
    """The modules that compute the logits (the zoo's `classifier_modules`: `head`, and SP-ViT's `aux_head`):
    what fine-tuning re-initialises and a linear probe trains, and what export keeps in float."""
    return tuple(getattr(model, "classifier_modules", ("head",)))
