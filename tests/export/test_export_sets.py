"""The files of one export form a set: a kill between them, or another export into the same folder,
never lets a reader use a mixed set."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from vitc._io import sha256_file
from vitc.artifacts import load_heldout, load_manifest, manifest_for
from vitc.cli.main import app
from vitc.errors import VitcError

pytest.importorskip("onnxruntime")
runner = CliRunner()

# Runs `vitc export` in a child process that is SIGKILLed at a chosen moment: as the named file is renamed in
# (the manifest's rename follows the ONNX file's at once, with Ctrl-C held: only a SIGKILL parts them).
_KILL_AT = textwrap.dedent(
    """
    import os, signal, sys
    from vitc.cli.main import app
    target = sys.argv[1]
    real_replace = os.replace
    def replace(source, destination):
        if os.path.basename(destination).startswith(target):
            os.kill(os.getpid(), signal.SIGKILL)
        real_replace(source, destination)
    os.replace = replace
    app(sys.argv[2:])
    """
)


def _copy(exports: dict[str, Any], tmp_path: Path) -> Path:
    folder = tmp_path / "r"
    shutil.copytree(exports["fp32"].onnx_path.parent, folder)
    return folder


def test_a_kill_after_the_onnx_file_leaves_a_set_that_readers_refuse(
    exports: dict[str, Any], trained_ckpt: Path, tmp_path: Path
) -> None:
    folder = _copy(exports, tmp_path)
    old_manifest = (folder / "manifest.fp32.json").read_bytes()
    args = ["export", str(trained_ckpt), "-p", "fp32", "--batch", "2", "--out", str(tmp_path), "--run", "r", "--force"]
    child = subprocess.run([sys.executable, "-c", _KILL_AT, "manifest.fp32", *args], capture_output=True, timeout=300)
    assert child.returncode == -9, child.stderr.decode()[-2000:]  # killed after the new ONNX file was renamed in
    assert (folder / "manifest.fp32.json").read_bytes() == old_manifest
    assert sha256_file(folder / "model.fp32.onnx") != json.loads(old_manifest)["onnx_sha256"]

    with pytest.raises(VitcError, match="sha256 differs"):
        manifest_for(folder / "model.fp32.onnx")
    onnx_file = str(folder / "model.fp32.onnx")
    for command in (["bench", "-e", onnx_file, "-n", "1"], ["info", onnx_file]):
        result = runner.invoke(app, command)
        assert result.exit_code == 2 and "sha256 differs" in result.output, (command, result.output)
    for other in ("fp16", "int8"):  # the other precisions of the folder are untouched and still usable
        assert manifest_for(folder / f"model.{other}.onnx") is not None


def test_a_tampered_heldout_set_is_refused(exports: dict[str, Any], tmp_path: Path) -> None:
    folder = _copy(exports, tmp_path)
    manifest = load_manifest(folder / "manifest.fp16.json")
    assert manifest.heldout_path is not None
    data = bytearray(manifest.heldout_path.read_bytes())
    data[-100] ^= 0xFF
    manifest.heldout_path.write_bytes(bytes(data))
    for source in (manifest, folder, manifest.heldout_path):
        with pytest.raises(VitcError, match="sha256 differs"):
            load_heldout(source)


def test_another_checkpoint_exported_into_the_folder_keeps_the_other_exports_sets(
    exports: dict[str, Any], trained_ckpt: Path, tmp_path: Path
) -> None:
    import torch

    from vitc.checkpoint import read_checkpoint, write_checkpoint

    folder = _copy(exports, tmp_path)
    fp16 = load_manifest(folder / "manifest.fp16.json")
    reference_fp16 = load_heldout(fp16).reference_logits
    model, meta = read_checkpoint(trained_ckpt)
    with torch.no_grad():
        model.head.bias.add_(0.5)  # a different checkpoint: other reference logits
    other = write_checkpoint(tmp_path / "other" / "model.safetensors", model, meta)

    args = ["export", str(other), "-p", "fp32", "--batch", "2", "--out", str(tmp_path), "--run", "r", "--force"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    fp32 = load_manifest(folder / "manifest.fp32.json")
    assert fp32.heldout != fp16.heldout  # two held-out sets side by side, each with its own export
    assert (load_heldout(fp16).reference_logits == reference_fp16).all()
    assert not (load_heldout(fp32).reference_logits == reference_fp16).all()
    with pytest.raises(VitcError, match="different held-out sets"):
        load_heldout(folder)  # ambiguous: the user must name the manifest

    args = ["export", str(other), "-p", "fp16", "-p", "int8", "--batch", "8", "--out", str(tmp_path), "--run", "r"]
    result = runner.invoke(app, [*args, "--force", "--calib-images", "16", "--max-drop", "100"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in folder.glob("heldout.*.npz")) == [fp32.heldout]  # the unused set was pruned
    assert load_heldout(folder).labels.shape == (360,)
