"""A process killed with SIGKILL between writing an artifact's temporary and renaming it (the OOM killer, a
Jetson's watchdog, a power loss) left `.NAME.XXXXXXXX.tmp` beside the artifacts for good, a checkpoint's hundreds
of MB every run. The next write of the same target removes those no live process holds (vitc._io); a temporary
another process is writing (a DDP rank, a second export) is kept."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from vitc import _io
from vitc._io import atomic_files, atomic_write

pytest.importorskip("fcntl")  # POSIX: elsewhere nothing is locked, so nothing is swept

_WRITER = textwrap.dedent(
    """
    import sys
    from vitc._io import atomic_write

    with atomic_write(sys.argv[1]) as tmp:
        tmp.write_bytes(b"half of a checkpoint")
        print(tmp, flush=True)
        sys.stdin.read()  # until the test kills it, mid-write
    """
)


def _start_writer(target: Path) -> tuple[subprocess.Popen[str], Path]:
    """A process writing `target`, stopped before its rename: the temporary it is writing."""
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(target)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
    )
    assert writer.stdout is not None
    line = writer.stdout.readline().strip()
    assert line, "the writer did not start"
    return writer, Path(line)


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_a_write_removes_what_a_killed_write_of_the_same_file_left(tmp_path: Path) -> None:
    target = tmp_path / "last.safetensors"
    writer, leftover = _start_writer(target)
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=30)
    writer.stdout.close()  # type: ignore[union-attr]
    writer.stdin.close()  # type: ignore[union-attr]
    assert _names(tmp_path) == [leftover.name]  # what a SIGKILL leaves: the temporary, no target
    with atomic_write(target) as tmp:
        tmp.write_bytes(b"checkpoint")
    assert _names(tmp_path) == ["last.safetensors"]
    assert target.read_bytes() == b"checkpoint"


def test_a_live_process_temporary_is_never_removed(tmp_path: Path) -> None:
    """Two processes writing the same file (DDP ranks, two exports): neither takes the other's temporary."""
    target = tmp_path / "model.fp32.onnx"
    writer, in_flight = _start_writer(target)
    try:
        with atomic_write(target) as tmp:
            tmp.write_bytes(b"mine")
        assert in_flight.read_bytes() == b"half of a checkpoint"
        assert _names(tmp_path) == sorted([in_flight.name, target.name])
    finally:
        writer.kill()
        writer.communicate(timeout=30)
    with atomic_write(target) as tmp:  # once it is dead, its temporary is a leftover
        tmp.write_bytes(b"again")
    assert _names(tmp_path) == [target.name]


def test_only_the_targets_own_temporaries_are_removed(tmp_path: Path) -> None:
    """vitc's exact pattern for that target: another target's leftover waits for its own write, and a user's
    file that only looks alike is never touched."""
    kept = [
        ".best.safetensors.k2m9x_q1.tmp",  # another target's
        ".last.safetensors.old.tmp",  # not mkstemp's 8 characters
        ".last.safetensors.k2m9x_q1.tmp.bak",
        "last.safetensors.k2m9x_q1.tmp",  # no leading dot
        ".last.safetensors.K2M9X_Q1.tmp",  # mkstemp's names are lowercase
    ]
    for name in [*kept, ".last.safetensors.k2m9x_q1.tmp", ".last.safetensors.a0b1c2d3.tmp"]:
        (tmp_path / name).write_bytes(b"x")
    with atomic_files() as files:
        files.stage(tmp_path / "last.safetensors").write_bytes(b"new")
    assert _names(tmp_path) == sorted([*kept, "last.safetensors"])


def test_without_locks_nothing_is_swept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file system without flock (NFS without lockd, some FUSE mounts): no temporary can be told to be dead,
    so none is removed, and writes go on as before."""
    monkeypatch.setattr(_io, "_flock", lambda fd, wait: False)
    leftover = tmp_path / ".config.json.abcdefgh.tmp"
    leftover.write_bytes(b"x")
    _io.write_json(tmp_path / "config.json", {"a": 1})
    assert _names(tmp_path) == sorted([leftover.name, "config.json"])


def test_a_temporary_swept_before_it_was_locked_is_made_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Between mkstemp and the flock a sweep may remove the new file: the writer then makes another, so it never
    writes a temporary that is not locked."""
    made = []
    mkstemp = _io.tempfile.mkstemp

    def swept_once(**kwargs: object) -> tuple[int, str]:
        fd, name = mkstemp(**kwargs)  # type: ignore[arg-type]
        made.append(name)
        if len(made) == 1:
            os.unlink(name)  # as another process's sweep would, in that instant
        return fd, name

    monkeypatch.setattr(_io.tempfile, "mkstemp", swept_once)
    with atomic_write(tmp_path / "summary.json") as tmp:
        assert str(tmp) == made[1]
        tmp.write_text("{}")
    assert _names(tmp_path) == ["summary.json"]


def test_a_run_folders_sweep_keeps_a_live_writers_temporary(tmp_path: Path) -> None:
    """`vitc train` swept every `.*.tmp` of its run folder as a run started, a live writer's too (a report another
    command was writing there): it now takes the same locks as a write's own sweep."""
    import fcntl

    live = tmp_path / ".eval.json.abcd1234.tmp"
    dead = tmp_path / ".best.safetensors.zz9_y8x7.tmp"
    mine = tmp_path / ".notes.old.tmp"  # a user's own file, not vitc's name
    for path in (live, dead, mine):
        path.write_bytes(b"x")
    with open(live, "rb") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)  # as the writer holds it: another open file description
        _io.remove_leftover_temporaries(tmp_path)
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, mine.name])
