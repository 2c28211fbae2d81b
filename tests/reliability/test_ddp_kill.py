"""The campaign's DDP cases (gloo on CPU): one of two training processes SIGKILLed mid-run, and Ctrl-C
within an epoch.

After the kill the launcher must stop the other process within seconds (it would otherwise wait in a
collective for gloo's 30-minute timeout), say in one line which rank died and how, and `--resume` must
continue to the same weights as an uninterrupted run. After Ctrl-C, `--resume` must replay every rank's
random draws. Few tests: a DDP launch costs tens of seconds on 2 cores.
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

from tests import processes
from tests.train.conftest import TINY
from tests.train.test_distributed import _set_args
from vitc._io import read_safetensors_metadata
from vitc.artifacts.resume import RESUME_KEY
from vitc.train.config import load_config
from vitc.train.launcher import STOP_GRACE_S
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
    launcher = processes.popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with processes.killed_on_exit(launcher):  # with its ranks
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

    assert launcher.returncode == 2, out + err
    assert "Traceback" not in out + err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1].startswith("error: rank 1 of 2 was killed by SIGKILL"), err
    assert sum(line.startswith("error:") for line in lines) == 1, err
    assert "the other process was stopped" in lines[-1] and "--resume" in lines[-1]
    assert stopped_after < STOP_GRACE_S + 5, f"the launcher took {stopped_after:.1f} s to stop rank 0"
    epoch_saved = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])["epoch"]
    assert 1 <= epoch_saved < EPOCHS, "the kill came after the run had finished"

    resumed = processes.run([*cmd, "--resume"], timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    expected, got = load_file(single.run_dir / "last.safetensors"), load_file(run_dir / "last.safetensors")
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], atol=1e-5, rtol=1e-4, msg=key)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == list(range(1, EPOCHS + 1))
    for mine, theirs in zip(single.history, rows, strict=True):
        assert abs(mine["train_loss"] - theirs["train_loss"]) < 1e-5
        assert mine["val_top1"] == theirs["val_top1"]


# Imported by every process of the interrupted launch (a sitecustomize.py on PYTHONPATH): Ctrl-C as a
# terminal sends it, to the launcher and every rank at once (or, $STOP_BY=sigterm, SIGTERM to the launcher,
# which sends it on to the ranks), when rank 0 asks for batch number $CTRL_C_AT,
# or ($CTRL_C_AT "sums") when rank 1's all-reduce of the epoch's train loss sums has just returned,
# or ($CTRL_C_AT "read") as rank 1 has read its session's first step loss back, before adding it to its sums.
_CTRL_C_AT_A_STEP = """
import os
import signal
import time
if os.environ.get("RANK") == "0" and os.environ["CTRL_C_AT"] not in ("sums", "read"):
    from vitc.data.prefetch import Prefetcher
    calls, next_batch = [0], Prefetcher.__next__
    def interrupting(self):
        calls[0] += 1
        if calls[0] == int(os.environ["CTRL_C_AT"]):
            time.sleep(float(os.environ["CTRL_C_AFTER"]))  # rank 1 meanwhile waits in the gradient all-reduce
            if os.environ.get("STOP_BY") == "sigterm":  # Slurm, timeout: the launcher SIGTERMs the ranks
                os.kill(os.getppid(), signal.SIGTERM)
            else:
                os.killpg(0, signal.SIGINT)  # the launcher's process group: itself and the ranks
            time.sleep(60)  # rank 0's KeyboardInterrupt is raised here, before its step's draws
        return next_batch(self)
    Prefetcher.__next__ = interrupting
if os.environ.get("RANK") == "1" and os.environ["CTRL_C_AT"] == "sums":
    import torch
    import torch.distributed
    all_reduce = torch.distributed.all_reduce
    def interrupting(tensor, *args, **kwargs):
        done = all_reduce(tensor, *args, **kwargs)
        if tensor.dtype == torch.float64 and tensor.numel() == 2:  # the epoch's loss and count, summed
            time.sleep(1.0)  # rank 0 goes on to validation with them; rank 1 has not stored them yet
            os.killpg(0, signal.SIGINT)
        return done
    torch.distributed.all_reduce = interrupting
if os.environ.get("RANK") == "1" and os.environ["CTRL_C_AT"] == "read":
    from vitc.train.meter import StepMeter
    read, sent = StepMeter.read, []
    def interrupting(self):
        steps = read(self)
        if self.steps == 1 and not sent:  # the session's first step, read back and not yet added up
            sent.append(True)  # once: the stopped run's own last read comes here too
            os.killpg(0, signal.SIGINT)
            time.sleep(1.0)  # the KeyboardInterrupt comes here, unless the step's record holds it
        return steps
    StepMeter.read = interrupting
"""


def _ctrl_c_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a launch whose processes import _CTRL_C_AT_A_STEP (CTRL_C_AT set per launch)."""
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(_CTRL_C_AT_A_STEP)
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(hooks), *filter(None, [os.environ.get("PYTHONPATH")])])}


@pytest.mark.slow
def test_ctrl_c_within_an_epoch_then_resume_replays_every_rank(tmp_path: Path) -> None:
    """Random crops and their filters, flips and drop-path, which each rank draws from its own streams: Ctrl-C
    within epoch 2, twice within epoch 3 of the resumed runs and at its end, each time followed by `--resume`, ends
    as the uninterrupted run. The resume file kept rank 0's streams and running loss sums only: rank 1 drew fresh
    streams from that step, and the epoch's train loss lost rank 1's steps before it. The first Ctrl-C
    comes as rank 0 starts a step (rank 1 may still be finishing the one before), the second while rank 1
    waits for rank 0 in the step's gradient all-reduce (which fails once rank 0 has saved and gone), the third
    as rank 1 has read a step's loss back but not added it to its sums (it lost that step's loss: the 3-process
    test below failed so, once in six runs beside another worker)."""
    tiny = {**TINY, "aug.crop_scale": [0.5, 1.0], "aug.train_interpolation": "random", "aug.flip": True}
    tiny["model.drop_path_rate"] = 0.2
    tiny["run.out_dir"] = str(tmp_path / "runs")
    launch = [sys.executable, "-m", "vitc.cli.main", "train", "--nproc", "2", "-q"]
    straight = processes.run([*launch, *_set_args({**tiny, "run.name": "straight"})], timeout=300)
    assert straight.returncode == 0, straight.stdout + straight.stderr

    env = _ctrl_c_env(tmp_path)
    cmd = [*launch, *_set_args({**tiny, "run.name": "ddp"})]
    run_dir = Path(tiny["run.out_dir"]) / "ddp"
    # 3 steps an epoch: batch 5 of the first session is epoch 2's second step; batch 4 of the resumed one
    # (which starts there) is epoch 3's second, which the next session starts with again (and rank 1 reads its
    # loss back); then as epoch 3's train loss is summed over the processes, whose end the last resume runs
    # again (rank 1, interrupted just after the sum returned, saved its own sums, which rank 0's summed ones
    # already held: the resumed train loss counted them twice)
    cuts = ((False, 5, 0.0, (1, 1)), (True, 4, 3.0, (2, 1)), (True, "read", 0.0, (2, 2)), (True, "sums", 0.0, (2, 3)))
    for resume, at, after, (epoch, step) in cuts:
        cut = processes.run(  # in a session of its own: the test's process group is not the one Ctrl-C goes to
            [*cmd, *(["--resume"] if resume else [])],
            env={**env, "CTRL_C_AT": str(at), "CTRL_C_AFTER": str(after)},
            timeout=300,
        )
        assert cut.returncode == 130, cut.stdout + cut.stderr
        said = cut.stderr.strip().splitlines()[-1]
        assert said.startswith("error: interrupted; continue with: vitc train --resume") and said.endswith("--nproc 2")
        saved = json.loads(read_safetensors_metadata(run_dir / "resume.safetensors")[RESUME_KEY])["state"]
        assert (saved["epoch"], saved["step_in_epoch"]) == (epoch, step)

    resumed = processes.run([*cmd, "--resume"], timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "warning" not in resumed.stdout + resumed.stderr
    reference = Path(tiny["run.out_dir"]) / "straight"
    assert (run_dir / "metrics.jsonl").read_text() == (reference / "metrics.jsonl").read_text()
    expected, got = load_file(reference / "last.safetensors"), load_file(run_dir / "last.safetensors")
    assert expected.keys() == got.keys()
    assert max(float((expected[k] - got[k]).abs().max()) for k in expected) <= 1e-6
    assert not list(run_dir.glob("resume.rank*")), "the other processes' parts go once an epoch has ended"


@pytest.mark.slow
def test_three_processes_resume_summing_in_the_uninterrupted_order(tmp_path: Path) -> None:
    """Over 3 processes a ring all-reduce adds each gradient's 3 values in an order set by its place in DDP's
    bucket, which DDP lays out anew after its first backward: a resumed session's first step, on the first
    layout, summed otherwise than the uninterrupted run's (a+b+c against c+a+b; over 2 processes a+b = b+a).
    Every session's buckets now come from the same stand-in backward. Before, with aug.repeats=3 and Ctrl-C
    within epoch 2, the weights ended 5e-7 apart and the train losses differed in their last digits."""
    tiny = {**TINY, "optim.batch_size": 33, "aug.repeats": 3, "aug.crop_scale": [0.5, 1.0], "aug.flip": True}
    tiny |= {"model.drop_path_rate": 0.2, "run.out_dir": str(tmp_path / "runs")}
    launch = [sys.executable, "-m", "vitc.cli.main", "train", "--nproc", "3", "-q"]
    straight = processes.run([*launch, *_set_args({**tiny, "run.name": "straight"})], timeout=300)
    assert straight.returncode == 0, straight.stdout + straight.stderr

    env = _ctrl_c_env(tmp_path)
    cmd = [*launch, *_set_args({**tiny, "run.name": "ddp"})]
    cut = processes.run(cmd, env={**env, "CTRL_C_AT": "5", "CTRL_C_AFTER": "0"}, timeout=300)  # epoch 2's 2nd step
    assert cut.returncode == 130, cut.stdout + cut.stderr
    resumed = processes.run([*cmd, "--resume"], timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "Warning" not in straight.stderr + resumed.stderr  # DDP's on a stand-in's strided class-token gradient

    run_dir, reference = Path(tiny["run.out_dir"]) / "ddp", Path(tiny["run.out_dir"]) / "straight"
    assert (run_dir / "metrics.jsonl").read_text() == (reference / "metrics.jsonl").read_text()
    expected, got = load_file(reference / "last.safetensors"), load_file(run_dir / "last.safetensors")
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected)


@pytest.mark.slow
def test_sigterm_to_the_launcher_saves_every_ranks_step(tmp_path: Path) -> None:
    """SIGTERM to `vitc train --nproc 2` (Slurm's preemption, `timeout`) within an epoch: the launcher SIGTERMs
    its ranks, which save where they stand as after Ctrl-C, rank 1 its own streams beside rank 0's state at
    the same step, and --resume goes on from there with every rank's streams. The ranks died of the SIGTERM,
    saving nothing past the last epoch's end."""
    tiny = {**TINY, "aug.crop_scale": [0.5, 1.0], "aug.flip": True, "model.drop_path_rate": 0.2}
    tiny |= {"run.out_dir": str(tmp_path / "runs"), "run.name": "ddp"}
    cmd = [sys.executable, "-m", "vitc.cli.main", "train", "--nproc", "2", "-q", *_set_args(tiny)]
    run_dir = Path(tiny["run.out_dir"]) / "ddp"
    env = {**_ctrl_c_env(tmp_path), "CTRL_C_AT": "5", "CTRL_C_AFTER": "0", "STOP_BY": "sigterm"}
    cut = processes.run(cmd, env=env, timeout=300)  # batch 5: epoch 2, step 2
    assert cut.returncode == 143, cut.stdout + cut.stderr
    said = cut.stderr.strip().splitlines()[-1]
    assert said.startswith("error: stopped by SIGTERM: the 2 processes were stopped; continue with: vitc train")
    saved = json.loads(read_safetensors_metadata(run_dir / "resume.safetensors")[RESUME_KEY])["state"]
    assert (saved["epoch"], saved["step_in_epoch"]) == (1, 1)
    assert (run_dir / "resume.rank1.safetensors").is_file()

    resumed = processes.run([*cmd, "--resume"], timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "warning" not in resumed.stdout + resumed.stderr  # rank 1 had its streams saved at rank 0's step
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2, 3]
