"""The model surface every family shares with timm's models: `ZooModel`, the base class of DeiT, ConViT, CvT
and SP-ViT (the classifier and its pooling, `reset_classifier`, `forward_head`, `pretrained_cfg`, activation
checkpointing of the blocks). The layers the families build from are `vitc.models.layers`'.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vitc.errors import VitcError
from vitc.models._registry import follow_classes, get_model_cfg

__all__ = ["GLOBAL_POOLS", "ZooModel", "check_global_pool"]


GLOBAL_POOLS = ("token", "avg", "")  # timm's for ConViT (its ViT has 'avgmax', 'max', 'map' too: not built)


def check_global_pool(cls_name: str, global_pool: str, choices: tuple[str, ...]) -> str:
    """`global_pool` if the family pools that way, else a VitcError listing its poolings."""
    if global_pool in choices:
        return global_pool
    if choices == ("token",):
        raise VitcError(
            f"{cls_name} pools its class token only: global_pool={global_pool!r} is not one it has "
            "(pass 'token' or leave it out; forward_features(x) gives every token)"
        )
    raise VitcError(
        f"{cls_name} has no global_pool={global_pool!r}: pass 'token' (the class token), 'avg' (the mean of "
        "the patch tokens) or '' (every token, unpooled), as timm's"
    )


class ZooModel(nn.Module):
    """timm's model surface, shared by the families: the classifier on the pooled tokens, which
    `reset_classifier` replaces (with `create_model`'s record, and so a checkpoint, following it),
    `forward_head`, `pretrained_cfg` and activation checkpointing of the blocks.

    Each family writes its own `forward`: torch.compile starts at it and recompiles a code object at
    most 8 times, so one forward shared by every family fell back to eager (or, with fullgraph, failed)
    once a process had compiled 8 models of any family.
    """

    num_classes: int
    embed_dim: int
    head: nn.Module
    global_pool = "token"  # timm's name for the pooling: the class token, unless a family takes others
    global_pools: tuple[str, ...] = ("token",)  # the poolings a family has (GLOBAL_POOLS where timm's has them)
    first_conv = "patch_embed.proj"  # timm's pretrained_cfg names the input convolution and classifier
    classifier_modules: tuple[str, ...] = ("head",)  # what computes the logits from the tokens (export keeps it float)
    fixed_input_size = True  # the position embedding's or token grid's size (CvT: any)
    # Resampling the position embedding to another grid (`resample_pos_embed`): timm's antialiased bicubic, as
    # DeiT's and ConViT's references do; SP-ViT's release interpolates without (docs/models.md).
    pos_embed_antialias = True
    grad_checkpointing = False  # per model and per module whose forward runs blocks (CvT's stages)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """forward_features' tokens pooled as timm's ConViT and ViT pool them: the class token (B, D) at every
        batch size (unlike CvT's official squeeze()), the mean of the patch tokens, or with '' every token."""
        if self.global_pool == "token":
            return x[:, 0]
        return x[:, 1:].mean(dim=1) if self.global_pool == "avg" else x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Logits from forward_features' tokens, or with `pre_logits` the pooled features (num_features wide)."""
        pooled = self.pool(x)
        return pooled if pre_logits else self.head(pooled)

    @property
    def num_features(self) -> int:
        """The width of the pooled features the classifier reads."""
        return self.embed_dim

    def get_classifier(self) -> nn.Module:
        return self.head

    def _new_head(self, num_classes: int) -> None:
        """A fresh classifier of `num_classes` outputs; none for 0 (forward then gives the pooled features)."""
        self.head = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()

    def pooling_args(self) -> dict[str, Any]:
        """The constructor arguments that rebuild the model's pooling (what a checkpoint must record)."""
        return {"global_pool": self.global_pool} if len(self.global_pools) > 1 else {}

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new classifier of `num_classes` outputs (0: none); `global_pool` as timm's: the pooling only."""
        if global_pool is not None:
            self.global_pool = check_global_pool(type(self).__name__, global_pool, self.global_pools)
        self.num_classes = num_classes
        self._new_head(num_classes)
        follow_classes(self, num_classes, self.pooling_args())

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Checkpoint every block's activations in training (recomputed in the backward: less memory, more time)."""
        for module in self.modules():
            if hasattr(module, "grad_checkpointing"):
                module.grad_checkpointing = enable

    @property
    def pretrained_cfg(self) -> dict[str, Any]:
        """timm's data config of the model, read from its `vitc_cfg` (what `resolve_data_config(model=m)` reads)."""
        cfg = get_model_cfg(self)
        return {
            "architecture": getattr(self, "vitc_name", type(self).__name__),
            "num_classes": cfg.num_classes,
            "input_size": cfg.input_size,
            "fixed_input_size": self.fixed_input_size,
            "interpolation": cfg.interpolation,
            "crop_pct": cfg.crop_pct,
            "crop_mode": cfg.crop_mode,
            "mean": cfg.mean,
            "std": cfg.std,
            "first_conv": self.first_conv,
            "classifier": "head",
        }

    default_cfg = pretrained_cfg  # timm's older name
