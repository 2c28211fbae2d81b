"""Which data measures a checkpoint: the user's own run's data, what the user names, never a meaningless set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from vitc.checkpoint import load_model, meta_for, save_checkpoint, training_data
from vitc.cli.main import app
from vitc.errors import VitcError
from vitc.models import create_model

runner = CliRunner()
SMALL = {"depth": 1, "embed_dim": 32, "num_heads": 2}


def _checkpoint(path: Path, data: dict[str, str], **args: int) -> Path:
    torch.manual_seed(0)
    model = create_model("deit_micro", **SMALL, **args)
    return save_checkpoint(path, model, meta_for(model, extra={"train_config": {"data": data}}))


def test_a_run_folder_of_the_users_own_names_its_data(tmp_path: Path) -> None:
    data = {"name": "imagefolder", "dir": str(tmp_path / "photos")}
    own = _checkpoint(tmp_path / "runs" / "r" / "best.safetensors", data)
    (own.parent / "config.json").write_text(json.dumps({"data": data}))
    _, meta = load_model(own)
    assert training_data(own, meta) == ("imagefolder", data["dir"])
    assert training_data(own, meta, "digits") == ("digits", None)  # named by the user: always used

    downloaded = _checkpoint(tmp_path / "downloads" / "model.safetensors", data)
    _, meta = load_model(downloaded)
    with pytest.raises(VitcError, match="pass --data-dir"):
        training_data(downloaded, meta)
    assert training_data(downloaded, meta, data_dir="/mine") == ("imagefolder", "/mine")


def test_export_refuses_data_whose_classes_do_not_match_the_head(tmp_path: Path) -> None:
    """An ImageNet head measured on digits gave 'top-1 0.00% vs 0.00%' without a word. Named data that does
    not fit is refused; unnamed, the export is agreement-only (tests/export/test_agreement_only.py)."""
    path = _checkpoint(tmp_path / "imported" / "model.safetensors", {}, num_classes=1000)
    result = runner.invoke(app, ["export", str(path), "--data", "digits", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2, result.output
    assert "digits has 10 classes and the model 1000" in result.output and "--data" in result.output


def test_eval_defaults_to_the_training_data_and_names_it(tmp_path: Path) -> None:
    path = _checkpoint(tmp_path / "m" / "model.safetensors", {"name": "digits"})
    result = runner.invoke(app, ["eval", str(path), "--split", "val", "--out", str(tmp_path / "cm.png")])
    assert result.exit_code == 0, result.output
    assert "on digits/val (" in result.output

    foreign = _checkpoint(tmp_path / "f" / "model.safetensors", {"name": "cifar10", "dir": "/elsewhere"})
    result = runner.invoke(app, ["eval", str(foreign)])
    assert result.exit_code == 2 and "pass --data-dir" in result.output, result.output


def test_manifest_carries_the_preprocessing(exports: dict) -> None:
    record = exports["fp32"].manifest.preprocess
    assert record["center_crop"] == [32, 32] and record["channel_order"] == "RGB" and record["layout"] == "NCHW"
    assert record["interpolation"] == "bicubic" and record["mean"] == list(exports["fp32"].manifest.mean)
    assert record["resize_shorter_side"] == round(32 / record["crop_pct"])
    written = json.loads(exports["fp32"].manifest.path.read_text())  # each fact once (issue 23)
    assert "mean" not in written and "std" not in written and written["preprocess"]["std"] == record["std"]
