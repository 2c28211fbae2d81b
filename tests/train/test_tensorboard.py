"""Optional TensorBoard logging (log.tensorboard): scalars per step and epoch, the curves figure as an image."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from vitc.errors import VitcError
from vitc.train.config import load_config
from vitc.train.loop import train


def test_missing_tensorboard_is_one_clear_error(tiny: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard now raises ImportError
    with pytest.raises(VitcError, match=r"needs 'tensorboard'.*vitc\[tensorboard\]"):
        train(load_config(None, tiny | {"log.tensorboard": True}), show_progress=False)


def test_run_logs_steps_epochs_and_figures(tiny: dict[str, Any]) -> None:
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = train(load_config(None, tiny | {"optim.epochs": 1, "log.tensorboard": True}), show_progress=False)
    events = EventAccumulator(str(result.run_dir / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    tags = events.Tags()
    assert {"step/loss", "step/lr", "epoch/train_loss", "epoch/val_top1", "epoch/lr"} <= set(tags["scalars"])
    steps = [e.step for e in events.Scalars("step/loss")]
    assert steps == [1, 2, 3]  # one epoch of 3 steps (tests/train/conftest.py)
    top1 = [(e.step, e.value) for e in events.Scalars("epoch/val_top1")]
    assert top1 == [(row["epoch"], pytest.approx(row["val_top1"])) for row in result.history]
    assert set(events.Tags()["images"]) == {"curves", "locality/attention_distance"}  # deit: no gates, no priors
    images = events.Images("curves")
    assert [e.step for e in images] == [1] and images[-1].width == 1300 and images[-1].height == 380


def test_off_by_default(tiny: dict[str, Any]) -> None:
    cfg = load_config(None, tiny)
    assert cfg.log.tensorboard is False
    with pytest.raises(VitcError, match="expects bool"):
        load_config(None, {"log.tensorboard": "yes"})


def test_locality_figures_as_images(tmp_path) -> None:
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    import torch
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from vitc.models import create_model
    from vitc.train.report import TensorBoardLog

    torch.manual_seed(0)
    model = create_model("convit_micro", depth=2, local_up_to_layer=1).train()
    model.blocks[0].drop_path.training = False  # a flag unlike its parent's, given back as it was
    for param in model.parameters():
        param.grad = torch.randn_like(param)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    grads = [param.grad.clone() for param in model.parameters()]
    flags = [m.training for m in model.modules()]
    board = TensorBoardLog(tmp_path / "tb")
    board.locality(model, torch.randn(2, 3, 32, 32), step=4)
    board.close()
    # analysed in place (where the model trains): every flag, weight, buffer and gradient as it was
    assert [m.training for m in model.modules()] == flags and not model.blocks[0].drop_path.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(torch.equal(g, param.grad) for g, param in zip(grads, model.parameters(), strict=True))
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0})
    events.Reload()
    names = {"attention_distance", "gates", "positional_attention"}
    assert set(events.Tags()["images"]) == {f"locality/{n}" for n in names}
    assert [e.step for e in events.Images("locality/gates")] == [4]
