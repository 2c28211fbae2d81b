"""Errors under a real torchrun launch (2 processes on this machine): an error every process raises alike is one line
in the terminal, said by local rank 0, where each process printed it (4 or 8 identical lines, then torchrun's
summary); a process's own crash still shows its traceback; torchrun's summary shows the line."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

from tests import processes
from vitc.errors import VitcError
from vitc.train.agree import PEER_ENDED, TRACEBACK_ELSEWHERE, prints_shared_errors
from vitc.train.distributed import process_info
from vitc.train.launcher import launch
from vitc.train.peers import collective_failed

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 120
# what torchrun sets in each of 2 processes on one machine
TORCHRUN_ENV = {"WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}
TORCHRUN_ENV |= {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}
# `torchrun … CRASH train`: the CLI, with a bug in local rank 1's start (inside the processes' start agreement)
CRASH = """
import os, sys
from vitc.cli import train as train_cli
from vitc.cli.main import main

def broken_check(nproc):
    raise RuntimeError("a bug in rank 1")

if os.environ["LOCAL_RANK"] == "1":
    train_cli._check_nproc = broken_check
sys.argv[0] = "vitc"
main()
"""

# `torchrun … SIGNALLED.format(…) train`: the CLI, whose processes of `ranks` each send themselves `signal` as
# vitc.train.`module`'s `name` is called, where `when` (of its arguments) holds
SIGNALLED = """
import os, signal, sys
from vitc.train import {module}
from vitc.cli.main import main

def signalled(*args, wrapped={module}.{name}, **kwargs):
    if {when}:
        os.kill(os.getpid(), signal.{signal})
    return wrapped(*args, **kwargs)

if os.environ["RANK"] in {ranks!r}:
    {module}.{name} = signalled
sys.argv[0] = "vitc"
main()
"""
# rank 1 killed (as the out-of-memory killer kills) as training begins
DIES = SIGNALLED.format(module="loop", name="_train_epoch", when=True, signal="SIGKILL", ranks=["1"])
# every process interrupted (Ctrl-C) as its second epoch begins
STOPPED = SIGNALLED.format(module="loop", name="_train_epoch", when="args[1] == 1", signal="SIGINT", ranks=["0", "1"])
# a few seconds' run on the bundled digits
TINY_DIGITS = [
    "-m",
    "deit_micro",
    "--data",
    "digits",
    "--epochs",
    "1",
    "-b",
    "32",
    "-q",
    "--set",
    "data.image_size=16",
    "--set",
    "data.fraction=0.2",
]
TINY_DIGITS += ["--set", 'model.args={"depth": 1, "embed_dim": 32, "num_heads": 2}']


def _torchrun(tmp_path: Path, *args: str) -> tuple[int, str, dict[int, int]]:
    """`torchrun --standalone --nproc-per-node 2 ARGS` in tmp_path: its exit code, everything it and its processes
    said (stdout and stderr together, as one terminal shows them), and each rank's exit code from its summary."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200", "OMP_NUM_THREADS": "1"}
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "VITC_NPROC", "TORCHELASTIC_ERROR_FILE"):
        env.pop(name, None)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *args]
    done = processes.run(command, TIMEOUT_S, cwd=tmp_path, env=env)
    said = done.stdout + done.stderr
    entries = re.findall(r"^  rank      : (\d+) .*\n  exitcode  : (-?\d+) ", said, re.MULTILINE)
    codes = {int(rank): int(code) for rank, code in entries}
    assert codes, said  # torch 2.4 lists the first failure alone ("<NO_OTHER_FAILURES>"), 2.13 each one
    return done.returncode, said, codes


def _error_lines(said: str) -> list[str]:
    return [line for line in said.splitlines() if line.startswith("error:")]


def test_an_agreed_error_is_one_line(tmp_path: Path) -> None:
    """Each of torchrun's processes printed the processes' agreed line: one per process, 8 on an 8-GPU machine."""
    code, said, codes = _torchrun(tmp_path, "-m", "vitc.cli.main", "train", "--set", "optim.lr=abc")
    lines = _error_lines(said)
    assert len(lines) == 1 and lines[0].startswith("error: config key optim.lr expects float"), said
    assert code != 0 and set(codes.values()) == {2}, said  # the silent process exits with the same code
    assert said.count("Traceback (most recent call last)") == 1, said  # torchrun's own, before its summary
    assert said.count(f"traceback : {lines[0]}") == len(codes), said  # torchrun's summary names it for each


def test_an_error_in_the_command_line_is_one_line(tmp_path: Path) -> None:
    """Before any agreement, the command line every process is given fails alike in each."""
    code, said, codes = _torchrun(tmp_path, "-m", "vitc.cli.main", "train", "--epochs", "abc")
    lines = _error_lines(said)
    assert len(lines) == 1 and lines[0].startswith("error: Invalid value for '--epochs'"), said
    # local rank 1 is silent (2), unless it had not read its command line when torchrun stopped it (SIGTERM, -15):
    # torchrun stops the others once one process has failed, and nothing keeps them in step before the agreement
    assert code != 0 and codes.get(0, 2) == 2 and codes.get(1, 2) in (2, -15), said
    assert said.split("Root Cause")[1].count(f"traceback : {lines[0]}") == 1, said


def test_a_crash_in_one_process_still_shows_its_traceback(tmp_path: Path) -> None:
    """Local rank 1's bug: it prints its traceback, which the agreed line (local rank 0's) points to."""
    (tmp_path / "crash.py").write_text(CRASH)
    code, said, codes = _torchrun(tmp_path, "crash.py", "train")
    # rank 0 says its line (one write) while rank 1 may still be writing its traceback, line by line, to the same
    # terminal: the line can begin within one of rank 1's (a CI run: after a traceback line's indentation)
    lines = re.findall(r"(?<!traceback : )error: .*", said)  # not torchrun's summary, which names it
    assert len(lines) == 1, said
    assert lines[0].startswith("error: rank 1 of 2 ("), lines
    assert f"failed: RuntimeError: a bug in rank 1 ({TRACEBACK_ELSEWHERE})" in lines[0], lines
    assert said.count("Traceback (most recent call last)") == 2, said  # rank 1's, then torchrun's own
    assert 'raise RuntimeError("a bug in rank 1")' in said, said
    assert re.search(r"^RuntimeError: a bug in rank 1$", said, re.MULTILINE), said  # the end of rank 1's traceback
    # each exits on its own, rank 1 with 1 and rank 0 with 2 once it has said the line, unless torchrun, which stops
    # the others once one has failed, stopped it first (SIGTERM: -15): rank 0 if rank 1 ended first, else rank 1
    # while it was still ending, after its traceback (a loaded CI machine)
    assert code != 0 and (codes.get(1, 1), codes.get(0, 2)) in ((1, 2), (1, -15), (-15, 2)), said


@pytest.mark.parametrize(
    ("script", "killed", "said"),
    [
        (DIES, 1, "during training (its output says why), before the run saved a resume state: start it again"),
        # rank 0 gone in the second epoch: rank 1, whose history is empty (rank 0's alone), said "start it again"
        (
            SIGNALLED.format(module="loop", name="_train_epoch", when="args[1] == 1", signal="SIGKILL", ranks=["0"]),
            0,
            "during training (its output says why); continue from the last saved epoch with: {resume}",
        ),
        # the DDP wrap's collective, before the first step: torch's 56-line traceback
        (
            SIGNALLED.format(module="setup", name="DistributedDataParallel", when=True, signal="SIGKILL", ranks=["1"]),
            1,
            "as the run started (its output says why), before the run saved a resume state: start it again",
        ),
        # the final test's broadcast of the best weights: torch's 63-line traceback
        (
            SIGNALLED.format(module="loop", name="_finish", when=True, signal="SIGKILL", ranks=["1"]),
            1,
            "during the final test, after training (its output says why): {run}'s checkpoints are complete; its test "
            "score and summary.json follow from: {resume}",
        ),
    ],
)
def test_a_process_whose_peer_ended_says_one_line(script: str, killed: int, said: str, tmp_path: Path) -> None:
    """The survivor's collective fails as the other process is killed: it printed gloo's "Connection reset by peer"
    in a 68-line traceback that buried the line saying why. torchrun looks at its processes every 3 s here, so that
    the survivor meets the closed connection before torchrun stops it."""
    (tmp_path / "killed.py").write_text(script)
    run = tmp_path / "x"
    args = ["--monitor-interval", "3", "killed.py", "train", *TINY_DIGITS, "--epochs", "2"]
    code, output, codes = _torchrun(tmp_path, *args, "--set", f"run.out_dir={tmp_path}", "--name", "x")
    lines = re.findall(r"(?<!traceback : )error: .*", output)  # not torchrun's summary, which names it
    resume = f"torchrun --nproc_per_node 2 -m vitc.cli.main train --resume {run}"
    assert lines == [f"error: {PEER_ENDED} {said.format(run=run, resume=resume)}"], output
    assert (run / "resume.safetensors").exists() == ("{resume}" in said)  # offered only where it was saved
    assert output.count("Traceback (most recent call last)") == 1, output  # torchrun's own, before its summary
    # the survivor exits with 2 once it has said the line, unless torchrun's SIGTERM comes as it exits (-15)
    assert code != 0 and codes.get(killed) == -9 and codes.get(1 - killed) in (2, -15), output


def test_a_sigterm_outside_the_epochs_is_one_line(tmp_path: Path) -> None:
    """SIGTERM to every process in setup (torchrun stopping its workers as one ended, Slurm's preemption): each
    printed `error: stopped by SIGTERM`, as the epochs' stop line is printed once per machine."""
    script = SIGNALLED.format(
        module="setup", name="DistributedDataParallel", when=True, signal="SIGTERM", ranks=["0", "1"]
    )
    (tmp_path / "stopped.py").write_text(script)
    args = ["stopped.py", "train", *TINY_DIGITS, "--set", f"run.out_dir={tmp_path}", "--name", "x"]
    code, said, codes = _torchrun(tmp_path, *args)
    assert re.findall(r"(?<!traceback : )error: .*", said) == ["error: stopped by SIGTERM"], said
    assert code != 0 and set(codes.values()) <= {143, -15}, said  # the silent one exits with the same code


def test_a_stop_every_process_says_is_one_line(tmp_path: Path) -> None:
    """Ctrl-C reaches every process: each printed `interrupted; continue with: …`, 8 lines on an 8-GPU machine."""
    (tmp_path / "stopped.py").write_text(STOPPED)
    args = ["stopped.py", "train", *TINY_DIGITS, "--epochs", "2", "--set", f"run.out_dir={tmp_path}", "--name", "x"]
    code, said, codes = _torchrun(tmp_path, *args)
    lines = re.findall(r"(?<!traceback : )error: .*", said)
    resume = f"torchrun --nproc_per_node 2 -m vitc.cli.main train --resume {tmp_path / 'x'}"
    assert lines == [f"error: interrupted; continue with: {resume}"], said
    assert said.count("Traceback (most recent call last)") == 1, said  # torchrun's own, before its summary
    assert code != 0 and set(codes.values()) <= {130, -15}, said  # the silent one exits with the same code
    assert (tmp_path / "x" / "resume.safetensors").is_file()


@pytest.mark.parametrize(
    ("rank1", "said"),
    [
        ('echo "error: cannot read image c1/3.png" >&2; exit 2', "cannot read image c1/3.png"),
        ('echo "RuntimeError: a bug" >&2; exit 1', "rank 1 of 2 exited with code 1; the other process was stopped"),
    ],
)
def test_the_launcher_reports_the_process_that_ended_first(
    rank1: str, said: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`vitc train --nproc 2`: rank 0's line that another process ended (exit 2, as a rank's own error) is not the
    cause the launcher reports; rank 1's line, or its exit, is."""
    python = tmp_path / "python"  # a stand-in interpreter for every rank
    rank0 = f'echo "error: {PEER_ENDED} during training (its output says why)" >&2; exit 2'
    python.write_text(f'#!/bin/sh\nsleep 0.1\nif [ "$RANK" = 1 ]; then {rank1}; fi\nsleep 0.05; {rank0}\n')
    python.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(python))
    with pytest.raises(VitcError) as stopped:
        launch(["train"], nproc=2, poll_s=0.5)  # none has ended by the first look, both by the second
    assert str(stopped.value).startswith(said), stopped.value


@pytest.mark.parametrize(
    ("env", "prints"),
    [
        ({}, True),  # one process
        ({"WORLD_SIZE": "4", "LOCAL_RANK": "0"}, True),  # torchrun's first process on a machine
        ({"WORLD_SIZE": "4", "LOCAL_RANK": "3"}, False),
        (
            {"WORLD_SIZE": "4", "LOCAL_RANK": "3", "VITC_NPROC": "4"},
            True,
        ),  # `vitc train --nproc`: the launcher reads it
    ],
)
def test_who_prints_an_error_every_process_raises(
    env: dict[str, str], prints: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in (*TORCHRUN_ENV, "VITC_NPROC"):
        monkeypatch.delenv(name, raising=False)
    for name, value in ({**TORCHRUN_ENV, "LOCAL_WORLD_SIZE": "4", "RANK": "3"} if env else {}).items():
        monkeypatch.setenv(name, value)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert prints_shared_errors() is prints


@pytest.mark.parametrize(
    ("env", "said"),
    [
        ({"WORLD_SIZE": "2"}, "environment variable RANK is not set, but WORLD_SIZE=2 makes this one of 2 processes"),
        ({"WORLD_SIZE": "abc"}, "environment variable WORLD_SIZE='abc' is not a whole number of at least 1"),
        ({"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}, "environment variable MASTER_ADDR is not set"),
        ({**TORCHRUN_ENV, "RANK": "-1"}, "environment variable RANK='-1' is not a whole number of at least 0"),
        ({**TORCHRUN_ENV, "LOCAL_RANK": "2"}, "environment variable LOCAL_RANK=2 is not below LOCAL_WORLD_SIZE=2"),
        ({**TORCHRUN_ENV, "MASTER_PORT": "http"}, "environment variable MASTER_PORT='http' is not a whole number"),
        # int() read these as 2, 1, 0 and 2: torchrun writes plain digits
        (
            {**TORCHRUN_ENV, "WORLD_SIZE": "+2"},
            "environment variable WORLD_SIZE='+2' is not a whole number of at least 1",
        ),
        ({**TORCHRUN_ENV, "RANK": " 1"}, "environment variable RANK=' 1' is not a whole number of at least 0"),
        ({**TORCHRUN_ENV, "LOCAL_RANK": "0_0"}, "environment variable LOCAL_RANK='0_0' is not a whole number"),
        (
            {**TORCHRUN_ENV, "LOCAL_WORLD_SIZE": "\u0662"},
            "environment variable LOCAL_WORLD_SIZE='\u0662' is not a whole",
        ),
    ],
)
def test_odd_distributed_variables_are_one_line(
    env: dict[str, str], said: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A KeyError or a ValueError traceback before, or a line that blamed another process (no MASTER_ADDR)."""
    for name in (*TORCHRUN_ENV, "VITC_NPROC"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(VitcError, match=re.escape(said)):
        process_info("cpu")
    assert prints_shared_errors()  # its line is printed, by every process (each has its own environment)


def test_a_rank_beyond_the_world_is_refused_before_the_rendezvous(tmp_path: Path) -> None:
    """RANK=5 of 2 waited in torch's store connection without end, deaf to SIGTERM and Ctrl-C."""
    env = {**os.environ, **TORCHRUN_ENV, "RANK": "5", "MASTER_PORT": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "vitc.cli.main", "train", "--set", f"run.out_dir={tmp_path}", "-q"]
    done = processes.run(cmd, 60, cwd=tmp_path, env=env)
    said = "error: environment variable RANK=5 is not below WORLD_SIZE=2: ranks count from 0\n"
    assert (done.returncode, done.stderr) == (2, said), done.stdout + done.stderr


@pytest.mark.parametrize(
    ("error", "peer"),
    [
        (RuntimeError("[../gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:19634."), True),
        (
            RuntimeError("[../gloo/transport/tcp/pair.cc:537] Read error [127.0.0.1]:23268: Connection reset by peer"),
            True,
        ),
        ("DistBackendError", True),  # nccl's, by type
        (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), False),  # this process's own
        (RuntimeError("mat1 and mat2 shapes cannot be multiplied"), False),  # a bug: its traceback
    ],
)
def test_which_failures_are_a_peer_that_ended(error: object, peer: bool) -> None:
    import torch.distributed as dist

    if error == "DistBackendError":
        error = dist.DistBackendError("NCCL communicator was aborted on rank 0")
    assert collective_failed(error) is peer  # type: ignore[arg-type]


def test_the_resume_command_is_torchruns_for_this_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """It said `the same torchrun launch of vitc train --resume RUN`: nothing to run or copy."""
    from vitc.train.config import load_config
    from vitc.train.run_folder import resume_command

    cfg = load_config(None, {"run.name": "x", "run.out_dir": "runs"})
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    monkeypatch.setenv("GROUP_RANK", "1")
    assert (
        resume_command(cfg, 4, by_nproc=False) == "torchrun --nproc_per_node 4 -m vitc.cli.main train --resume runs/x"
    )
    assert resume_command(cfg, 8, by_nproc=False) == (
        "torchrun --nnodes 2 --nproc_per_node 4 --node_rank 1 <the rendezvous options this launch was given> "
        "-m vitc.cli.main train --resume runs/x"
    )
