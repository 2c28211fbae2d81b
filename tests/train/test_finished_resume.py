"""`vitc train --resume` of a run that has trained all its epochs: one line with its result and how to train it
longer, exit 0, and no file of the run touched, as a job scheduler's requeue script that always resumes expects.
Before, each such resume scored the test split again and added its seconds to summary.json's time."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save_file
from typer.testing import CliRunner

from vitc.artifacts.resume import RESUME_KEY
from vitc.cli import train as cli_train
from vitc.cli.main import app
from vitc.train.finished import finished_run

runner = CliRunner()


def _set(overrides: dict[str, Any]) -> list[str]:
    return [arg for key, value in overrides.items() for arg in ("--set", f"{key}={json.dumps(value)}")]


def snapshot(out_dir: Path) -> dict[str, tuple[str, int]]:
    """Everything under `out_dir` (the run folder and what lies beside it): each file's sha256 and mtime, each
    folder's mtime (a file added or removed changes it)."""
    found = {".": ("folder", out_dir.stat().st_mtime_ns)}  # a lock file made and removed beside the run
    for path in sorted(out_dir.rglob("*")):
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "folder"
        found[str(path.relative_to(out_dir))] = (digest, path.stat().st_mtime_ns)
    return found


def test_resuming_a_finished_run_says_so_and_touches_nothing(
    tiny: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert runner.invoke(app, ["train", "-q", *_set({**tiny, "optim.epochs": 1})]).exit_code == 0
    out_dir = Path(tiny["run.out_dir"])
    run = out_dir / "tiny"
    summary = json.loads((run / "summary.json").read_text())
    before = snapshot(out_dir)

    def launched(*args: Any) -> None:
        raise AssertionError("--nproc launched processes for a finished run")

    monkeypatch.setattr(cli_train, "_launch_torchrun", launched)
    for how, command in (
        (["--resume", str(run)], f"vitc train --resume {run}"),
        (["--resume", "--name", "tiny", "--set", f"run.out_dir={out_dir}"], f"vitc train --resume {run}"),
        (["--resume", str(run), "--epochs", "1"], f"vitc train --resume {run}"),  # its own length, said again
        (["--resume", str(run), "--nproc", "2"], f"vitc train --resume {run} --nproc 2"),  # before any launch
    ):
        result = runner.invoke(app, ["train", "-q", *how])
        assert result.exit_code == 0, result.output
        assert result.output.strip().splitlines() == [
            f"run 'tiny' has finished its 1 epoch: test top-1 {summary['test_top1']:.2f}% (best val top-1 "
            f"{summary['best_val_top1']:.2f}%) in {run / 'summary.json'}; nothing to do (`{command} --epochs N` "
            "with N > 1 trains it longer)"
        ], result.output
        assert snapshot(out_dir) == before, how  # no file written, none added (a lock, a .new folder), none removed
    other = out_dir / "other" / "last.safetensors"  # another file of the same name, still there
    other.parent.mkdir()
    shutil.copy(run / "last.safetensors", other)
    for args in (
        [str(run / "last.safetensors")],  # eval's default name: last.confusion.test.json
        [str(run), "--out", str(out_dir / "mine.png")],
        [str(run / "last.safetensors"), "--out", str(run / "last.confusion.mine.png")],  # named with --out
        [str(other), "--out", str(run / "last.confusion.other.test.png")],  # a default-like name, of `other`
    ):
        assert runner.invoke(app, ["eval", *args]).exit_code == 0
    longer = runner.invoke(app, ["train", "-q", "--resume", str(run), "--epochs", "2"])
    assert longer.exit_code == 0 and json.loads((run / "summary.json").read_text())["epochs"] == 2, longer.output
    assert "removed last.confusion.test.json, last.confusion.test.png: vitc eval's reports of the replaced " in (
        longer.output
    )  # they stayed, of the epoch-1 weights
    kept = sorted(p.stem for p in run.glob("*.confusion.*.json"))
    assert kept == ["last.confusion.mine", "last.confusion.other.test"] and (out_dir / "mine.json").exists()


def test_a_resume_stopped_midway_removes_the_reports_of_what_it_replaced(
    tiny: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reports were removed only after a resumed run finished: stopped by SIGTERM or Ctrl-C after saving new
    checkpoints, it left eval's reports of the weights it had replaced."""
    import vitc.train.loop as loop
    from vitc.errors import VitcError

    assert runner.invoke(app, ["train", "-q", *_set({**tiny, "optim.epochs": 1})]).exit_code == 0
    run = Path(tiny["run.out_dir"]) / "tiny"
    assert runner.invoke(app, ["eval", str(run / "last.safetensors")]).exit_code == 0

    def saved_then_stopped(*args: Any, **kwargs: Any) -> None:
        shutil.copy(run / "last.safetensors", run / "new.tmp")
        os.replace(run / "new.tmp", run / "last.safetensors")  # as an epoch's save does: another file
        raise VitcError(f"stopped by SIGTERM; continue with: vitc train --resume {run}")

    monkeypatch.setattr(loop, "train", saved_then_stopped)
    stopped = runner.invoke(app, ["train", "-q", "--resume", str(run), "--epochs", "3"])
    assert stopped.exit_code == 2 and "removed last.confusion.test.json" in stopped.output, stopped.output
    assert not list(run.glob("*.confusion.*"))  # before: kept, describing the epoch-1 weights


def _fake_run(folder: Path, epochs: list[float], summary: dict[str, Any] | None, step_in_epoch: int = 0) -> Path:
    """A run folder with a resume state past the epochs whose val top-1 are `epochs`, and `summary` (None: none)."""
    folder.mkdir(parents=True)
    history = [{"epoch": i + 1, "val_top1": top1} for i, top1 in enumerate(epochs)]
    state = {"epoch": len(epochs), "step_in_epoch": step_in_epoch, "history": history}
    record = json.dumps({"state": state, "info": {"model": "deit_micro"}})
    save_file({"x": np.zeros(1, dtype=np.float32)}, str(folder / "resume.safetensors"), metadata={RESUME_KEY: record})
    if summary is not None:
        (folder / "summary.json").write_text(json.dumps(summary))
    return folder


def test_only_a_run_with_nothing_left_and_its_summary_is_finished(tmp_path: Path) -> None:
    done = {"epochs": 3, "test_top1": 90.0, "best_val_top1": 95.0, "test_split": "val"}
    run = _fake_run(tmp_path / "done", [50.0, 60.0, 70.0], done)
    assert finished_run(run, 3, 0) is not None
    assert finished_run(run, 4, 0) is None  # --epochs 4: one to train
    assert "val top-1 90.00% (best val top-1 95.00%)" in finished_run(run, 3, 0).line("vitc train --resume x")
    no_summary = _fake_run(tmp_path / "no_summary", [50.0, 60.0, 70.0], None)  # stopped in its final test
    assert finished_run(no_summary, 3, 0) is None
    earlier = _fake_run(tmp_path / "earlier", [50.0, 60.0, 70.0], {**done, "epochs": 2})  # the summary of 2 epochs
    assert finished_run(earlier, 3, 0) is None
    within = _fake_run(tmp_path / "within", [50.0, 60.0, 70.0], done, step_in_epoch=2)
    assert finished_run(within, 3, 0) is None
    stopped = _fake_run(tmp_path / "stopped", [70.0, 60.0, 60.0], {**done, "stopped_early": True})
    line = finished_run(stopped, 6, 2).line("vitc train --resume x")
    assert line.startswith("run 'stopped' stopped early after epoch 3 of 6 (optim.patience 2): val top-1 90.00%")
    assert line.endswith("(`vitc train --resume x --set optim.patience=0` trains its other 3)")
    assert finished_run(stopped, 6, 3) is None  # more patience: it goes on
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "resume.safetensors").write_bytes(b"not safetensors")
    (damaged / "summary.json").write_text(json.dumps(done))
    assert finished_run(damaged, 3, 0) is None  # the resume itself says what is wrong with it
