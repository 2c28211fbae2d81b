"""fold_cvt_projections: BN folded into the depthwise convs, k/v convs merged or not, scale folded into proj_q."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vitc.compile.fold_cvt_projections import FoldCvTProjectionsPass, StaticConvAttention
from vitc.models.cvt import ConvAttention

from .conftest import build, max_diff


@pytest.mark.parametrize("merge_kv", [True, False])
def test_structure(merge_kv: bool) -> None:
    model = build("cvt_micro")
    blocks = sum(len(stage.blocks) for stage in model.stages)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 3 * blocks
    fired = FoldCvTProjectionsPass(merge_kv=merge_kv)(model)
    assert fired == blocks == 5
    assert not any(isinstance(m, (ConvAttention, nn.BatchNorm2d)) for m in model.modules())
    for attn in (m for m in model.modules() if isinstance(m, StaticConvAttention)):
        dim = attn.proj.in_features
        assert attn.conv_q.bias is not None and attn.conv_q.groups == dim and attn.conv_q.stride == (1, 1)
        if merge_kv:
            kv = attn.conv_kv
            assert (kv.in_channels, kv.out_channels, kv.groups, kv.stride) == (dim, 2 * dim, dim, (2, 2))
            assert kv.bias is not None and attn.conv_k is None and attn.conv_v is None
        else:  # two plain depthwise convs (multiplier 1), as the cuda and tensorrt targets keep them
            assert attn.conv_kv is None
            for conv in (attn.conv_k, attn.conv_v):
                assert (conv.in_channels, conv.out_channels, conv.groups, conv.stride) == (dim, dim, dim, (2, 2))
                assert conv.bias is not None
        assert not attn.sdpa and f"merge_kv={merge_kv}" in repr(attn)
    assert not any("conv_proj_k" in k or "conv_proj_v" in k or ".bn." in k for k in model.state_dict())
    assert FoldCvTProjectionsPass()(model) == 0


@pytest.mark.parametrize("merge_kv", [True, False])
def test_numbers(merge_kv: bool) -> None:
    model = build("cvt_micro")
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        before = model(x)
        FoldCvTProjectionsPass(merge_kv=merge_kv)(model)
        assert max_diff(model(x), before) <= 1e-5


@pytest.mark.parametrize("merge_kv", [True, False])
def test_numbers_big_family_member_at_small_size(merge_kv: bool) -> None:
    model = build("cvt_13")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = model(x)
        assert FoldCvTProjectionsPass(merge_kv=merge_kv)(model) == 3
        assert max_diff(model(x), before) <= 1e-5
