"""What a path given on the command line is, from its listing alone, and the one line that says what to
name instead when it is not what a command takes: a folder given for a file names the files in it. No
torch: `vitc build`, `check`, `bench --engine`, and `eval` and `predict` on an engine run on a Jetson."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from vitc._run_layout import RunLayout, is_resume_state, is_run_folder, run_checkpoint
from vitc.artifacts.checkpoint_meta import checkpoint_model
from vitc.artifacts.manifest import manifest_paths
from vitc.errors import VitcError

MISSING, RUN, EXPORT, CHECKPOINT, FOLDER, FILE = "missing", "run", "export", "checkpoint", "folder", "file"
CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
FILES_SHOWN = 4  # files named in a message before "…"
WEIGHTS_OR_ENGINE = "a vitc checkpoint or run folder, or an .onnx or .plan file"  # what eval and predict take


def path_kind(path: Path) -> str:
    """MISSING, RUN (a `vitc train` run folder: vitc._run_layout.is_run_folder), EXPORT (a `vitc export` folder:
    it holds manifest.*.json), CHECKPOINT (weights, by suffix), or any other FOLDER or FILE."""
    if not path.exists():
        return MISSING
    if path.is_dir():
        if is_run_folder(path):
            return RUN
        return EXPORT if manifest_paths(path) else FOLDER
    return CHECKPOINT if path.suffix.lower() in CHECKPOINT_SUFFIXES else FILE


def not_taken(path: Path, takes: str, suffixes: Sequence[str], pytorch: str | None = None) -> VitcError:
    """Why `path` is not what a command `takes` (`suffixes`: the files it does take), saying what to give
    instead: a folder's files of those suffixes, the command that makes one from weights, and `pytorch`,
    the option that runs weights in PyTorch where the command has one (bench's --ckpt)."""
    kind = path_kind(path)
    in_pytorch = f", or {pytorch} {path} runs it in PyTorch" if pytorch else ""
    if kind == MISSING:
        return VitcError(f"{path}: no such file")
    if kind == FILE:
        return VitcError(f"{path} is not {takes}")
    if kind == RUN:
        return _run_folder_not_taken(path, takes, pytorch)
    if kind == CHECKPOINT:
        if is_resume_state(path):  # no weights to export or import: its run folder's checkpoint is
            return _run_folder_not_taken(path.parent, takes, pytorch)
        if checkpoint_model(path) is not None:  # vitc's own: exported as it is, or run in PyTorch
            make = f"`vitc export {path}` writes its ONNX file"
            return VitcError(f"{path} is a checkpoint, not {takes}: {make}{in_pytorch}")
        # timm's, Hugging Face's or the official weights (a .safetensors without vitc's metadata too)
        make = f"`vitc import {path} --out DIR` makes it a vitc checkpoint to export"
        return VitcError(f"{path} holds weights, not {takes}: {make}")
    found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
    names = ", ".join(str(p) for p in found[:FILES_SHOWN]) + (", …" if len(found) > FILES_SHOWN else "")
    what = "an export folder" if kind == EXPORT else "a folder"
    return VitcError(f"{path} is {what}, not {takes}" + (f": name one of its files: {names}" if found else ""))


def _run_folder_not_taken(path: Path, takes: str, pytorch: str | None) -> VitcError:
    """A run folder given for a file: `vitc export` of the checkpoint it stands for (vitc._run_layout), or, for a
    run without one yet (stopped in its first epoch), the line export itself would give: naming `vitc export RUN`
    there sent the user to a second refusal. A run with only last.safetensors is exported by naming that file."""
    weights = path  # `vitc export RUN` takes its best.safetensors
    try:
        run_checkpoint(path)
    except VitcError as refusal:
        weights = RunLayout(path).last
        if not weights.is_file():
            return refusal
    in_pytorch = f", or {pytorch} {weights} runs it in PyTorch" if pytorch else ""
    return VitcError(
        f"{path} is a vitc train run folder, not {takes}: `vitc export {weights}` writes its ONNX files{in_pytorch}"
    )
