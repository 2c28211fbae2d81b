"""Training on streamed image folders: learning, exact resume, the index cache, bad files, the final split."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from vitc.data import feed
from vitc.errors import VitcError
from vitc.train import loop
from vitc.train.config import load_config
from vitc.train.interrupt import TrainingInterrupted
from vitc.train.loop import train

Image = pytest.importorskip("PIL.Image")
COLOURS = {"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200)}


def _photos(root: Path, per_class: int) -> Path:
    """Noisy photos, one dominant colour per class: learnable in a few steps."""
    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("val", 3)):
        for name, colour in COLOURS.items():
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                noise = rng.integers(-40, 40, (24, 32, 3))
                pixels = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{name}{i}.jpg")
    return root


@pytest.fixture
def streamed(tiny: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    root = _photos(tmp_path / "photos", per_class=8)
    return tiny | {
        "data.name": "imagefolder",
        "data.dir": str(root),
        "data.fraction": 1.0,
        "data.image_size": 16,
        "data.stream": "stream",
        "model.args": {**tiny["model.args"], "patch_size": 4},
        "optim.batch_size": 8,
        "optim.epochs": 2,
        "aug.crop_scale": [0.5, 1.0],
        "run.workers": 1,
    }


def _run(overrides: dict[str, Any], resume: bool = False) -> loop.RunResult:
    return train(load_config(None, overrides), resume=resume, show_progress=False)


def _spoil(root: Path) -> None:
    """Unreadable bytes under an indexed name (the folder's listing, hence the index, is unchanged)."""
    (root / "train" / "red" / "red0.jpg").write_bytes(b"\xff\xd8\xff garbage")


def test_streamed_run_learns_skips_a_bad_image_and_names_the_final_split(streamed: dict[str, Any]) -> None:
    _spoil(Path(streamed["data.dir"]))
    result = _run(streamed | {"optim.epochs": 3, "optim.lr": 3e-3, "run.amp": "bf16"})
    index = json.loads((result.run_dir / "index.json").read_text())
    assert set(index["splits"]) == {"train", "val"} and index["splits"]["train"]["count"] == 24
    assert [row["skipped_images"] for row in result.history] == [1, 1, 1]  # logged and counted, every epoch
    assert result.history[-1]["val_top1"] > 60.0  # three colours: chance is 33%
    assert result.test_split == "val"  # no test/ folder: the final figure is on val, and says so
    # validation ran under the run's bf16 autocast; the final figure is the best checkpoint's in fp32 on val's
    # images, as `vitc eval` gives it (under bf16 it was the best epoch's val figure, 3 images of 180 away
    # from `vitc eval`'s on digits), and the records say which is which
    from typer.testing import CliRunner

    from vitc.cli.main import app

    evaluated = CliRunner().invoke(app, ["eval", str(result.run_dir), "--split", "val", "--data-dir",
                                         streamed["data.dir"], "--out", str(result.run_dir / "cm.png")])  # fmt: skip
    assert evaluated.exit_code == 0, evaluated.output
    fp32 = json.loads((result.run_dir / "cm.json").read_text())
    assert result.test["top1"] == fp32["top1"] and result.test["loss"] == pytest.approx(fp32["loss"], rel=1e-6)
    best = next(row for row in result.history if row["val_top1"] == result.best_val_top1)
    assert result.test["loss"] != best["val_loss"]  # the best epoch's val loss was scored in bf16
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert (summary["val_precision"], summary["test_precision"]) == ("bf16", "fp32")
    assert result.val_precision == "bf16"
    from vitc.checkpoint import read_meta

    assert read_meta(result.run_dir / "best.safetensors").provenance["val_precision"] == "bf16"


def _interrupt_at(monkeypatch: pytest.MonkeyPatch, batch: int) -> None:
    """Ctrl-C while the loop waits for the `batch`-th batch from the workers (counting every pass)."""
    original, count = feed.StreamFeed._run, {"n": 0}

    def run(self: feed.StreamFeed) -> Iterator[Any]:
        for item in original(self):
            count["n"] += 1
            if count["n"] == batch:
                raise KeyboardInterrupt
            yield item

    monkeypatch.setattr(feed.StreamFeed, "_run", run)


# aug.repeats: each copy's crop is seeded by its copy number too; "random": each crop's filter is drawn as well
@pytest.mark.parametrize(("repeats", "interpolation"), [(0, "bilinear"), (3, "bilinear"), (0, "random")])
def test_streamed_resume_after_ctrl_c_reproduces_the_uninterrupted_run(
    streamed: dict[str, Any], monkeypatch: pytest.MonkeyPatch, repeats: int, interpolation: str
) -> None:
    streamed["aug.repeats"] = repeats  # 24 images: 24 samples an epoch either way
    streamed["aug.train_interpolation"] = interpolation
    reference = _run(streamed | {"run.name": "straight"})
    with monkeypatch.context() as patch:
        _interrupt_at(patch, batch=6)  # epoch 1: 3 train + 1 val batches; then epoch 2, step 2 of 3
        with pytest.raises(TrainingInterrupted):
            _run(streamed)
    resumed = _run(streamed, resume=True)
    assert resumed.history == reference.history
    expected, got = load_file(reference.run_dir / "last.safetensors"), load_file(resumed.run_dir / "last.safetensors")
    assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected)


def test_a_bad_image_met_on_resume_stops_and_keeps_the_resumable_state(streamed: dict[str, Any]) -> None:
    first = _run(streamed | {"optim.epochs": 1})
    state = (first.run_dir / "resume.safetensors").read_bytes()
    _spoil(Path(streamed["data.dir"]))
    with pytest.raises(VitcError, match=r"red0\.jpg.*data.on_bad_image=stop"):
        _run(streamed | {"optim.epochs": 2, "data.on_bad_image": "stop"}, resume=True)
    assert (first.run_dir / "resume.safetensors").read_bytes() == state
