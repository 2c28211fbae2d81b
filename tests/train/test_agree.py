"""Two machines of a torchrun launch, simulated: two processes, each in its own folder with its own copy of the
data (no shared file system), as torchrun's `--nnodes 2 --node_rank N` starts them. A process that fails or
was started otherwise stops both within seconds, with the same one line (vitc.train.agree); before, the other
waited for torch's 30-minute timeout, or both trained on, silently wrong."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests import processes
from tests.train.test_distributed import _set_args, _two_colour_photos
from tests.train.test_finished_resume import snapshot
from vitc.train.config import load_config

TIMEOUT_S = 120  # a process still waiting then is the hang this guards against: both are stopped, the test fails
SETTINGS = {"model.name": "deit_micro", "model.args": {"depth": 1, "embed_dim": 32, "num_heads": 2},
            "data.name": "imagefolder", "data.dir": "photos", "data.image_size": 16, "optim.batch_size": 4,
            "optim.epochs": 1, "optim.lr": 1e-3, "run.amp": "off", "run.out_dir": "runs",
            "run.name": "ddp"}  # fmt: skip


def _two_machines(tmp_path: Path, args: list[list[str]]) -> tuple[list[subprocess.CompletedProcess[str]], float]:
    """`vitc train ARGS[n]` as rank n of 2, one per simulated machine (folder tmp_path/machine<n>); the results
    and the seconds until both had ended."""
    base = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "WORLD_SIZE": "2"}
    base |= {"LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1", "OMP_NUM_THREADS": "1"}
    started = time.monotonic()
    done = _ranks(
        [[sys.executable, "-m", "vitc.cli.main", "train", "-q", *args[rank]] for rank in range(2)],
        [{**base, "RANK": str(rank), "GROUP_RANK": str(rank), "TORCHELASTIC_RUN_ID": "test"} for rank in range(2)],
        [tmp_path / f"machine{rank}" for rank in range(2)],
    )
    return done, time.monotonic() - started


def _ranks(
    cmds: list[list[str]], envs: list[dict[str, str]], cwds: list[Path]
) -> list[subprocess.CompletedProcess[str]]:
    """Each command as one process, run together; stopped, with every process of theirs, if one hangs."""
    procs = [
        processes.popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for cmd, env, cwd in zip(cmds, envs, cwds, strict=True)
    ]
    with processes.killed_on_exit(*procs):
        outputs = [proc.communicate(timeout=TIMEOUT_S) for proc in procs]
    return [subprocess.CompletedProcess(p.args, p.returncode, *said) for p, said in zip(procs, outputs, strict=True)]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _library_script(tmp_path: Path, script: str, port: int, env: dict[str, str]) -> list[str]:
    """`python -c SCRIPT SETTINGS` as the 2 processes of one machine (torch's env:// variables and `env`), on
    the digits; each one's stdout, once both ended with 0."""
    base = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2"}
    base |= {"LOCAL_WORLD_SIZE": "2", "OMP_NUM_THREADS": "1", **env}
    settings = {**SETTINGS, "data.name": "digits", "data.fraction": 0.1, "data.image_size": 16}
    settings.pop("data.dir")
    done = _ranks(
        [[sys.executable, "-c", script, json.dumps(settings)]] * 2,
        [{**base, "RANK": str(rank), "LOCAL_RANK": str(rank)} for rank in range(2)],
        [tmp_path] * 2,
    )
    assert [proc.returncode for proc in done] == [0, 0], [(proc.stdout, proc.stderr) for proc in done]
    return [proc.stdout for proc in done]


def _machines(tmp_path: Path, classes: tuple[str, str] = ("c0", "c1")) -> None:
    """Each machine's own copy of the photos; machine 1's second class folder named `classes[1]`."""
    for machine in ("machine0", "machine1"):
        _two_colour_photos(tmp_path / machine / "photos", {"train": 4, "val": 1}, (16, 16))
    if classes[1] != "c1":
        for split in ("train", "val"):
            (tmp_path / "machine1" / "photos" / split / "c1").rename(
                tmp_path / "machine1" / "photos" / split / classes[1]
            )


def _one_line(done: list[subprocess.CompletedProcess[str]]) -> str:
    """The error line every process ended with, the same in each: each exited 2, with no traceback."""
    lines = []
    for result in done:
        assert result.returncode == 2, result.stdout + result.stderr
        assert "Traceback" not in result.stderr, result.stderr
        said = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
        assert len(said) == 1, result.stderr
        lines.append(said[0])
    assert lines[0] == lines[1], lines
    return lines[0]


@pytest.mark.parametrize(
    ("setting", "classes", "expected"),
    [
        (
            ["--set", "optim.lr=5e-4"],
            ("c0", "c1"),
            "optim.lr is 0.001 in rank 0 (machine 0, {host}) but 0.0005 in rank 1",
        ),
        ([], ("c0", "z1"), 'classes is ["c0", "c1"] in rank 0 (machine 0, {host}) but ["c0", "z1"] in rank 1'),
    ],
    ids=["lr", "classes"],
)
def test_machines_started_differently_stop_together_in_one_line(
    tmp_path: Path, setting: list[str], classes: tuple[str, str], expected: str
) -> None:
    """Another learning rate on machine 1 trained on (only rank 0's weights were saved); class folders named
    otherwise permuted the labels on half the processes (val 41.67% where 100% was expected): both exit 0."""
    _machines(tmp_path, classes)
    done, seconds = _two_machines(tmp_path, [_set_args(SETTINGS), _set_args(SETTINGS) + setting])
    line = _one_line(done)
    assert line.startswith("error: the 2 processes were started differently: "), line
    assert expected.format(host=socket.gethostname()) in line, line
    assert "start every machine with the same recipe, settings and data" in line
    assert seconds < 90, seconds
    assert not (tmp_path / "machine0" / "runs" / "ddp").exists()  # nothing half-made is left


def _other_val_count(machine: Path) -> None:
    shutil.copy(machine / "photos" / "val" / "c1" / "0.png", machine / "photos" / "val" / "c1" / "1.png")


def _other_test_names(machine: Path) -> None:
    (machine / "photos" / "test" / "c1" / "0.png").rename(machine / "photos" / "test" / "c1" / "renamed.png")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (_other_val_count, "val images is 2 in rank 0 (machine 0, {host}) but 3 in rank 1 (machine 1, {host})"),
        (_other_test_names, "test file names (sha256 of the sorted list) is "),
    ],
    ids=["val-size", "test-names"],
)
def test_machines_with_other_val_or_test_images_stop_together_in_one_line(
    tmp_path: Path, change: Callable[[Path], None], expected: str
) -> None:
    """Each process scores its share of val and test: machine 1's other images were summed into the run's scores
    silently (the fingerprint covered the training set alone)."""
    for machine in ("machine0", "machine1"):
        _two_colour_photos(tmp_path / machine / "photos", {"train": 4, "val": 1, "test": 1}, (16, 16))
    change(tmp_path / "machine1")
    done, _ = _two_machines(tmp_path, [_set_args(SETTINGS)] * 2)
    line = _one_line(done)
    assert line.startswith("error: the 2 processes were started differently: "), line
    assert expected.format(host=socket.gethostname()) in line, line
    assert "start every machine with the same recipe, settings and data" in line
    assert not (tmp_path / "machine0" / "runs" / "ddp").exists()


def test_the_val_and_test_fingerprint_is_the_listing_alone(tmp_path: Path) -> None:
    """Names and counts, from the folders' listings: files that are no images at all are not opened."""
    from vitc.data.feed import eval_fingerprint

    data = load_config(None, {**SETTINGS, "data.dir": str(tmp_path / "one")}).data
    for copy in ("one", "two"):
        for split, names in (("train", ["a.png"]), ("val", ["b.png", "c.png"])):
            for name in names:
                (tmp_path / copy / split / "c0").mkdir(parents=True, exist_ok=True)
                (tmp_path / copy / split / "c0" / name).write_bytes(b"not an image")
    found = eval_fingerprint(data, None)
    assert found["val images"] == found["test images"] == 2 and found["test read from"] == "val/"
    assert eval_fingerprint(load_config(None, {**SETTINGS, "data.dir": str(tmp_path / "two")}).data, None) == found
    (tmp_path / "two" / "val" / "c0" / "c.png").rename(tmp_path / "two" / "val" / "c0" / "d.png")
    other = eval_fingerprint(load_config(None, {**SETTINGS, "data.dir": str(tmp_path / "two")}).data, None)
    names = "val file names (sha256 of the sorted list)"
    assert other["val images"] == 2 and other[names] != found[names]


def test_a_finished_run_is_left_as_it_is_by_every_machine_or_by_none(tmp_path: Path) -> None:
    """`--resume` of a run that has trained its epochs, as a requeue script runs it on every machine: each process
    leaves the run folder as it is and exits 0 (rank 0 says so), where the run was scored again. A machine whose
    copy is not finished (no summary.json) would train while the others left: all stop, in one line."""
    _machines(tmp_path)
    machine0 = tmp_path / "machine0"
    trained = processes.run(
        [sys.executable, "-m", "vitc.cli.main", "train", "-q", *_set_args(SETTINGS)], timeout=TIMEOUT_S, cwd=machine0
    )
    assert trained.returncode == 0, trained.stdout + trained.stderr
    shutil.copytree(machine0 / "runs", tmp_path / "machine1" / "runs")
    before = [snapshot(tmp_path / machine / "runs") for machine in ("machine0", "machine1")]
    done, seconds = _two_machines(tmp_path, [["runs/ddp", "--resume"], ["runs/ddp", "--resume"]])
    assert [result.returncode for result in done] == [0, 0], [result.stderr for result in done]
    assert done[0].stdout.startswith("run 'ddp' has finished its 1 epoch: val top-1 "), done[0].stdout
    resume = "torchrun --nnodes 2 --nproc_per_node 1 --node_rank 0 <the rendezvous options this launch was given> -m "
    assert f"(`{resume}vitc.cli.main train --resume runs/ddp --epochs N` with N > 1" in done[0].stdout
    assert done[1].stdout == "" and seconds < 90, (done[1].stdout, seconds)
    assert [snapshot(tmp_path / machine / "runs") for machine in ("machine0", "machine1")] == before
    (tmp_path / "machine1" / "runs" / "ddp" / "summary.json").unlink()  # as if it had stopped in its final test
    done, _ = _two_machines(tmp_path, [["runs/ddp", "--resume"], ["runs/ddp", "--resume"]])
    host = socket.gethostname()
    assert (
        f"epochs finished (summary.json) is 1 in rank 0 (machine 0, {host}) but null in rank 1 (machine 1, {host})"
    ) in _one_line(done)
    assert snapshot(tmp_path / "machine0" / "runs") == before[0]


def test_resume_on_a_machine_without_the_run_folder_says_so_on_every_machine(tmp_path: Path) -> None:
    """`--resume runs/ddp` where only machine 0 has the run folder: machine 1 said that runs/ddp was no recipe
    and exited, while machine 0 waited in init_process_group for 30 minutes."""
    _machines(tmp_path)
    folder = tmp_path / "machine0" / "runs" / "ddp"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(load_config(None, SETTINGS).to_dict()))
    done, seconds = _two_machines(tmp_path, [["runs/ddp", "--resume"], ["runs/ddp", "--resume"]])
    host = socket.gethostname()
    assert _one_line(done) == (
        f"error: rank 1 of 2 (machine 1, {host}): nothing to resume: runs/ddp does not exist; rank 0 (machine 0, "
        f"{host}) has the run: --resume of a run across machines needs run.out_dir on a file system every machine "
        "sees, or a copy of rank 0's run folder on each machine"
    )
    assert seconds < 90, seconds


def test_a_bad_set_on_one_machine_stops_every_machine(tmp_path: Path) -> None:
    """`--set` is read inside the start's agreement: a bad one on machine 1 ended machine 1 alone, before it, while
    machine 0 waited there for torch's 30-minute timeout."""
    _machines(tmp_path)
    done, seconds = _two_machines(tmp_path, [_set_args(SETTINGS), [*_set_args(SETTINGS), "--set", "optim.lr"]])
    assert _one_line(done) == (
        f"error: rank 1 of 2 (machine 1, {socket.gethostname()}): --set expects key=value, got 'optim.lr'"
    )
    assert seconds < 90, seconds


# `python -c OWN_GROUP OUT`: a library user's DDP script, which makes its process group itself, then trains
OWN_GROUP = """
import json, sys
import torch
import torch.distributed as dist
from vitc.train.config import load_config
from vitc.train.loop import train
from vitc.train.distributed import leave_process_group
dist.init_process_group("gloo")  # env://: rank 0's store holds MASTER_PORT
settings = json.loads(sys.argv[1])
result = train(load_config(None, settings), show_progress=False)
total = torch.ones(1)
dist.all_reduce(total)  # the group is still the user's
print(json.dumps({"total": total.item(), "epochs": len(result.history)}), flush=True)
leave_process_group()
"""


def test_a_library_users_own_process_group_is_used_and_left_to_them(tmp_path: Path) -> None:
    """Before, rank 0 rendezvoused anew on MASTER_PORT, which the user's store held, and vitc destroyed the user's
    process group after training."""
    outputs = _library_script(tmp_path, OWN_GROUP, _free_port(), {})
    said = [json.loads(out.splitlines()[-1]) for out in outputs]
    assert said == [{"total": 2.0, "epochs": 1}, {"total": 2.0, "epochs": 0}]  # the history is rank 0's


# `python -c TWICE SETTINGS`: a library user's script under torchrun that trains twice in one process
TWICE = """
import json, sys
from vitc.train.config import load_config
from vitc.train.loop import train
settings = json.loads(sys.argv[1])
for name in ("one", "two"):
    train(load_config(None, {**settings, "run.name": name}), show_progress=False)
print("trained twice", flush=True)
"""


def test_two_runs_in_one_process_under_torchruns_store(tmp_path: Path) -> None:
    """torchrun's agent holds the store, which outlives a process group: the second run's group found the first's
    addresses under the same keys and dialled its closed ports ('Gloo connectFullMesh failed … Connection
    refused', 6 launches in 9). Each group now has keys of its own."""
    import torch.distributed as dist

    store = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)  # the agent's, as torchrun's
    agent = {"TORCHELASTIC_USE_AGENT_STORE": "True", "TORCHELASTIC_RESTART_COUNT": "0"}  # torch 2.5 reads the count
    outputs = _library_script(tmp_path, TWICE, store.port, agent)
    assert [out.splitlines()[-1] for out in outputs] == ["trained twice"] * 2


def test_a_store_that_does_not_answer_leaves_the_line_to_this_process(monkeypatch) -> None:
    """The store's timeout does not bound `add` (a machine gone without a reset blocks it for minutes, while the
    process ignores stop signals to say its line): after STORE_WAIT_S the process says the line itself."""
    import threading
    import time

    from vitc.train import distributed, peers

    release = threading.Event()

    class Hung:
        def add(self, key: str, amount: int) -> int:
            release.wait(30)
            return 2

    monkeypatch.setattr(peers, "several_processes", lambda: True)
    monkeypatch.setattr(peers, "launched_by_nproc", lambda: False)
    monkeypatch.setattr(distributed, "rendezvous_store", lambda: Hung())
    monkeypatch.setattr(peers, "STORE_WAIT_S", 0.2)
    started = time.perf_counter()
    try:
        assert peers.first_to_say("error: a line") is True
        assert time.perf_counter() - started < 5
    finally:
        release.set()


def test_a_store_gone_with_its_machine_adds_no_torch_warning(monkeypatch, capfd) -> None:
    """torch's store logged the failed count as an 18-line C++ warning, its backtrace (`[c10d] recvValue failed …
    Did the remote server shutdown or crash?`), above the line it is counted for."""
    import torch.distributed as dist

    from vitc.train import distributed, peers

    serve = "import time, torch.distributed as d; s = d.TCPStore('127.0.0.1', 0, 2, True, wait_for_workers=False); "
    serve += "print(s.port, flush=True); time.sleep(60)"
    server = subprocess.Popen([sys.executable, "-c", serve], stdout=subprocess.PIPE, text=True)
    try:
        store = dist.TCPStore("127.0.0.1", int(server.stdout.readline()), 2, False)
    finally:
        server.kill()
        server.wait()
    monkeypatch.setattr(peers, "several_processes", lambda: True)
    monkeypatch.setattr(peers, "launched_by_nproc", lambda: False)
    monkeypatch.setattr(distributed, "rendezvous_store", lambda: store)
    capfd.readouterr()
    assert peers.first_to_say("error: a line") is True  # the store cannot count: this process says it
    print("after", file=sys.stderr, flush=True)  # stderr is this process's again
    assert capfd.readouterr().err == "after\n"


def test_a_peer_ended_line_offers_resume_only_where_a_resume_state_was_saved(monkeypatch) -> None:
    from vitc.train import peers

    monkeypatch.setattr(peers, "first_to_say", lambda line: True)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.delenv("VITC_NPROC", raising=False)
    cfg = load_config(None, {"run.name": "r", "run.out_dir": "runs"})

    def line(saved: bool, kept: str | None = None) -> str:
        return str(peers.peer_ended("during training", peers.what_is_kept(cfg, 2, saved, kept)))

    command = "torchrun --nproc_per_node 2 -m vitc.cli.main train --resume runs/r"
    assert line(True) == (
        "another process of the run ended during training (its output says why); continue from the last saved "
        f"epoch with: {command}"
    )
    assert line(False).endswith("before the run saved a resume state: start it again")
    assert line(False, "runs/r").endswith("before the run saved a resume state: runs/r is kept as it was")
