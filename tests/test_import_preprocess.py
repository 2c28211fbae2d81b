"""The evaluation transform a timm hub folder (config.json's pretrained_cfg) or a Hugging Face folder
(preprocessor_config.json) records for its weights: `vitc import` and `vitc.load_model` take it (mean, std,
crop_pct, crop_mode; interpolation said, vitc resizes bicubic), `--set mean=`/`std=` override it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

import vitc
from vitc.checkpoint import read_meta
from vitc.cli.main import app
from vitc.downloads import preprocess_named_by
from vitc.models import create_model

runner = CliRunner()
MICRO: dict[str, Any] = {"depth": 1, "embed_dim": 32, "num_heads": 2}
SET_MICRO = ["--set", "depth=1", "--set", "embed_dim=32", "--set", "num_heads=2"]
HALF = [0.5, 0.5, 0.5]


def timm_hub(folder: Path, **recorded: Any) -> Path:
    """A timm hub folder of deit_micro (registered: mean/std 0.5, crop_pct 1) whose pretrained_cfg records
    `recorded` (timm's save_config_for_hf writes mean, std, crop_pct, crop_mode, interpolation there)."""
    folder.mkdir(parents=True)
    torch.manual_seed(0)
    model = create_model("deit_micro", **MICRO)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "model.safetensors")
    pretrained_cfg = {"input_size": [3, 32, 32], "num_classes": 10, "classifier": "head", **recorded}
    config = {"architecture": "deit_micro", "num_classes": 10, "pretrained_cfg": pretrained_cfg}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def _import(source: Path, out: Path, *extra: str) -> Any:
    return runner.invoke(app, ["import", str(source), "-o", str(out), *SET_MICRO, *extra])


def test_a_timm_folders_pretrained_cfg_is_recorded_and_said(tmp_path: Path) -> None:
    """It recorded the registry's mean, std and crop_pct without a word."""
    folder = timm_hub(
        tmp_path / "hub", mean=[0.2, 0.3, 0.4], std=[0.25], crop_pct=0.9, crop_mode="center", interpolation="bilinear"
    )
    result = _import(folder, tmp_path / "out")
    assert result.exit_code == 0, result.output
    cfg = read_meta(tmp_path / "out" / "model.safetensors").cfg
    assert (cfg.mean, cfg.std, cfg.crop_pct, cfg.crop_mode) == ((0.2, 0.3, 0.4), (0.25,) * 3, 0.9, "center")
    assert cfg.interpolation == "bicubic"  # what vitc's resize does, not a value nothing honours
    said = " ".join(result.output.split())
    assert "mean=[0.2, 0.3, 0.4], std=[0.25, 0.25, 0.25], crop_pct=0.9 (what its config.json" in said
    assert "resizes bilinear; vitc evaluates bicubic" in said
    api = vitc.load_model(folder, **MICRO)  # the Python API reads it too
    assert api.vitc_cfg.mean == (0.2, 0.3, 0.4) and api.vitc_cfg.crop_pct == 0.9


def test_a_folder_recording_the_registrys_values_says_nothing(tmp_path: Path) -> None:
    folder = timm_hub(tmp_path / "hub", mean=HALF, std=HALF, crop_pct=1.0, interpolation="bicubic")
    result = _import(folder, tmp_path / "out")
    assert result.exit_code == 0 and "records for these weights" not in result.output, result.output
    assert read_meta(tmp_path / "out" / "model.safetensors").cfg == create_model("deit_micro", **MICRO).vitc_cfg


def test_ill_formed_values_in_a_folder_are_left_to_the_model(tmp_path: Path) -> None:
    folder = timm_hub(tmp_path / "hub", mean=[0.1, "x", 0.2], std=[0.0, 1.0, 1.0], crop_pct=1.5, crop_mode="border")
    result = _import(folder, tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert read_meta(tmp_path / "out" / "model.safetensors").cfg == create_model("deit_micro", **MICRO).vitc_cfg


def test_set_mean_and_std_override_the_folder(tmp_path: Path) -> None:
    """--set mean=[...] failed with "VisionTransformer takes no argument mean"."""
    folder = timm_hub(tmp_path / "hub", mean=[0.2, 0.3, 0.4], std=[0.25, 0.25, 0.25])
    result = _import(folder, tmp_path / "out", "--set", "mean=[0.1,0.1,0.1]", "--set", "std=[0.3]")
    assert result.exit_code == 0, result.output
    cfg = read_meta(tmp_path / "out" / "model.safetensors").cfg
    assert cfg.mean == (0.1, 0.1, 0.1) and cfg.std == (0.3, 0.3, 0.3)
    assert "records for these weights" not in result.output


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("std=[0,1,1]", "--set: std must be above 0"),
        ("mean=[0.1,0.2]", "--set: mean must be a list of 1 or 3 values"),
        ("mean=[NaN,0,0]", "--set: mean must be a list of 1 or 3 values"),
        ("mean=grey", "--set: mean must be a list of 1 or 3 values"),
    ],
)
def test_bad_mean_or_std_is_one_line(tmp_path: Path, setting: str, message: str) -> None:
    folder = timm_hub(tmp_path / "hub")
    result = _import(folder, tmp_path / "out", "--set", setting)
    assert result.exit_code == 2 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) <= 2  # "model: ... (named by its config.json)" and the error
    assert not (tmp_path / "out").exists()


def test_a_hugging_face_processors_mean_std_and_crop_are_recorded(tmp_path: Path) -> None:
    """A Hugging Face CvT folder imported with the model's registered mean and std, not its processor's."""
    transformers = pytest.importorskip("transformers")
    micro = {"embed_dim": [32, 64, 96], "depth": [1, 2, 3], "num_heads": [1, 2, 3], "patch_sizes": [3, 3, 3]}
    micro |= {"patch_stride": [2, 2, 2], "patch_padding": [1, 1, 1], "image_size": 32}
    torch.manual_seed(0)
    transformers.CvtForImageClassification(transformers.CvtConfig(**micro, num_labels=10)).save_pretrained(tmp_path)
    processor = {"image_processor_type": "ConvNextImageProcessor", "image_mean": [0.3, 0.4, 0.5], "image_std": 0.2}
    processor |= {"crop_pct": 0.8, "resample": 2, "size": {"shortest_edge": 32}, "do_normalize": True}
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(processor))
    out = tmp_path / "out"
    result = runner.invoke(app, ["import", str(tmp_path), "-m", "cvt_micro", "-o", str(out), "--set", "depths=[1,2,3]"])
    assert result.exit_code == 0, result.output
    cfg = read_meta(tmp_path / "out" / "model.safetensors").cfg
    assert (cfg.mean, cfg.std, cfg.crop_pct, cfg.interpolation) == ((0.3, 0.4, 0.5), (0.2,) * 3, 0.8, "bicubic")
    assert "resizes bilinear; vitc evaluates bicubic" in " ".join(result.output.split())
    processor["do_normalize"] = False  # the processor leaves pixels in [0, 1]
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(processor))
    assert preprocess_named_by(tmp_path)[0]["mean"] == [0.0] and preprocess_named_by(tmp_path)[0]["std"] == [1.0]
