"""ModelEma's multi-tensor update is the per-tensor lerp it replaced, bit for bit."""

from __future__ import annotations

import copy

import torch

from vitc.models import create_model
from vitc.train.optim import ModelEma


def test_the_multi_tensor_update_equals_the_per_tensor_lerp() -> None:
    torch.manual_seed(0)
    model = create_model("cvt_micro")  # BatchNorm: float running stats and an integer step count
    ema = ModelEma(model, decay=0.9)
    expected = copy.deepcopy(ema.module)
    model.train()
    model(torch.randn(4, 3, 32, 32))  # moves the running stats and num_batches_tracked
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param))
    ema.update(model)
    with torch.no_grad():
        for want, live in zip(expected.state_dict().values(), model.state_dict().values(), strict=True):
            want.lerp_(live, 0.1) if want.dtype.is_floating_point else want.copy_(live)
    got = ema.module.state_dict()
    assert any(not t.dtype.is_floating_point for t in got.values())
    for key, want in expected.state_dict().items():
        assert torch.equal(got[key], want), key
