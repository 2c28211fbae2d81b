"""Files that describe each other are replaced together (vitc._io.atomic_files), with Ctrl-C and SIGTERM held
across their renames (vitc._signals.stop_signals_held); the commands' own cases are in tests/export/test_cli.py
and tests/engines/test_trt_first_build.py."""

from __future__ import annotations

import errno
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from vitc import _io
from vitc._io import atomic_files
from vitc._signals import stop_signals_held
from vitc.errors import VitcError


def _old_pair(tmp_path: Path) -> tuple[Path, Path]:
    model, record = tmp_path / "model.bin", tmp_path / "model.json"
    model.write_text("old model")
    record.write_text("old record")
    return model, record


def test_a_ctrl_c_between_the_renames_acts_once_both_are_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model, record = _old_pair(tmp_path)
    rename = os.replace

    def rename_then_ctrl_c(source: Any, target: Any) -> None:
        rename(source, target)
        if Path(target) == model:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(_io.os, "replace", rename_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt), atomic_files() as files:
        files.stage(model).write_text("new model")
        files.stage(record).write_text("new record")
    assert (model.read_text(), record.read_text()) == ("new model", "new record")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.bin", "model.json"]


def test_a_failure_in_either_file_replaces_neither(tmp_path: Path) -> None:
    model, record = _old_pair(tmp_path)
    with pytest.raises(VitcError, match=f"cannot write {record}: the disk is full"), atomic_files() as files:
        files.stage(model).write_text("new model")
        files.stage(record)
        raise OSError(errno.ENOSPC, "No space left on device")
    assert (model.read_text(), record.read_text()) == ("old model", "old record")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.bin", "model.json"]  # no temporary left behind


def test_a_held_sigterm_reaches_the_handler_there_was() -> None:
    """After the held section, as it arrived: here to the embedding program's own handler, which is kept."""
    seen: list[str] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append("handled"))
    try:
        with stop_signals_held():
            os.kill(os.getpid(), signal.SIGTERM)
            seen.append("held section ends")
        assert seen == ["held section ends", "handled"]
        os.kill(os.getpid(), signal.SIGTERM)
        assert seen[-1] == "handled" and len(seen) == 3
    finally:
        signal.signal(signal.SIGTERM, previous)
