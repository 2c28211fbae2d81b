"""Locality and training figures: sizes, pages, and content a reader needs (checked on the pixels)."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vitc.analysis import figures
from vitc.analysis.locality import LocalityReport
from vitc.train import report as train_report


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(int)


def _count(pixels: np.ndarray, rgb: tuple[int, int, int], tol: int = 30) -> int:
    return int((np.abs(pixels - np.array(rgb)).max(axis=-1) <= tol).sum())


def _report(layers: int, heads: int, side: int, gates: list[float] | None = None) -> LocalityReport:
    torch.manual_seed(0)
    rep = LocalityReport(model="m")
    for i in range(layers):
        name = f"blocks.{i}.attn"
        rep.layers.append(name)
        rep.distance.append((torch.rand(heads) * 20).tolist())
        rep.grids.append((8, 8))
        rep.patch.append(4.0)
        rep.uniform.append(16.5)
        rep.gates[name] = gates or torch.rand(heads).tolist()
        maps = torch.rand(heads, side, side) ** 8
        rep.positional_maps[name] = maps / maps.sum(dim=(1, 2), keepdim=True)
        rep.spatial_priors[name] = 1 + 0.5 * torch.randn(heads, 2 * side - 1, 2 * side - 1)
    return rep


def test_gates_use_a_fixed_scale_and_print_the_change(tmp_path: Path) -> None:
    """The scale was the data's min/max (0.715-0.75 after a short run), so a move of 0.002 was full red
    (issue 24). Now it is fixed about the start (white) out to σ = 1: 0.002 is pale, a move to 0.95 is red
    and one to 0.5 blue, and every cell prints its value and its change."""
    start = figures.GATE_START
    texts: list[str] = []
    import matplotlib.axes

    original = matplotlib.axes.Axes.text

    def spy(self, x, y, s, *args, **kwargs):  # type: ignore[no-untyped-def]
        texts.append(str(s))
        return original(self, x, y, s, *args, **kwargs)

    small = _report(3, 4, 4, gates=[start - 0.001, start, start + 0.002, start])
    matplotlib.axes.Axes.text = spy
    try:
        path = figures.gates(small, tmp_path / "g.png")
    finally:
        matplotlib.axes.Axes.text = original
    assert f"{start + 0.002:.3f}\n+0.002" in texts and f"{start - 0.001:.3f}\n-0.001" in texts
    pixels = _pixels(path)
    assert pixels.shape == (int(0.55 * 3 * 100 + 180), 520, 3)  # 5.2 × (0.55·layers + 1.8) in at 100 dpi
    cells = pixels[:, :400]  # left of the colour bar
    assert _count(cells, (103, 0, 31), 25) < 100 and _count(cells, (5, 48, 97), 25) < 100  # no saturated cell
    moved = figures.gates(_report(3, 4, 4, gates=[0.5, start, 0.95, start]), tmp_path / "m.png")
    cells = _pixels(moved)[:, :400]
    reds, blues = _count(cells, (178, 24, 43), 60), _count(cells, (33, 102, 172), 60)
    assert reds > 500 and blues > 500, (reds, blues)  # 0.95: red cells; 0.5: blue ones


def test_head_maps_are_paged_for_many_heads(tmp_path: Path) -> None:
    """16 heads wrap into two rows of 8; two layers (four rows) per page."""
    written = figures.positional_attention(_report(3, 16, 14), tmp_path / "positional_attention.png")
    assert [p.name for p in written] == ["positional_attention.png", "positional_attention.2.png"]
    for path, (height, maps) in zip(written, [(620, 32), (360, 16)], strict=True):
        pixels = _pixels(path)
        assert pixels.shape == (height, 1180, 3)  # rows and 8 columns of 1.3 in maps, plus title and colour bar
        assert _count(pixels, (0, 255, 255), 60) > maps * 10  # a cyan + marks the query on every map
    small = figures.positional_attention(_report(4, 4, 8), tmp_path / "small.png")
    assert len(small) == 1 and _pixels(small[0]).shape == (620, 660, 3)


def test_spatial_prior_has_offset_axes_and_a_diverging_scale(tmp_path: Path) -> None:
    (path,) = figures.spatial_prior(_report(2, 4, 5), tmp_path / "spatial_prior.png")
    pixels = _pixels(path)
    assert pixels.shape == (360, 660, 3)
    assert _count(pixels, (0, 255, 0), 60) >= 8  # the + at offset (0, 0) on each map
    assert _count(pixels, (103, 0, 31), 40) > 50 and _count(pixels, (5, 48, 97), 60) > 50  # > 1 red, < 1 blue


def test_attention_distance_has_its_references(tmp_path: Path) -> None:
    rep = _report(6, 4, 8)
    referenced = _pixels(figures.attention_distance(rep, tmp_path / "b.png"))
    rep.grids, rep.patch, rep.uniform = [], [], []  # a report without its references
    plain = _pixels(figures.attention_distance(rep, tmp_path / "a.png"))
    assert plain.shape == referenced.shape == (420, 640, 3)
    assert _count(referenced, (77, 77, 77), 10) > _count(plain, (77, 77, 77), 10) + 200  # the two grey lines


def _history(epochs: int) -> list[dict[str, float]]:
    return [
        {"epoch": e, "train_loss": 2.0 / e, "val_loss": 2.2 / e, "val_top1": 50 + 10 * math.sin(e), "lr": 1e-3 / e}
        for e in range(1, epochs + 1)
    ]


def test_one_epoch_curves_show_points(tmp_path: Path) -> None:
    path = tmp_path / "curves.png"
    schedule = train_report.lr_schedule(10, 0, 1e-3, 1e-5, 10)
    train_report.plot_curves(_history(1), path, "run-a", schedule)
    pixels = _pixels(path)
    assert pixels.shape == (460, 1300, 3)
    assert _count(pixels, (44, 160, 44), 20) > 20  # the single val top-1 point (tab:green)
    assert _count(pixels, (214, 39, 40), 20) > 50  # the best-epoch star (tab:red)
    assert _count(pixels, (148, 103, 189), 20) > 20  # the logged learning rate (tab:purple)


def test_curves_say_what_they_are_of() -> None:
    """curves.png as timm's and Ultralytics' results figures: the title names the model, its start, the data and
    the run; every axis its unit; the legends say train or val and what the train loss adds (it read "deit_micro"
    over "train loss"/"val loss" and bare axes); the best epoch dotted in every panel. Read off the figure."""
    from vitc.train.config import load_config

    overrides = {"model.name": "deit_micro", "model.pretrained": "w/convit.safetensors", "data.name": "imagefolder",
                 "data.dir": "/data/photos", "data.image_size": 32, "run.name": "a", "aug.mixup": 0.8}  # fmt: skip
    cfg = load_config(None, overrides)
    history = _history(4)  # val top-1 50 + 10·sin(e): best at epoch 2
    fig = train_report.curves_figure(history, train_report.run_title(cfg), (), train_report.training_objective(cfg))
    try:
        title = fig._suptitle.get_text()
        assert title == "deit_micro from w/convit.safetensors on /data/photos at 32×32 px, run 'a'"
        assert [ax.get_xlabel() for ax in fig.axes] == ["epoch"] * 3
        assert [ax.get_ylabel() for ax in fig.axes] == ["cross-entropy (nats)", "top-1 accuracy (%)", "learning rate"]
        legends = [[text.get_text() for text in ax.get_legend().get_texts()] for ax in fig.axes]
        assert legends[0] == [
            "train: mean over the epoch's steps\n(label smoothing 0.1, mixup 0.8)",
            "val: after the epoch",
            "epoch 2: the best val top-1",
        ]
        assert legends[1] == ["val top-1", "best: 59.09% at epoch 2 (best.safetensors)"]
        for ax in fig.axes:  # the best epoch's dotted line
            assert [list(line.get_xdata()) for line in ax.get_lines() if line.get_linestyle() == ":"] == [[2, 2]]
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)


def test_lr_schedule_matches_the_optimiser() -> None:
    from vitc.train.optim import lr_at

    schedule = train_report.lr_schedule(total_steps=30, warmup_steps=6, base_lr=1e-3, min_lr=1e-5, steps_per_epoch=3)
    assert schedule[0] == (1 / 3, lr_at(0, 30, 6, 1e-3, 1e-5)) and schedule[-1][0] == 10.0
    assert schedule[-1][1] == lr_at(29, 30, 6, 1e-3, 1e-5) and max(v for _, v in schedule) == pytest.approx(1e-3)


def test_inspect_logs_its_figures_to_tensorboard(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    import json

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from typer.testing import CliRunner

    from vitc.checkpoint import write_checkpoint
    from vitc.cli.main import app
    from vitc.models import create_model

    torch.manual_seed(0)
    ckpt = write_checkpoint(tmp_path / "convit.safetensors", create_model("convit_micro", depth=2, local_up_to_layer=1))
    args = ["inspect", str(ckpt), "--images", "4", "--tensorboard", str(tmp_path / "tb")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0})
    events.Reload()
    names = {"attention_distance", "gates", "positional_attention"}
    assert set(events.Tags()["images"]) == {f"inspect/{n}" for n in names}
    summary = json.loads((tmp_path / "convit.inspect" / "summary.json").read_text())
    cells = list(itertools.product(range(8), repeat=2))  # convit_micro at 32 px: an 8×8 grid of 4 px patches
    uniform = 4.0 * sum(math.dist(a, b) for a in cells for b in cells) / len(cells) ** 2
    first = summary["mean_attention_distance_px"]["blocks.0.attn"]
    assert first["one_patch"] == 4.0 and first["uniform_attention"] == pytest.approx(uniform, rel=1e-6)
