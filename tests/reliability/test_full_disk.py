"""A disk that fills up, or turns read-only, while `vitc train` or `vitc import` writes: one line, exit 2,
the previous files intact.

Two ways in: a real 600 KB tmpfs (where this machine lets the tests mount one: CI runs as root) and,
everywhere, the error safetensors' Rust writer raises on a full disk (an exception that is not an
OSError and names the OS error only in its text, which is how it escaped as a traceback).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import SafetensorError
from typer.testing import CliRunner

from tests.train.conftest import TINY
from vitc.cli.main import app
from vitc.models import create_model

runner = CliRunner()
SMALL = ["--set", "depth=1", "--set", "embed_dim=32", "--set", "num_heads=2"]


def _set(overrides: dict[str, Any]) -> list[str]:
    return [arg for key, value in overrides.items() for arg in ("--set", f"{key}={json.dumps(value)}")]


@pytest.fixture
def tiny(tmp_path: Path) -> dict[str, Any]:
    return {**TINY, "run.out_dir": str(tmp_path / "runs"), "run.name": "tiny"}


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 600 KB tmpfs: room for one micro checkpoint, not for a run's worth of files."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def _disk_full(*_: Any, **__: Any) -> None:
    raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")


def test_train_on_a_disk_that_fills_up(tiny: dict[str, Any], tiny_disk: Path) -> None:
    overrides = {**tiny, "model.args": {"depth": 2, "embed_dim": 96, "num_heads": 4}, "run.out_dir": str(tiny_disk)}
    result = runner.invoke(app, ["train", "-q", *_set(overrides)])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("error: cannot write") and "the disk is full" in last


def test_train_when_the_writer_reports_a_full_disk(tiny: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("safetensors.torch.save_file", _disk_full)
    result = runner.invoke(app, ["train", "-q", *_set(tiny)])
    assert result.exit_code == 2 and "the disk is full" in result.output and "Traceback" not in result.output


def test_import_keeps_the_old_file_when_the_disk_is_full(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "deit.pth"
    torch.save(create_model("deit_micro", depth=1, embed_dim=32, num_heads=2).state_dict(), source)
    args = ["import", str(source), "-m", "deit_micro", "-o", str(tmp_path / "o"), *SMALL]
    assert runner.invoke(app, args).exit_code == 0
    before = (tmp_path / "o" / "model.safetensors").read_bytes()
    monkeypatch.setattr("safetensors.torch.save_file", _disk_full)
    result = runner.invoke(app, [*args, "--force"])
    assert result.exit_code == 2 and "the disk is full" in result.output, result.output
    assert (tmp_path / "o" / "model.safetensors").read_bytes() == before
    assert [p.name for p in (tmp_path / "o").iterdir()] == ["model.safetensors"]  # no temporary left behind


def test_import_onto_a_read_only_disk(tmp_path: Path, tiny_disk: Path) -> None:
    source = tmp_path / "deit.pth"
    torch.save(create_model("deit_micro", depth=1, embed_dim=32, num_heads=2).state_dict(), source)
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_disk)], check=True)
    result = runner.invoke(app, ["import", str(source), "-m", "deit_micro", "-o", str(tiny_disk / "o"), *SMALL])
    assert result.exit_code == 2 and "read-only" in result.output and "Traceback" not in result.output, result.output


def test_artifacts_get_the_mode_of_a_new_file(tmp_path: Path) -> None:
    from vitc._io import write_json

    write_json(tmp_path / "x.json", {})
    assert (tmp_path / "x.json").stat().st_mode & 0o777 == 0o666 & ~_umask()


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask
