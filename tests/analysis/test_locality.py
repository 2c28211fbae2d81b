"""Locality analysis: distances, gates, positional maps and priors, and `vitc inspect` end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from vitc.analysis.locality import _grid_positions, _mean_distance, analyse, offset_map
from vitc.checkpoint import write_checkpoint
from vitc.cli.main import app
from vitc.models import create_model


def test_uniform_attention_distance_matches_brute_force() -> None:
    side = 4
    pos, prefix = _grid_positions(side * side + 1, None, None)  # with a class token
    attn = torch.full((2, 3, 17, 17), 1.0 / 17)
    got = _mean_distance(attn, pos, pos, prefix, prefix)
    cells = [(r, c) for r in range(side) for c in range(side)]
    expected = sum(math.dist(a, b) for a in cells for b in cells) / len(cells) ** 2
    assert prefix == 1 and got.tolist() == pytest.approx([expected] * 3, rel=1e-6)


def test_distance_is_measured_on_the_attention_maps_device() -> None:
    """A model training on a GPU is analysed there (TensorBoard's figures every epoch): the positions, made on
    the CPU, follow the maps. The meta device stands in for a GPU: it mixes with CPU tensors no more than CUDA."""
    pos, prefix = _grid_positions(17, None, None)
    attn = torch.full((2, 3, 17, 17), 1.0 / 17, device="meta")
    got = _mean_distance(attn, pos, pos, prefix, prefix)
    assert got.device.type == "meta" and got.shape == (3,)


def test_offset_map_reads_offset_tables() -> None:
    side = 3
    pos, _ = _grid_positions(side * side, None, None)
    dy = pos[None, :, 0] - pos[:, None, 0]
    dx = pos[None, :, 1] - pos[:, None, 1]
    table = torch.stack((10 * dy + dx, -dx))  # two "heads"
    out = offset_map(table)
    assert out.shape == (2, 5, 5)
    assert out[0, 0, 4] == -20 + 2 and out[1, 2, 0] == 2  # [dy=-2, dx=+2] and [dy=0, dx=-2]


@pytest.mark.parametrize("name", ["convit_micro", "spvit_micro", "deit_micro", "cvt_micro"])
def test_every_family_is_analysed(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name)
    report = analyse(model, torch.randn(2, 3, 32, 32))
    assert report.layers and all(len(row) >= 1 and all(d >= 0 for d in row) for row in report.distance)
    if name == "convit_micro":
        assert len(report.gates) == 4 and all(
            g == pytest.approx(0.7311, abs=1e-4) for g in report.gates["blocks.0.attn"]
        )
        maps = report.positional_maps["blocks.0.attn"]
        assert maps.shape == (4, 8, 8) and torch.allclose(maps.sum(dim=(1, 2)), torch.ones(4))
        # local init: the positional attention of every head is concentrated next to the query
        assert all(float(maps[h, 3:6, 3:6].sum()) > 0.5 for h in range(4))
    if name == "spvit_micro":
        assert torch.equal(report.spatial_priors["blocks.0.attn"], torch.ones(4, 15, 15))  # SP ≡ 1 at init


def test_cvt_stages_are_read_against_their_own_grids() -> None:
    """CvT's stages have their own grids (16×16, 8×8, 4×4 at 32 px; keys on a stride-2 grid of each): the
    references (one patch, uniform attention over the layer's keys) are each stage's, in the report and in the
    figure; stage 0's were drawn for every stage, so a stage-2 head attending uniformly sat below the line."""
    from vitc.analysis import figures

    torch.manual_seed(0)
    report = analyse(create_model("cvt_micro"), torch.randn(2, 3, 32, 32))
    assert report.grids == [(16, 16), (8, 8), (4, 4), (4, 4), (4, 4)]
    assert report.patch == [2.0, 4.0, 8.0, 8.0, 8.0]
    for (side, _), patch, uniform in zip(report.grids, report.patch, report.uniform, strict=True):
        queries = [(r, c) for r in range(side) for c in range(side)]
        keys = [(2 * r, 2 * c) for r in range(-(-side // 2)) for c in range(-(-side // 2))]  # the stride-2 k/v grid
        brute = sum(math.dist(q, k) for q in queries for k in keys) / (len(queries) * len(keys))
        assert uniform == pytest.approx(patch * brute, rel=1e-6)
    assert report.uniform[1] != pytest.approx(report.uniform[0], abs=0.05)
    assert report.uniform[2] != pytest.approx(report.uniform[0], abs=0.05)
    fig = figures.distance_figure(report)
    try:
        drawn = {}
        references = [c for c in fig.axes[0].collections if hasattr(c, "get_segments")]  # hlines, not the dots
        for lines in references:  # a segment per stage
            for (x0, y), (x1, _) in lines.get_segments():
                drawn.setdefault(round(float(y), 6), []).append((round(float(x0), 1), round(float(x1), 1)))
        stages = [(-0.4, 0.4), (0.6, 1.4), (1.6, 4.4)]
        for value, span in zip([*report.uniform[:3], *report.patch[:3]], stages * 2, strict=True):
            assert drawn[round(value, 6)] == [span], (value, drawn)
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)


def test_inspect_cli_writes_figures_and_summary(tmp_path: Path) -> None:
    torch.manual_seed(0)
    ckpt = write_checkpoint(tmp_path / "convit.safetensors", create_model("convit_micro"))
    result = CliRunner().invoke(app, ["inspect", str(ckpt), "--images", "8"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "convit.inspect"
    assert {p.name for p in out.iterdir()} == {
        "attention_distance.png",
        "gates.png",
        "positional_attention.png",
        "summary.json",
    }
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"] == 8 and len(summary["gates_sigmoid_lambda"]) == 4
    assert set(summary["mean_attention_distance_px"]) == {f"blocks.{i}.attn" for i in range(6)}
