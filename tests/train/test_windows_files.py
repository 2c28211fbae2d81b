"""Windows refuses to replace or delete a file this process still has open or memory-mapped (PermissionError,
WinError 32, or 1224 "a file with a user-mapped section open"). Linux allows both, so these tests look at what
is held (/proc/self/maps, /proc/self/fd) or fake Windows' refusal."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
import torch

from vitc.train import state as run_state
from vitc.train.run_folder import RunFolder
from vitc.train.state import TrainState

needs_proc = pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads /proc/self (Linux)")


def _mapped(path: Path) -> bool:
    target = str(path.resolve())
    return any(line.rstrip("\n").endswith(" " + target) for line in Path("/proc/self/maps").read_text().splitlines())


def _open_here() -> set[str]:
    """The files this process holds open."""
    held = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the descriptor listdir itself used, closed by now
            held.add(os.readlink(f"/proc/self/fd/{fd}"))
    return held


@needs_proc
def test_a_resumed_run_keeps_no_view_of_its_resume_file(tmp_path: Path) -> None:
    """The optimiser's moments were views of the mapped resume file, which the next epoch's state replaces:
    `vitc train --resume` would stop at the end of its first epoch on Windows."""
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.ones(2, 4)).sum().backward()
    optimizer.step()
    path = tmp_path / "resume.safetensors"
    run_state.save_state(path, TrainState(), model, optimizer, None, {"aug": torch.Generator()}, {})
    again = torch.optim.AdamW(model.parameters())
    run_state.load_state(path, model, again, None, {"aug": torch.Generator()})
    assert not _mapped(path)
    assert all(torch.equal(again.state[p]["exp_avg_sq"], optimizer.state[p]["exp_avg_sq"]) for p in model.parameters())


@needs_proc
def test_the_run_lock_is_released_where_an_open_file_cannot_be_deleted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Windows deletes no file that a process holds open: release() unlinked the lock file before closing it,
    so every `vitc train` ended in PermissionError (WinError 32) after its run."""
    unlink = Path.unlink

    def windows_unlink(self: Path, missing_ok: bool = False) -> None:
        if str(self.resolve()) in _open_here():
            raise PermissionError(13, "The process cannot access the file because it is being used", str(self))
        unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", windows_unlink)
    folder = RunFolder(tmp_path, "run")
    folder.acquire()
    folder.release()
    assert not (tmp_path / ".run.lock").exists()
    again = RunFolder(tmp_path, "run")
    again.acquire()  # the next run locks it
    again.release()
