"""The campaign's DDP case: one of two training processes SIGKILLed mid-run (gloo on CPU).

The launcher must stop the other process within seconds (it would otherwise wait in a collective
for gloo's 30-minute timeout), say in one line which rank died and how, and `--resume` must continue
to the same weights as an uninterrupted run. One test: a DDP launch costs tens of seconds on 2 cores.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.train.conftest import TINY
from tests.train.test_distributed import _set_args
from vitc.train.config import load_config
from vitc.train.distributed import STOP_GRACE_S
from vitc.train.loop import train

EPOCHS = 4  # long enough that the kill, sent when epoch 1 is saved, lands before the run ends


def _rank_pid(launcher: int, rank: int) -> int | None:
    """The pid of the launcher's child that runs `rank` (from /proc: no psutil needed)."""
    children = Path(f"/proc/{launcher}/task/{launcher}/children")
    for pid in children.read_text().split() if children.exists() else []:
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in environ:
            return int(pid)
    return None


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds the rank's process through /proc")
def test_a_killed_rank_stops_the_run_in_one_line_and_resume_finishes_it(tmp_path: Path) -> None:
    tiny = {**TINY, "optim.epochs": EPOCHS, "model.drop_path_rate": 0.0, "run.out_dir": str(tmp_path / "runs")}
    single = train(load_config(None, {**tiny, "run.name": "single"}), show_progress=False)

    cmd = [sys.executable, "-m", "vitc.cli.main", "train", "--nproc", "2", "-q"]
    cmd += _set_args({**tiny, "run.name": "ddp"})
    run_dir = Path(tiny["run.out_dir"]) / "ddp"
    launcher = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not (run_dir / "resume.safetensors").exists():  # epoch 1 is saved: the run is in epoch 2
            assert launcher.poll() is None and time.monotonic() < deadline, launcher.communicate()
            time.sleep(0.02)
        victim = _rank_pid(launcher.pid, 1)
        assert victim is not None
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        out, err = launcher.communicate(timeout=60)
        stopped_after = time.monotonic() - killed
    finally:
        if launcher.poll() is None:
            launcher.kill()

    assert launcher.returncode == 2, out + err
    assert "Traceback" not in out + err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1].startswith("error: rank 1 of 2 was killed by SIGKILL"), err
    assert sum(line.startswith("error:") for line in lines) == 1, err
    assert "the other process was stopped" in lines[-1] and "--resume" in lines[-1]
    assert stopped_after < STOP_GRACE_S + 5, f"the launcher took {stopped_after:.1f} s to stop rank 0"
    epoch_saved = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])["epoch"]
    assert 1 <= epoch_saved < EPOCHS, "the kill came after the run had finished"

    resumed = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    expected, got = load_file(single.run_dir / "last.safetensors"), load_file(run_dir / "last.safetensors")
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], atol=1e-5, rtol=1e-4, msg=key)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == list(range(1, EPOCHS + 1))
    for mine, theirs in zip(single.history, rows, strict=True):
        assert abs(mine["train_loss"] - theirs["train_loss"]) < 1e-5
        assert mine["val_top1"] == theirs["val_top1"]
