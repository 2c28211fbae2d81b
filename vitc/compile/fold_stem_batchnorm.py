"""Pass 5, fold_stem_batchnorm: SP-ViT's convolutional stem → biased convs, BatchNorms folded in.

LV-ViT's "4_2" stem runs conv7×7/2 → BN → ReLU → (conv3×3 → BN → ReLU) × 2 at half resolution.
In eval mode each BatchNorm is an affine map per channel, so it folds (in float64) into the weight
and a new bias of the conv before it: three full passes over a 64-channel half-resolution map
(112×112 at 224) disappear per image, and with them the running statistics.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from vitc.compile._base import Pass, conv_like, fold_batchnorm, register_pass
from vitc.models.layers import check_input_size, grid_to_tokens
from vitc.models.spvit import PatchEmbed4x2

__all__ = ["FoldStemBatchNormPass", "StaticStem"]


class StaticStem(nn.Module):
    """The 4_2 stem with folded BatchNorms: (conv + bias, ReLU) × 3, then the patch projection.

    It refuses an image of another size as the stem does (`check_input_size`): the convolutions
    would take it, and 224 to 239 pixels all round down to the 14×14 grid of a crop.
    """

    def __init__(
        self, convs: list[nn.Conv2d], proj: nn.Conv2d, img_size: tuple[int, int], grid_size: tuple[int, int]
    ) -> None:
        super().__init__()
        self.img_size = img_size
        self.grid_size = grid_size
        self.num_patches = grid_size[0] * grid_size[1]
        # In-place ReLU: each conv's output is a fresh tensor nothing else reads.
        self.convs = nn.Sequential(*(layer for conv in convs for layer in (conv, nn.ReLU(inplace=True))))
        self.proj = proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input_size(x, self.img_size)
        return grid_to_tokens(self.proj(self.convs(x)))


@register_pass
class FoldStemBatchNormPass(Pass):
    name: ClassVar[str] = "fold_stem_batchnorm"

    def matches(self, module: nn.Module) -> bool:
        return isinstance(module, PatchEmbed4x2)

    def rewrite(self, module: nn.Module) -> nn.Module:
        assert isinstance(module, PatchEmbed4x2)
        pairs = ((module.conv1, module.bn1), (module.conv2, module.bn2), (module.conv3, module.bn3))
        convs = [conv_like(conv, *fold_batchnorm(conv, bn), groups=conv.groups) for conv, bn in pairs]
        return StaticStem(convs, module.proj, module.img_size, module.grid_size)
