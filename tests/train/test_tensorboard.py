"""Optional TensorBoard logging (log.tensorboard): scalars per step and epoch, the curves figure as an image."""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from vitc.errors import VitcError
from vitc.train import report
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
    assert [e.step for e in images] == [1] and images[-1].width == 1300 and images[-1].height == 460


def test_off_by_default(tiny: dict[str, Any]) -> None:
    cfg = load_config(None, tiny)
    assert cfg.log.tensorboard is False
    with pytest.raises(VitcError, match="expects bool"):
        load_config(None, {"log.tensorboard": "yes"})


def test_locality_figures_as_images(tmp_path) -> None:
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    import torch
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from vitc.analysis.locality import analyse
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
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    events.Reload()
    names = {"attention_distance", "gates", "positional_attention"}
    assert set(events.Tags()["images"]) == {f"locality/{n}" for n in names}
    assert [e.step for e in events.Images("locality/gates")] == [4]
    # the same measures as scalars: each layer's mean distance, each GPSA head's gate (one chart per layer)
    report = analyse(model, torch.randn(2, 3, 32, 32))  # the distances depend on the images; the gates do not
    scalars = set(events.Tags()["scalars"])
    assert {f"locality/distance/{name}" for name in report.layers} <= scalars
    gate = events.Scalars("locality/gate/blocks.0.attn/h1")
    assert [(e.step, e.value) for e in gate] == [(4, pytest.approx(report.gates["blocks.0.attn"][1]))]
    from tensorboard.plugins.custom_scalar import layout_pb2
    from tensorboard.util import tensor_util

    layout = layout_pb2.Layout()
    (config,) = events.Tensors("custom_scalars__config__")
    layout.ParseFromString(tensor_util.make_ndarray(config.tensor_proto).item())
    (chart,) = layout.category[0].chart
    assert chart.title == "blocks.0.attn" and list(chart.multiline.tag) == [r"^locality/gate/blocks\.0\.attn/h"]


def test_figures_every_n_epochs_and_at_the_last(tiny: dict[str, Any]) -> None:
    """log.figures_every=2 over 3 epochs: the figures at epochs 2 and 3 (the last), the scalars at every one."""
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    overrides = {"model.name": "convit_micro", "model.args": {"depth": 2, "local_up_to_layer": 1}}
    cfg = load_config(None, tiny | overrides | {"log.tensorboard": True, "log.figures_every": 2})
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(report, "CURVES_EVERY_S", 1e9)  # curves.png drawn at the last epoch alone
        result = train(cfg, show_progress=False)
    events = EventAccumulator(str(result.run_dir / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    assert [e.step for e in events.Images("locality/gates")] == [2, 3]
    assert [e.step for e in events.Images("curves")] == [3]  # TensorBoard's copy each time it is drawn
    assert [e.step for e in events.Scalars("locality/gate/blocks.0.attn/h0")] == [1, 2, 3]
    with pytest.raises(VitcError, match=r"log\.figures_every must not be negative"):
        load_config(None, {"log.figures_every": -1})


def test_a_run_that_fails_mid_epoch_closes_its_writer(tiny: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """The GPU ran out of memory at epoch 2's second step: the steps before it are in TensorBoard, and the writer is
    closed. It was left open on every error path but a stop (Ctrl-C, SIGTERM): in a notebook or a sweep each
    failed run kept a writer thread and its open event file."""
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from vitc.train import loop

    def writers() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if type(t).__name__ == "_AsyncWriterThread" and t.is_alive()]

    before, steps, step = writers(), [], loop._backward_and_step

    def out_of_memory(run: Any, loss: Any) -> None:
        steps.append(run.state.global_step + 1)
        if len(steps) == 5:  # 3 steps an epoch (tests/train/conftest.py)
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        step(run, loss)

    monkeypatch.setattr(loop, "_backward_and_step", out_of_memory)
    with pytest.raises(VitcError, match="out of GPU memory"):
        train(load_config(None, tiny | {"optim.epochs": 2, "log.tensorboard": True}), show_progress=False)
    assert writers() == before
    events = EventAccumulator(str(Path(tiny["run.out_dir"]) / "tiny" / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    assert [e.step for e in events.Scalars("step/loss")] == [1, 2, 3, 4]
    assert [e.step for e in events.Scalars("epoch/train_loss")] == [1]
