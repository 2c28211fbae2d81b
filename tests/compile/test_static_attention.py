"""static_attention: plain Attention → SDPAAttention; CvT's folded attention switched to SDPA."""

from __future__ import annotations

import pytest
import torch

from vitc.compile.fold_cvt_projections import FoldCvTProjectionsPass, StaticConvAttention
from vitc.compile.static_attention import SDPAAttention, StaticAttentionPass
from vitc.models.layers import Attention

from .conftest import build, max_diff


@pytest.mark.parametrize(("name", "plain"), [("deit_micro", 6), ("convit_micro", 2), ("spvit_micro", 2)])
def test_structure_and_numbers(name: str, plain: int) -> None:
    model = build(name)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        before = model(x)
        assert StaticAttentionPass()(model) == plain
        assert not any(isinstance(m, Attention) for m in model.modules())
        assert sum(isinstance(m, SDPAAttention) for m in model.modules()) == plain
        assert max_diff(model(x), before) <= 1e-5
    assert StaticAttentionPass()(model) == 0


def test_cvt_uses_sdpa_with_the_stage_width_scale() -> None:
    model = build("cvt_micro")
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        before = model(x)
        FoldCvTProjectionsPass()(model)
        assert StaticAttentionPass()(model) == 5
        assert all(m.sdpa for m in model.modules() if isinstance(m, StaticConvAttention))
        assert max_diff(model(x), before) <= 1e-5
