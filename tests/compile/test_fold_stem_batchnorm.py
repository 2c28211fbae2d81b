"""fold_stem_batchnorm: SP-ViT's conv+BN stem → three biased convs, no BatchNorm left."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vitc.compile import compile_model
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


@pytest.mark.parametrize("side", [33, 35, 28])
def test_a_compiled_model_refuses_another_input_size_as_the_model_does(side: int) -> None:
    """spvit_micro at 32×32 (patch 4): compiled, a 33 or 34 pixel image rounded down to the same 8×8 grid
    and was classified as a crop, silently (SP-ViT-S at 224: 225 to 238); 35 and 28 failed inside the
    model with a RuntimeError about tensor sizes."""
    model = build("spvit_micro")
    compiled, _ = compile_model(model, target="cpu")
    assert isinstance(compiled.patch_embed, StaticStem)
    x = torch.randn(1, 3, side, side)
    errors = []
    for each in (model, compiled):
        with pytest.raises(ValueError) as raised, torch.no_grad():
            each(x)
        errors.append(str(raised.value))
    assert (
        errors[0]
        == errors[1]
        == (
            f"input {side}x{side} does not match the model's 32x32: resize the images to it, or build the model "
            "for another size with create_model(..., img_size=...)"
        )
    )
