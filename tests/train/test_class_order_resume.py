"""Runs made before timm's class order recorded plainly sorted class names: their resume reads the folder in
that order (its head's rows, its samples' order), and their checkpoints are evaluated by those names."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from vitc.cli.main import app
from vitc.data import datasets, feed, files
from vitc.train.config import load_config
from vitc.train.interrupt import TrainingInterrupted
from vitc.train.loop import train

Image = pytest.importorskip("PIL.Image")
# plain sorted(): 10, 2, Zebra, café; timm's order: 2, 10, café, Zebra
COLOURS = {"10": (200, 30, 30), "2": (30, 200, 30), "Zebra": (30, 30, 200), "café": (200, 200, 30)}
PLAIN = sorted(COLOURS)


def _photos(root: Path) -> Path:
    """8 train photos a class; val holds 1, 2, 3 and 4 (a class's count tells its labels apart)."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for k, (name, colour) in enumerate(COLOURS.items()):
            (root / split / name).mkdir(parents=True)
            for i in range(8 if split == "train" else k + 1):
                pixels = np.clip(np.array(colour) + rng.integers(-40, 40, (20, 20, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{i}.png")
    return root


def _plain_order(names: Any, recorded: Any = None) -> list[str]:
    return sorted(names)  # vitc before timm's order


def _interrupt_at(patch: pytest.MonkeyPatch, batch: int) -> None:
    """Ctrl-C before the `batch`-th training batch, counting every epoch's."""
    count = {"n": 0}
    for kind in (feed.MemoryFeed, feed.StreamFeed):
        original = kind.train_batches

        def batches(self: Any, *args: Any, _original: Any = original, **kwargs: Any) -> Iterator[Any]:
            for item in _original(self, *args, **kwargs):
                count["n"] += 1
                if count["n"] == batch:
                    raise KeyboardInterrupt
                yield item

        patch.setattr(kind, "train_batches", batches)


@pytest.mark.parametrize("stream", ["memory", "stream"])
def test_a_run_from_before_timms_order_resumes_in_its_own(
    tiny: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stream: str
) -> None:
    """Interrupted in epoch 2 under the old order and resumed under the new one: the same run, bit for bit."""
    root = _photos(tmp_path / "photos")
    settings = tiny | {"data.name": "imagefolder", "data.dir": str(root), "data.fraction": 1.0}
    settings |= {"data.image_size": 16, "data.stream": stream, "model.args": {**tiny["model.args"], "patch_size": 4}}
    settings |= {"optim.batch_size": 8, "optim.epochs": 2, "run.workers": 0}
    with monkeypatch.context() as patch:
        for module in (datasets, files):  # wherever a folder's classes are ordered
            patch.setattr(module, "class_order", _plain_order)
        reference = train(load_config(None, settings | {"run.name": "straight"}), show_progress=False)
        _interrupt_at(patch, batch=6)  # epoch 2, step 2 of 4
        with pytest.raises(TrainingInterrupted):
            train(load_config(None, settings), show_progress=False)
    resumed = train(load_config(None, settings), resume=True, show_progress=False)
    assert resumed.history == reference.history
    expected, got = load_file(reference.run_dir / "last.safetensors"), load_file(resumed.run_dir / "last.safetensors")
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    best = resumed.run_dir / "best.safetensors"
    from vitc.checkpoint import read_meta

    assert read_meta(best).class_names == PLAIN

    # its checkpoint is evaluated on the folder by name: each class's support is its own folder's count
    png = tmp_path / "cm.png"
    result = CliRunner().invoke(app, ["eval", str(best), "--data-dir", str(root), "--out", str(png)])
    assert result.exit_code == 0, result.output
    report = json.loads(png.with_suffix(".json").read_text())
    assert {row["class"]: row["support"] for row in report["classes"]} == {"10": 1, "2": 2, "Zebra": 3, "café": 4}
    assert report["top1"] == pytest.approx(resumed.test["top1"])


def test_an_exports_held_out_labels_follow_the_checkpoints_classes(tmp_path: Path) -> None:
    """vitc export measures drift on the folder's test split labelled as the model's head: by name."""
    from vitc.checkpoint import meta_for
    from vitc.export.heldout import heldout_set
    from vitc.models import create_model

    root = _photos(tmp_path / "photos")
    model = create_model("deit_micro", depth=1, embed_dim=32, num_heads=2, num_classes=4, img_size=16, patch_size=4)
    meta = meta_for(model, class_names=PLAIN)
    held = heldout_set(meta, meta.cfg.preprocess, "imagefolder", str(root))
    counts = np.bincount(held.labels, minlength=4).tolist()
    assert counts == [1, 2, 3, 4]  # 10, 2, Zebra, café: the checkpoint's rows
