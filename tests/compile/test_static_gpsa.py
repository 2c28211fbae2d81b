"""static_gpsa: GPSA → StaticGPSA (positional table, folded gate, fused qkv), both lowerings."""

from __future__ import annotations

import pytest
import torch

from vitc.compile.static_gpsa import StaticGPSA, StaticGPSAPass
from vitc.models.convit import GPSA

from .conftest import build, max_diff


@pytest.mark.parametrize("lowering", ["mix", "sdpa"])
def test_structure(lowering: str) -> None:
    model = build("convit_micro")
    fired = StaticGPSAPass(lowering)(model)
    assert fired == model.local_up_to_layer == 4
    assert not any(isinstance(m, GPSA) for m in model.modules())
    static = [m for m in model.modules() if isinstance(m, StaticGPSA)]
    assert len(static) == 4 and all(m.lowering == lowering for m in static)
    keys = set(model.state_dict())
    for dropped in ("pos_proj", "rel_indices", "gating_param", "attn.qk.", "attn.v."):
        assert not any(dropped in k for k in keys), dropped
    assert static[0].qkv.out_features == 3 * 96  # qk and v fused into one GEMM
    assert static[0].pos_attn.shape == (4, 64, 64)
    assert StaticGPSAPass(lowering)(model) == 0  # idempotent: nothing left to match


@pytest.mark.parametrize("lowering", ["mix", "sdpa"])
def test_numbers(lowering: str) -> None:
    model = build("convit_micro")
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        before = model(x)
        StaticGPSAPass(lowering)(model)
        assert max_diff(model(x), before) <= 1e-5


@pytest.mark.parametrize("lowering", ["mix", "sdpa"])
@pytest.mark.parametrize("gate", [-8.0, 0.0, 8.0])
def test_module_matches_gpsa_at_extreme_gates(lowering: str, gate: float) -> None:
    """One GPSA module, gates nearly closed/open: the rows stay stochastic without renormalisation."""
    torch.manual_seed(0)
    gpsa = GPSA(dim=64, num_heads=4, grid=5).eval()
    with torch.no_grad():
        gpsa.gating_param.fill_(gate)
        tokens = torch.randn(2, 25, 64)
        static = StaticGPSAPass(lowering).rewrite(gpsa)
        assert max_diff(static(tokens), gpsa(tokens)) <= 1e-5
        assert torch.allclose(
            gpsa.positional_attention() * torch.sigmoid(torch.tensor(gate)), static.pos_attn, atol=1e-6
        )


def test_unknown_lowering() -> None:
    with pytest.raises(ValueError, match="lowering"):
        StaticGPSAPass("fast")
