"""SIGKILL a training run at random moments, resume it each time: the result equals an uninterrupted run."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

FINAL_NAMES = {
    "best.safetensors",
    "last.safetensors",
    "resume.safetensors",
    "config.json",
    "metrics.jsonl",
    "curves.png",
    "summary.json",  # written (atomically) as the run ends: a kill can land between it and the exit
}


def _command(overrides: dict[str, Any], resume: bool, force: bool = False) -> list[str]:
    args = [arg for key, value in overrides.items() for arg in ("--set", f"{key}={json.dumps(value)}")]
    again = ["--resume"] if resume else ["--force"] if force else []
    return [sys.executable, "-m", "vitc.cli.main", "train", "-q", *again, *args]


def test_sigkill_at_random_moments_then_resume(tiny: dict[str, Any]) -> None:
    tiny |= {"optim.epochs": 6, "aug.crop_scale": [0.5, 1.0], "model.drop_path_rate": 0.1}
    reference = {**tiny, "run.name": "straight"}
    subprocess.run(_command(reference, resume=False), check=True, capture_output=True, timeout=300)
    run_dir = Path(tiny["run.out_dir"]) / "tiny"

    rng = random.Random(7)
    kills = 0
    for _ in range(30):  # kill until it finishes on its own (bounded)
        resume = (run_dir / "resume.safetensors").exists()
        # killed between the first epoch's checkpoints and its resume state: nothing to resume, --force starts over
        force = not resume and any((run_dir / name).exists() for name in ("best.safetensors", "last.safetensors"))
        proc = subprocess.Popen(_command(tiny, resume, force), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            proc.wait(timeout=rng.uniform(2.0, 6.0) if kills < 4 else 300)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            kills += 1
            for path in run_dir.glob("*"):  # never a half-written file under a final name
                assert path.name in FINAL_NAMES or path.name.endswith(".tmp"), path.name
            time.sleep(0.1)
            continue
        assert proc.returncode == 0, proc.stderr.read().decode() if proc.stderr else ""
        break
    assert kills >= 1, "the run finished before it could be killed: lengthen it"
    straight = Path(tiny["run.out_dir"]) / "straight"
    assert (run_dir / "metrics.jsonl").read_text() == (straight / "metrics.jsonl").read_text()
    expected, got = load_file(straight / "last.safetensors"), load_file(run_dir / "last.safetensors")
    assert all(torch.equal(expected[k], got[k]) for k in expected) and expected.keys() == got.keys()
