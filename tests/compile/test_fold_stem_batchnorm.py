"""fold_stem_batchnorm: SP-ViT's conv+BN stem → three biased convs, no BatchNorm left."""

from __future__ import annotations

import torch
from torch import nn

from vitc.compile.fold_stem_batchnorm import FoldStemBatchNormPass, StaticStem
from vitc.models.spvit import PatchEmbed4x2

from .conftest import build, max_diff


def test_structure() -> None:
    model = build("spvit_micro")
    stem = model.patch_embed
    assert isinstance(stem, PatchEmbed4x2)
    assert FoldStemBatchNormPass()(model) == 1
    static = model.patch_embed
    assert isinstance(static, StaticStem)
    assert not any(isinstance(m, (nn.BatchNorm2d, PatchEmbed4x2)) for m in model.modules())
    convs = [m for m in static.convs if isinstance(m, nn.Conv2d)]
    assert [c.kernel_size for c in convs] == [(7, 7), (3, 3), (3, 3)] and all(c.bias is not None for c in convs)
    assert (static.grid_size, static.num_patches) == (stem.grid_size, stem.num_patches)
    assert not any("bn" in k or "running_" in k for k in model.state_dict())
    assert FoldStemBatchNormPass()(model) == 0


def test_numbers() -> None:
    """randomize() moved every BatchNorm off the identity: the fold has real work to do."""
    model = build("spvit_micro")  # build() randomises BN statistics and affine parameters
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        before = model(x)
        stem_before = model.patch_embed(x)
        FoldStemBatchNormPass()(model)
        assert max_diff(model.patch_embed(x), stem_before) <= 1e-5
        assert max_diff(model(x), before) <= 1e-5
        assert model.patch_embed(x).is_contiguous()  # tokens row-major, as the blocks expect
