"""static_spatial_prior: SP-SA → StaticSPSA (prior MLP evaluated once, scale folded, fused qkv)."""

from __future__ import annotations

import torch

from vitc.compile.static_spatial_prior import StaticSpatialPriorPass, StaticSPSA
from vitc.models.spvit import SPSA

from .conftest import build, max_diff


def test_structure() -> None:
    model = build("spvit_micro")
    fired = StaticSpatialPriorPass()(model)
    assert fired == model.local_up_to_layer == 4
    assert not any(isinstance(m, SPSA) for m in model.modules())
    static = [m for m in model.modules() if isinstance(m, StaticSPSA)]
    assert len(static) == 4
    keys = set(model.state_dict())
    for dropped in ("attn.w1", "attn.w2", "attn.b2", "rel_indices", "attn.qk.", "attn.v."):
        assert not any(dropped in k for k in keys), dropped
    assert static[0].qkv.out_features == 3 * 96
    assert static[0].prior.shape == (4, 64, 64)
    assert StaticSpatialPriorPass()(model) == 0


def test_numbers() -> None:
    model = build("spvit_micro")
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        before = model(x)
        StaticSpatialPriorPass()(model)
        assert max_diff(model(x), before) <= 1e-5


def test_prior_is_the_scaled_mlp() -> None:
    model = build("spvit_micro")
    spsa = model.blocks[0].attn
    with torch.no_grad():
        static = StaticSpatialPriorPass().rewrite(spsa)
        assert torch.allclose(static.prior, spsa.spatial_prior() * spsa.scale, atol=1e-6)
