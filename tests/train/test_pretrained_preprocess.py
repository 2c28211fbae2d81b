"""`vitc train --pretrained` normalises with the mean and std the weights were evaluated with (a timm hub
folder's pretrained_cfg, a vitc checkpoint's cfg), as timm's train.py does with a hub model's pretrained_cfg,
and crops as they were at their size; config.json records it, so checkpoints, exports and --resume keep it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import vitc
from vitc.checkpoint import read_meta
from vitc.cli.main import app
from vitc.errors import VitcError
from vitc.models import create_model
from vitc.pretrained import inherited_preprocess, read_pretrained
from vitc.train import loop, setup
from vitc.train.config import load_config, resume_config

from ..test_import_preprocess import HALF, MICRO, SET_MICRO, timm_hub

QUARTER = [0.25, 0.25, 0.25]
RUN: dict[str, Any] = {
    "model.name": "deit_micro",
    "model.args": dict(MICRO),
    "data.fraction": 0.05,
    "optim.epochs": 1,
    "optim.batch_size": 32,
    "run.amp": "off",
}


@pytest.fixture
def normalised(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, Any]]:
    """The (mean, std) each run's training augmentation normalises with; no curves drawn (CPU time)."""
    seen: list[tuple[Any, Any]] = []
    made = setup.TrainAugment

    def recording(**kwargs: Any) -> Any:
        seen.append((tuple(kwargs["mean"]), tuple(kwargs["std"])))
        return made(**kwargs)

    monkeypatch.setattr(setup, "TrainAugment", recording)
    monkeypatch.setattr(loop.report, "plot_curves", lambda *args, **kwargs: None)
    return seen


def _train(pretrained: Path, out: Path, resume: bool = False, **overrides: Any) -> loop.RunResult:
    settings = {**RUN, "model.args": dict(MICRO), "model.pretrained": str(pretrained), "run.out_dir": str(out)}
    cfg = load_config(None, settings | {"run.name": "tuned"} | overrides)
    if resume:
        cfg = resume_config(cfg, overrides)
    return loop.train(cfg, resume=resume, show_progress=False)


def test_a_run_from_a_folder_normalises_and_crops_as_its_pretrained_cfg(
    tmp_path: Path, normalised: list[tuple[Any, Any]]
) -> None:
    """It trained and evaluated with deit_micro's registered 0.5 whatever the weights were evaluated with."""
    folder = timm_hub(tmp_path / "hub", mean=QUARTER, std=[0.2], crop_pct=0.9)
    run = _train(folder, tmp_path / "runs")
    assert normalised == [((0.25,) * 3, (0.2,) * 3)]
    config = json.loads((run.run_dir / "config.json").read_text())["model"]
    assert (config["mean"], config["std"], config["crop_pct"]) == (QUARTER, [0.2] * 3, 0.9)
    cfg = read_meta(run.run_dir / "best.safetensors").cfg
    assert (cfg.mean, cfg.std, cfg.crop_pct) == ((0.25,) * 3, (0.2,) * 3, 0.9)
    record = vitc.load_model(run.run_dir / "best.safetensors").vitc_cfg.preprocess.to_record()  # an export's
    assert (record["mean"], record["std"], record["resize_shorter_side"]) == (QUARTER, [0.2] * 3, round(32 / 0.9))
    resumed = _train(folder, tmp_path / "runs", resume=True, **{"optim.epochs": 2})  # not re-reading the file
    assert normalised[-1] == ((0.25,) * 3, (0.2,) * 3)
    assert read_meta(resumed.run_dir / "last.safetensors").cfg == cfg


def test_the_line_says_what_it_takes(tmp_path: Path) -> None:
    folder = timm_hub(tmp_path / "hub", mean=QUARTER, std=HALF)
    settings = ["--set", f"run.out_dir={tmp_path / 'runs'}", "--set", "data.fraction=0.05", "--epochs", "1"]
    settings += [f"--set=model.args.{key}={value}" for key, value in MICRO.items()]
    result = CliRunner().invoke(app, ["train", "--pretrained", str(folder), "--model", "deit_micro", *settings])
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert "pretrained: mean=[0.25, 0.25, 0.25], as its folder's records evaluated the weights (mean and std " in said
    assert "normalise training and evaluation, crop_pct and crop_mode set the evaluation's crop" in said


def test_a_folder_recording_the_models_own_values_changes_nothing(
    tmp_path: Path, normalised: list[tuple[Any, Any]]
) -> None:
    """Byte for byte: config.json and the checkpoint's metadata are those of weights recording nothing."""
    folder = timm_hub(tmp_path / "hub", mean=HALF, std=HALF, crop_pct=1.0, interpolation="bicubic")
    first = _train(folder, tmp_path / "a")
    timm_hub(tmp_path / "plain")
    (folder / "config.json").write_text((tmp_path / "plain" / "config.json").read_text())
    second = _train(folder, tmp_path / "b")
    assert normalised == [(tuple(HALF), tuple(HALF))] * 2

    def recorded(run: loop.RunResult) -> tuple[str, str]:
        config, meta = (run.run_dir / "config.json").read_text(), read_meta(run.run_dir / "best.safetensors").to_json()
        return config.replace(str(tmp_path / "a"), "OUT"), meta.replace(str(tmp_path / "a"), "OUT")

    assert "mean" not in json.loads(recorded(first)[0])["model"]
    assert recorded(first) == tuple(text.replace(str(tmp_path / "b"), "OUT") for text in recorded(second))


def test_a_vitc_checkpoints_cfg_is_inherited_per_channel(tmp_path: Path) -> None:
    """A checkpoint imported with mean 0.25 gives a grey run its mean; crop_pct only at its size."""
    folder = timm_hub(tmp_path / "hub", mean=QUARTER, std=[0.2, 0.3, 0.4], crop_pct=0.9)
    result = CliRunner().invoke(app, ["import", str(folder), "-o", str(tmp_path / "ckpt"), *SET_MICRO])
    assert result.exit_code == 0, result.output
    pretrained = read_pretrained(tmp_path / "ckpt" / "model.safetensors", "deit_micro")
    grey = inherited_preprocess(pretrained, "deit_micro", {**MICRO, "in_chans": 1}, 32, {})
    assert grey == {"mean": [0.25], "std": [pytest.approx(0.3)], "crop_pct": 0.9}
    assert "crop_pct" not in inherited_preprocess(pretrained, "deit_micro", MICRO, 48, {})  # another size
    assert "mean" not in inherited_preprocess(pretrained, "deit_micro", MICRO, 32, {"mean": HALF})  # set by hand


def test_bad_model_mean_is_one_line() -> None:
    with pytest.raises(VitcError, match=r"^config key model.std must be above 0, got \[0.0\]$"):
        load_config(None, {"model.std": [0.0]})
    with pytest.raises(VitcError, match=r"config key model\.crop_mode must be one of center, squash"):
        load_config(None, {"model.crop_mode": "border"})
    assert create_model("deit_micro").vitc_cfg.mean == tuple(HALF)
