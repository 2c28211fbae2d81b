"""One answer to "is this a run folder, and which checkpoint does it mean" (vitc._run_layout).

A run stopped in its first epoch (config.json and resume.safetensors), or one without best.safetensors beside
its last.safetensors, was a run folder to `vitc train` ("`vitc train --pretrained RUN` starts a new run from
its weights") and, for the same folder, "a folder without best.safetensors (not a vitc train run folder)" to
export, compile and bench --ckpt, "a folder, not a vitc checkpoint or run folder" to eval and predict, and "a
folder without model.safetensors, pytorch_model.bin or best.safetensors" to import, --pretrained and
vitc.load_model. Each now says what the run folder holds, in the same line.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.numpy import save_file
from typer.testing import CliRunner

import vitc
from vitc._run_layout import BEST, CONFIG, LAST, RESUME, is_run_folder, run_checkpoint
from vitc.cli.main import app
from vitc.errors import VitcError

STOPPED_EARLY = (RESUME,)  # Ctrl-C within the first epoch: no checkpoint yet
WITHOUT_BEST = (LAST, RESUME)  # no epoch's validation top-1 was a number (or best.safetensors was removed)


def _run_folder(root: Path, files: tuple[str, ...]) -> Path:
    folder = root / "run"
    folder.mkdir()
    (folder / CONFIG).write_text('{"model": {"name": "deit_micro"}}')
    for name in files:
        save_file({"x": np.zeros(1, np.float32)}, str(folder / name))
    return folder


def _said(files: tuple[str, ...], run: Path) -> str:
    if files == STOPPED_EARLY:
        return (
            f"{run} is a vitc train run folder holding no checkpoint, only its resume state (a run stopped in its "
            f"first epoch has no other): `vitc train --resume {run}` continues it"
        )
    return f"{run} is a vitc train run folder without best.safetensors: name {run / LAST}, its last epoch's checkpoint"


@pytest.mark.parametrize("files", [STOPPED_EARLY, WITHOUT_BEST], ids=["stopped-early", "without-best"])
@pytest.mark.parametrize("command", ["eval", "predict", "export", "compile", "bench", "import", "pretrained"])
def test_every_command_says_the_same_of_a_run_folder_without_best(command: str, files, tmp_path: Path) -> None:
    run = _run_folder(tmp_path, files)
    photo = tmp_path / "photo.png"
    Image.new("RGB", (8, 8)).save(photo)
    args = {
        "eval": ["eval", str(run)],
        "predict": ["predict", str(run), str(photo)],
        "export": ["export", str(run), "-p", "fp32", "--out", str(tmp_path / "exports")],
        "compile": ["compile", str(run)],
        "bench": ["bench", "--ckpt", str(run)],
        "import": ["import", str(run), "--out", str(tmp_path / "imported.safetensors")],
        "pretrained": ["train", "--pretrained", str(run), "--set", f"run.out_dir={tmp_path / 'runs'}"],
    }[command]
    before = sorted(p.name for p in tmp_path.iterdir())
    result = CliRunner().invoke(app, args, env={"COLUMNS": "400"})
    assert result.exit_code == 2, result.output
    assert result.output.strip() == f"error: {_said(files, run)}"
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


@pytest.mark.parametrize("command", ["build", "check", "bench"])
def test_commands_taking_an_onnx_file_name_the_export_a_run_folder_allows(command: str, tmp_path: Path) -> None:
    """`vitc build`, `check` and `bench --engine` of a run folder named `vitc export RUN`, which refuses a run stopped
    in its first epoch and one without best.safetensors: the first gets export's own line, the second the export
    of its last.safetensors, and a run with best.safetensors the export of the folder, as before."""
    takes = "an .onnx or .plan file" if command == "bench" else "an ONNX file"
    for files in (STOPPED_EARLY, WITHOUT_BEST, (BEST, RESUME)):
        root = tmp_path / str(len(files)) / files[0]
        root.mkdir(parents=True)
        run = _run_folder(root, files)
        args = ["bench", "--engine", str(run)] if command == "bench" else [command, str(run)]
        result = CliRunner().invoke(app, args, env={"COLUMNS": "400"})
        if files == STOPPED_EARLY:
            said = _said(files, run)
        else:
            weights = run / LAST if files == WITHOUT_BEST else run
            pytorch = f", or --ckpt {weights} runs it in PyTorch" if command == "bench" else ""
            said = (
                f"{run} is a vitc train run folder, not {takes}: `vitc export {weights}` writes its ONNX files{pytorch}"
            )
        assert (result.exit_code, result.output.strip()) == (2, f"error: {said}"), files


@pytest.mark.parametrize("files", [STOPPED_EARLY, WITHOUT_BEST], ids=["stopped-early", "without-best"])
def test_load_model_says_the_same_of_a_run_folder_without_best(files, tmp_path: Path) -> None:
    run = _run_folder(tmp_path, files)
    with pytest.raises(VitcError) as refused:
        vitc.load_model(run)
    assert str(refused.value) == _said(files, run)


def test_a_run_folder_holds_a_checkpoint_or_resume_state(tmp_path: Path) -> None:
    """A Hugging Face folder (config.json, model.safetensors) or a folder of notes is no run folder."""
    hub = tmp_path / "hub"
    hub.mkdir()
    (hub / CONFIG).write_text("{}")
    save_file({"x": np.zeros(1, np.float32)}, str(hub / "model.safetensors"))
    assert not is_run_folder(hub) and not is_run_folder(hub / "model.safetensors")
    assert not is_run_folder(tmp_path / "missing")
    for name in (BEST, LAST, RESUME):
        folder = tmp_path / name.split(".")[0]
        folder.mkdir()
        (folder / name).write_bytes(b"")
        assert is_run_folder(folder)
    assert run_checkpoint(tmp_path / "best") == tmp_path / "best" / BEST


@pytest.mark.parametrize("files", [STOPPED_EARLY, (BEST, RESUME)], ids=["stopped-early", "with-best"])
def test_a_resume_state_given_for_an_onnx_file_is_said_as_its_run_folder(files, tmp_path: Path) -> None:
    """`vitc build RUN/resume.safetensors` said it "holds weights ...: `vitc import ... --out DIR` makes it a vitc
    checkpoint to export" (import refuses a resume state): it is said as its run folder is."""
    from vitc._run_layout import is_resume_state

    run = _run_folder(tmp_path, files)
    state = run / RESUME
    folder = CliRunner().invoke(app, ["build", str(run)], env={"COLUMNS": "400"})
    result = CliRunner().invoke(app, ["build", str(state)], env={"COLUMNS": "400"})
    assert (result.exit_code, result.output) == (2, folder.output) and "vitc import" not in result.output
    assert is_resume_state(state) and is_resume_state(run / "resume.rank1.safetensors")
    assert not is_resume_state(run / BEST) and not is_resume_state(tmp_path / RESUME)
