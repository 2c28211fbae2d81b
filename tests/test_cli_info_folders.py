"""`vitc info` of a folder of weights: the one `vitc import --out` writes (its checkpoint), and a Hugging Face or
timm model folder (what it is, and how vitc takes it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vitc.cli.main import app


def run(*args: str):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "160"})


def test_the_folder_vitc_import_writes_is_shown_as_its_checkpoint(tmp_path: Path) -> None:
    """`vitc import --out weights/x` writes weights/x/model.safetensors, a folder `vitc.load_model` reads: info said
    it held no export manifest."""
    pytest.importorskip("torch")
    from vitc.checkpoint import meta_for, write_checkpoint
    from vitc.models import create_model

    model = create_model("deit_micro", depth=1)
    folder = tmp_path / "weights" / "deit_micro"
    write_checkpoint(folder / "model.safetensors", model, meta_for(model))
    result = run("info", str(folder))
    assert result.exit_code == 0, result.output
    assert "(vitc checkpoint)" in result.output and "no export manifest" not in result.output
    record = json.loads(run("info", str(folder), "--json").output)
    assert record["model"] == "deit_micro" and record["file"] == str(folder / "model.safetensors")


@pytest.mark.parametrize("weights", ["model.safetensors", "pytorch_model.bin"])
def test_a_hugging_face_or_timm_folder_says_how_to_use_it(tmp_path: Path, weights: str) -> None:
    """A downloaded folder (config.json and its weights, not vitc's) is no export: one line says what it is and
    how vitc takes it, naming the model its config.json names."""
    folder = tmp_path / "convit_tiny.fb_in1k"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architecture": "convit_tiny", "num_classes": 1000}))
    (folder / weights).write_bytes(b"not read: the config says what it is")
    result = run("info", str(folder))
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    assert result.output.strip() == (
        f"error: {folder} is a Hugging Face/timm model folder (config.json and {weights}, holding convit_tiny), "
        f"not a vitc artifact: convert it with `vitc import {folder} --out weights/<name>`, or fine-tune it with "
        f"`vitc train --pretrained {folder}`"
    )
    (folder / "config.json").unlink()  # weights alone, no manifest: what an export folder lacks, as before
    assert "no export manifest" in run("info", str(folder)).output
