"""What `vitc eval` leaves when a figure is NaN or drawing the confusion PNG fails: JSON that parses, and the
per-class table and JSON written before the drawing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from vitc.checkpoint import meta_for, write_checkpoint
from vitc.cli.main import app
from vitc.models import create_model

runner = CliRunner()
CLASSES = ["cat", "dog"]


def _run(folder: Path, nan: bool = False) -> Path:
    torch.manual_seed(0)
    model = create_model("deit_micro", depth=1, embed_dim=32, num_heads=2, img_size=16, num_classes=2)
    if nan:  # finite weights whose products overflow to +inf and -inf: NaN logits (a checkpoint holds no NaN)
        with torch.no_grad():
            model.head.weight.copy_(torch.full_like(model.head.weight, 3e38))
    meta = meta_for(model, class_names=CLASSES, extra={"train_config": {"data": {"name": "imagefolder"}}})
    write_checkpoint(folder / "best.safetensors", model, meta)
    return folder


def _photos(root: Path) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in CLASSES:
        (root / c).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(root / c / f"{i}.jpg")
    return root


def _strict(text: str) -> object:
    def refuse(constant: str) -> object:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_nan_logits_leave_a_report_that_is_json(tmp_path: Path) -> None:
    """The report held `"loss": NaN`, which JSON.parse refuses; null now, nan_images saying why."""
    run, photos, png = _run(tmp_path / "run", nan=True), _photos(tmp_path / "photos"), tmp_path / "cm.png"
    result = runner.invoke(app, ["eval", str(run), "--data-dir", str(photos), "--out", str(png)])
    assert result.exit_code == 0, result.output
    report = _strict(png.with_suffix(".json").read_text())
    assert isinstance(report, dict) and report["loss"] is None and report["nan_images"] == 4


def test_a_failed_drawing_loses_neither_table_nor_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The PNG was drawn first: a failure while drawing (300 classes: minutes and 6 GB) lost the JSON and the table."""
    pytest.importorskip("matplotlib")
    import vitc.train.report

    def fail(*args: object, **kwargs: object) -> None:
        raise MemoryError("drawing")

    monkeypatch.setattr(vitc.train.report, "plot_confusion", fail)
    run, photos, png = _run(tmp_path / "run"), _photos(tmp_path / "photos"), tmp_path / "cm.png"
    result = runner.invoke(app, ["eval", str(run), "--data-dir", str(photos), "--out", str(png)])
    assert isinstance(result.exception, MemoryError)
    assert "per class" in result.output and "recall" in result.output
    assert _strict(png.with_suffix(".json").read_text())["confusion"]["true"] == CLASSES  # type: ignore[index]
