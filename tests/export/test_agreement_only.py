"""An imported ImageNet-head model, exported from its run folder (issue 24 item 6): no local data has its
1000 classes, so drift is agreement-only on generated inputs, labelled so in the manifest, the tables and
every reader (`vitc info`, `vitc bench --data`); INT8 names the images it needs."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from vitc.checkpoint import meta_for, write_checkpoint
from vitc.cli.main import app
from vitc.models import create_model

pytest.importorskip("onnxruntime")
runner = CliRunner()


@pytest.fixture(scope="module")
def imagenet_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1000-class deit_micro at 16 px, written by vitc's checkpoint writer as a run folder's best."""
    torch.manual_seed(0)
    model = create_model("deit_micro", depth=1, embed_dim=32, num_heads=2, img_size=16, num_classes=1000)
    folder = tmp_path_factory.mktemp("runs") / "imnet"
    write_checkpoint(folder / "best.safetensors", model, meta_for(model))  # no classes named, no training data
    return folder


def _one_line_error(args: list[str]) -> str:
    result = runner.invoke(app, args)
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error:"), result.output
    return lines[0]


def test_a_run_folder_exports_with_agreement_only_drift(imagenet_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "export"
    narrow = {"COLUMNS": "60"}  # a narrow terminal: the next command still prints as one line to copy
    result = runner.invoke(
        app, ["export", str(imagenet_run), "-p", "fp32", "-p", "fp16", "--out", str(out)], env=narrow
    )
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert (
        "held-out set: no labelled data of the model's 1000 classes: 256 generated images (random pixels, no "
        "labels): drift is agreement-only" in text
    )
    assert "digits" not in text  # the default data is not the user's: its name said nothing of why
    assert "agreement only: generated inputs" in text  # the drift table's caption
    (nxt,) = [line.split("next: vitc ")[1] for line in result.output.splitlines() if "next: vitc " in line]
    assert nxt.startswith(("build", "bench")) and str(out / "imnet" / "model.fp16.onnx") in nxt
    folder = out / "imnet"  # the run folder's name
    manifest = json.loads((folder / "manifest.fp16.json").read_text())
    drift = manifest["drift"]
    assert drift["labels"] is False and drift["data"] == "generated" and drift["top1"] is None
    assert drift["samples"] == 256 and 0 <= drift["agreement"] <= 100 and drift["cosine"] > 0.99
    assert drift["max_abs_diff"] < 0.1 and drift["max_drop"] is None
    with np.load(folder / manifest["heldout"]) as held:
        assert "labels" not in held.files and held["reference_logits"].shape == (256, 1000)

    wide = {"COLUMNS": "200"}
    shown = runner.invoke(app, ["info", str(folder)], env=wide)
    assert shown.exit_code == 0, shown.output
    assert "agreement" in shown.output and "100.0%" in shown.output
    bench = runner.invoke(
        app, ["bench", "-e", str(folder / "model.fp16.onnx"), "--data", str(folder / "manifest.fp16.json"),
              "-n", "2", "--warmup", "1"], env=wide,
    )  # fmt: skip
    assert bench.exit_code == 0, bench.output
    assert "agrees" in bench.output and "no top-1" in " ".join(bench.output.split())

    named = _one_line_error(["export", str(imagenet_run), "--data", "digits", "--out", str(tmp_path / "x")])
    assert "digits has 10 classes and the model 1000" in named and "--data generated" in named


def test_int8_of_an_agreement_only_export_names_the_images_it_needs(imagenet_run: Path, tmp_path: Path) -> None:
    from PIL import Image

    message = _one_line_error(["export", str(imagenet_run), "-p", "int8", "--out", str(tmp_path / "a")])
    assert "--calib-dir" in message and not (tmp_path / "a" / "imnet" / "model.int8.onnx").exists()

    photos = tmp_path / "photos" / "some"
    photos.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 256, (24, 20, 3), dtype=np.uint8)).save(photos / f"{i}.jpg")
    (photos / "notes.txt").write_text("not an image")
    args = ["export", str(imagenet_run), "-p", "int8", "--calib-dir", str(tmp_path / "photos"), "--out", str(tmp_path)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "imnet" / "manifest.int8.json").read_text())
    assert manifest["calibration"]["images"] == 12 and manifest["calibration"]["data"] == str(tmp_path / "photos")
    assert manifest["drift"]["labels"] is False


def test_data_generated_is_asked_for_by_name(imagenet_run: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["export", str(imagenet_run), "--data", "generated", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "classes are not the model's" not in result.output  # asked for, not a fallback
    drift = json.loads((tmp_path / "imnet" / "manifest.fp32.json").read_text())["drift"]
    assert drift["data"] == "generated" and drift["labels"] is False and drift["agreement"] == 100.0


def test_the_next_command_after_an_export_quotes_its_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`next: vitc bench -e ../exp ört/r1/model.fp32.onnx` split at the space when pasted: each path is one
    shell word, with TensorRT (`vitc build`) and without it (`vitc bench`)."""
    import importlib.util
    from types import SimpleNamespace

    from vitc.cli.export import _next_command

    folder = tmp_path / "exp ört" / "r1"
    results = [SimpleNamespace(onnx_path=folder / f"model.{p}.onnx") for p in ("fp32", "fp16")]
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    command, where = _next_command(results).split("   ")
    assert shlex.split(command.removeprefix("next: ")) == [
        "vitc", "bench", "-e", str(folder / "model.fp32.onnx"), "-e", str(folder / "model.fp16.onnx"),
        "--data", str(folder),
    ]  # fmt: skip
    assert where == f"(vitc build {shlex.quote(str(folder / 'model.fp16.onnx'))} on a machine with TensorRT)"
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: SimpleNamespace(origin="tensorrt/__init__.py"))
    built = _next_command(results).removeprefix("next: ")
    assert shlex.split(built) == ["vitc", "build", str(folder / "model.fp16.onnx")]
