"""Two processes with gloo on CPU train exactly like one process with the same global batch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from vitc._io import read_safetensors_metadata
from vitc.artifacts.resume import RESUME_KEY
from vitc.checkpoint import read_meta
from vitc.errors import VitcError
from vitc.train import distributed, launcher
from vitc.train.config import load_config
from vitc.train.loop import train


def _set_args(overrides: dict[str, Any]) -> list[str]:
    return [arg for key, value in overrides.items() for arg in ("--set", f"{key}={json.dumps(value)}")]


def test_two_gloo_processes_match_one_process(tiny: dict[str, Any], tmp_path: Path) -> None:
    tiny |= {"optim.epochs": 2, "model.drop_path_rate": 0.0}  # deterministic steps: no crop, no drop-path
    single = train(load_config(None, {**tiny, "run.name": "single"}), show_progress=False)

    cmd = [
        sys.executable,
        "-m",
        "vitc.cli.main",
        "train",
        "--nproc",
        "2",
        "-q",
        *_set_args({**tiny, "run.name": "ddp"}),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    ddp_dir = Path(tiny["run.out_dir"]) / "ddp"

    expected, got = load_file(single.run_dir / "last.safetensors"), load_file(ddp_dir / "last.safetensors")
    assert expected.keys() == got.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], atol=1e-5, rtol=1e-4, msg=key)
    assert read_meta(ddp_dir / "last.safetensors").provenance["processes"] == 2
    ddp_rows = [json.loads(line) for line in (ddp_dir / "metrics.jsonl").read_text().splitlines()]
    for mine, theirs in zip(single.history, ddp_rows, strict=True):
        assert abs(mine["train_loss"] - theirs["train_loss"]) < 1e-5
        assert mine["val_top1"] == theirs["val_top1"]


def test_two_gloo_processes_train_with_repeated_augmentation(tiny: dict[str, Any]) -> None:
    """aug.repeats=3 on 315 images over 2 processes: 128 samples each an epoch (timm's RepeatAugSampler: 256
    in all), so 8 steps of 16 a process where the plain order takes 9, said once at the start."""
    settings = tiny | {"data.fraction": 0.25, "optim.epochs": 1, "aug.repeats": 3, "run.name": "ddp"}
    cmd = [sys.executable, "-m", "vitc.cli.main", "train", "--nproc", "2", *_set_args(settings)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    said = " ".join(done.stdout.split())
    assert said.count("each augmented apart, dealt to the 2 processes in turn; 256 samples an epoch") == 1, said
    record = json.loads(read_safetensors_metadata(Path(tiny["run.out_dir"]) / "ddp" / "resume.safetensors")[RESUME_KEY])
    assert record["state"]["global_step"] == 8 and record["state"]["images_seen"] == 256
    assert np.isfinite(record["state"]["history"][0]["train_loss"])


def _interpreter(tmp_path: Path, rank0_exit: int) -> Path:
    """A stand-in for the interpreter each rank runs: rank 1 aborts as a C++ exception in a thread would
    make it (its last stderr line says so), rank 0 ends a moment later with `rank0_exit`."""
    python = tmp_path / "python"
    python.write_text(
        "#!/bin/sh\n"
        'if [ "$RANK" = 1 ]; then echo "warming up" >&2; '
        "echo \"terminate called after throwing an instance of 'gloo::IoException'\" >&2; kill -ABRT $$; fi\n"
        f"sleep 1; exit {rank0_exit}\n"
    )
    python.chmod(0o755)
    return python


def test_more_cuda_processes_than_gpus_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """`--nproc 2` on a one-GPU workstation: rank 1 says what to do before joining the group (it crashed
    in set_device with "invalid device ordinal")."""
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29500")
    with pytest.raises(VitcError) as raised:
        distributed.process_info("cuda")
    assert str(raised.value) == (
        "2 DDP processes on this machine need a GPU each, but torch sees 1: --nproc 1 "
        "(torchrun: --nproc-per-node 1), or leave --nproc out"
    )


def test_cuda_processes_join_over_gloo_where_torch_has_no_nccl(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch's Windows wheels have no NCCL (init_process_group("nccl"): "Distributed package doesn't have NCCL
    built in") and no libuv (torch 2.4-2.5's TCPStore asked for it: pytorch#139990): `--nproc 2` on two GPUs
    joins over gloo with USE_LIBUV=0 there."""
    import torch.distributed as dist

    joined: dict[str, str] = {}
    monkeypatch.setattr(sys, "platform", "win32")
    ranks = {"WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}
    monkeypatch.setattr(os, "environ", {**ranks, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"})
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: joined.update(device=str(index)))
    monkeypatch.setattr(dist, "is_nccl_available", lambda: False)
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "rendezvous", lambda url: iter([("store", 1, 2)]))
    monkeypatch.setattr(dist, "PrefixStore", lambda prefix, store: store)
    monkeypatch.setattr(distributed, "_store", None)
    monkeypatch.setattr(dist, "init_process_group", lambda backend, **joining: joined.update(backend=backend))
    info = distributed.process_info("cuda")
    distributed.init_distributed(info, "cuda")
    assert info.rank == 1
    assert joined == {"backend": "gloo", "device": "1"}
    assert os.environ["USE_LIBUV"] == "0"


def test_a_rank_that_aborts_is_named_with_its_last_words(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rank that kills itself (abort, crash) says why in its last stderr line; the launcher's one line
    carries it, so a log names the cause. Rank 0 then fails too, as it would in its next collective."""
    monkeypatch.setattr(sys, "executable", str(_interpreter(tmp_path, rank0_exit=1)))
    with pytest.raises(VitcError) as stopped:
        launcher.launch(["train"], nproc=2)
    assert str(stopped.value).startswith("rank 1 of 2 was killed by SIGABRT (its last words: terminate called")
    assert "gloo::IoException" in str(stopped.value) and "\n" not in str(stopped.value)


def test_a_rank_that_aborts_after_rank_0_finished_the_run_is_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Rank 0 ends cleanly only after the run's last barrier, which every rank reached: a rank that
    dies tearing down after that leaves a complete run, said in one warning, not an error to resume."""
    monkeypatch.setattr(sys, "executable", str(_interpreter(tmp_path, rank0_exit=0)))
    launcher.launch(["train"], nproc=2)  # no error: the run finished
    warning = capsys.readouterr().err.strip().splitlines()[-1]
    assert warning.startswith("warning: rank 1 of 2 was killed by SIGABRT (its last words: terminate called")
    assert warning.endswith("after the run had finished; its files are complete")


def test_a_process_whose_whole_batch_is_unreadable_still_steps(tmp_path: Path) -> None:
    """Streamed photos with unreadable files, one image per process and step: a process left with nothing
    joins the others' gradient all-reduce with zeros (it skipped the step, the collectives stopped matching
    and gloo aborted: 'collective mismatch'), and the run ends with every unreadable file counted."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", 6), ("val", 2)):
        for name in ("cat", "dog"):
            folder = tmp_path / "photos" / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(folder / f"{i}.jpg")
    for i in range(3):  # every other training image of cat unreadable: some step gives a process none
        (tmp_path / "photos" / "train" / "cat" / f"{2 * i}.jpg").write_bytes(b"not a jpeg")
    settings = {"model.name": "deit_micro", "model.args": {"depth": 1}, "data.image_size": 16, "run.amp": "off",
                "data.stream": "stream", "optim.batch_size": 2, "optim.epochs": 1,
                "run.out_dir": str(tmp_path / "runs"), "run.name": "ddp"}  # fmt: skip
    cmd = [sys.executable, "-m", "vitc.cli.main", "train", "--nproc", "2", "-q", "--data-dir", str(tmp_path / "photos")]
    done = subprocess.run([*cmd, *_set_args(settings)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads((tmp_path / "runs" / "ddp" / "summary.json").read_text())
    assert summary["skipped_images"] == 3  # rank 0 read two of them: the epoch's count over both ranks
    assert (
        summary["processes"] == 2 == read_meta(tmp_path / "runs" / "ddp" / "best.safetensors").provenance["processes"]
    )


def test_the_default_batch_splits_evenly_over_the_processes() -> None:
    """64 over 3 processes was 21 each (63 a step) while config.json said 64, which --resume then refused."""
    from vitc.train.defaults import resolve_for_data

    cfg = load_config(None, {})
    notes, _ = resolve_for_data(cfg, 1000, 3)
    assert cfg.optim.batch_size == 63 and any("split evenly over 3" in note for note in notes)


def test_every_process_draws_its_own_augmentation_and_drop_path() -> None:
    """As timm seeds each rank apart: the same draws on every process would crop, mix and drop alike on
    each process's images. Rank 0 keeps a one-process run's streams, so those runs are as before."""
    from vitc.data.sampling import make_generator
    from vitc.train.setup import _AUG_STREAM, seed_streams

    def draws(rank: int, epoch: int = 1, step: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        torch.manual_seed(7)  # the model's init: every process the same
        aug = torch.Generator()
        seed_streams(aug, 3, epoch, rank, step)
        return torch.rand(4, generator=aug), torch.rand(4)

    torch.manual_seed(7)
    one_process = torch.rand(4, generator=make_generator(3, _AUG_STREAM + 1)), torch.rand(4)
    assert all(torch.equal(x, y) for x, y in zip(draws(0), one_process, strict=True))
    ranks = [draws(rank) for rank in range(3)]
    for a in range(3):
        for b in range(a + 1, 3):
            assert not torch.equal(ranks[a][0], ranks[b][0]) and not torch.equal(ranks[a][1], ranks[b][1])
    assert all(torch.equal(x, y) for x, y in zip(draws(1), draws(1), strict=True))  # resumed at its start: the same
    assert not torch.equal(draws(1, epoch=2)[0], ranks[1][0])  # each epoch its own
    assert not torch.equal(draws(1, step=5)[0], ranks[1][0])  # resumed within the epoch without its own: fresh


def test_a_process_keeps_its_own_streams_and_sums_for_the_step_it_stopped_at(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A DDP process other than rank 0 saves its random streams (augmentation, torch's CPU and GPU
    generators: the GPU is faked here) and running sums beside the resume file; a resume takes them only
    at the step and under the number of processes they were saved at."""
    from vitc.train.state import RankState, TrainState, remove_rank_states

    saved = {"cuda": torch.arange(16, dtype=torch.uint8)}
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda: saved["cuda"].clone())
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda value: saved.update(restored=value))
    resume = tmp_path / "resume.safetensors"
    rank_1_of_2 = RankState(resume, 1, 2)
    aug = torch.Generator().manual_seed(5)
    torch.manual_seed(6)
    where = {"epoch": 1, "step_in_epoch": 2, "global_step": 5}
    rank_1_of_2.save(TrainState(**where, partial={"loss": 3.25, "count": 32.0}), {"aug": aug})
    expected = torch.rand(3, generator=aug), torch.rand(3)

    for elsewhere, world_size in (({**where, "step_in_epoch": 1}, 2), (where, 3)):  # a step apart; 3 processes
        state = TrainState(**elsewhere)
        assert not RankState(resume, 1, world_size).load(state, {"aug": aug}) and state.partial == {}
    saved["cuda"] = torch.zeros(16, dtype=torch.uint8)  # the generator moves on
    state, mine = TrainState(**where), torch.Generator()
    assert not RankState(resume, 2, 3).load(state, {"aug": mine})  # another rank reads its own file only
    assert rank_1_of_2.load(state, {"aug": mine})
    assert state.partial == {"loss": 3.25, "count": 32.0}
    assert torch.equal(torch.rand(3, generator=mine), expected[0]) and torch.equal(torch.rand(3), expected[1])
    assert torch.equal(saved["restored"], torch.arange(16, dtype=torch.uint8))
    assert [path.name for path in tmp_path.iterdir()] == ["resume.rank1.safetensors"]
    remove_rank_states(resume)
    assert not list(tmp_path.iterdir())


def test_ctrl_c_waits_for_a_step_that_exchanged_its_gradients() -> None:
    """Under DDP every process gets Ctrl-C at once: raised at once, it could stop one just before its step
    was recorded and another just after, a step apart. Held from the exchange on, the step ends first;
    a failure inside (a peer that stopped) is then seen as the interruption."""
    from vitc.train.interrupt import CtrlC

    ctrl_c, done = CtrlC(), []
    with ctrl_c.installed():
        with pytest.raises(KeyboardInterrupt), ctrl_c.held():
            signal.raise_signal(signal.SIGINT)
            done.append("the step")
        assert done == ["the step"]
        with pytest.raises(KeyboardInterrupt):  # between steps: at once
            signal.raise_signal(signal.SIGINT)
            done.append("more")
        assert done == ["the step"]
    impatient, done = CtrlC(), []
    with impatient.installed():
        with pytest.raises(KeyboardInterrupt), impatient.held():  # pressed twice: the second does not wait
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)
            done.append("the rest of the step")
        assert done == []
    waiting = CtrlC()
    with waiting.installed():
        with pytest.raises(RuntimeError, match="Connection closed by peer"), waiting.held():
            signal.raise_signal(signal.SIGINT)
            raise RuntimeError("[gloo/transport/tcp/pair.cc:553] Connection closed by peer")
        assert waiting.stopped()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.parametrize("ema_decay", [0.0, 0.9])
def test_each_process_scores_its_share_and_the_figures_are_the_checkpoints(tmp_path: Path, ema_decay: float) -> None:
    """Validation and the final test are split over the processes (rank 0 alone left the others idle, and
    past nccl's timeout on a large set), and the sums add up to what the saved checkpoints score in one
    process. CvT's BatchNorm statistics took each process's own last batch in (its EMA too): rank 0's, the
    checkpointed ones, are sent to every process before it scores, or the figures would be a mixture."""
    from vitc.checkpoint import read_checkpoint
    from vitc.data.datasets import load_dataset
    from vitc.data.feed import set_batches
    from vitc.train.evaluate import evaluate_batches

    settings = {"model.name": "cvt_micro", "data.fraction": 0.15, "optim.batch_size": 32, "optim.epochs": 1,
                "optim.ema_decay": ema_decay, "run.amp": "off", "run.out_dir": str(tmp_path),
                "run.name": "ddp"}  # fmt: skip
    cmd = [sys.executable, "-m", "vitc.cli.main", "train", "--nproc", "2", "-q", *_set_args(settings)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    run = tmp_path / "ddp"
    recorded = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    summary = json.loads((run / "summary.json").read_text())
    for checkpoint, split, want in (("last", "val", recorded["val_top1"]), ("best", "test", summary["test_top1"])):
        model, meta = read_checkpoint(run / f"{checkpoint}.safetensors")
        data = load_dataset("digits", split, image_size=32)
        got = evaluate_batches(model, set_batches(data), meta.cfg.mean, meta.cfg.std)
        assert got["top1"] == want, (split, got, want)
        if split == "val":  # the loss shows a mixture of statistics where top-1 may not
            assert abs(got["loss"] - recorded["val_loss"]) < 1e-6, (got, recorded)


def _two_colour_photos(root: Path, counts: dict[str, int], size: tuple[int, int]) -> None:
    """root/<split>/c0 (red) and c1 (green) PNGs of `size`, `counts[split]` of each class."""
    from PIL import Image

    for split, count in counts.items():
        for c, colour in enumerate([(200, 30, 30), (30, 200, 30)]):
            folder = root / split / f"c{c}"
            folder.mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", size, colour).save(folder / f"{i}.png")


def test_a_run_that_stops_early_under_ddp_ends_as_one_process_does(tmp_path: Path) -> None:
    """optim.patience under DDP: rank 1 died in the summary (max() of the history only rank 0 keeps), and
    every rank printed a summary (rank 1's: 0 epochs, best -1.00%). With TensorBoard, rank 0's share of
    val all unreadable left no images for the locality figures, which crashed."""
    _two_colour_photos(tmp_path / "photos", {"train": 8, "val": 1}, (40, 36))
    (tmp_path / "photos" / "val" / "c0" / "0.png").write_bytes(b"not a png")  # rank 0's whole share of val
    settings = {"model.name": "deit_micro", "model.args": {"depth": 1, "embed_dim": 32, "num_heads": 2},
                "data.image_size": 16, "data.stream": "stream", "optim.batch_size": 8, "optim.epochs": 4,
                "optim.patience": 1, "optim.lr": 1e-12, "log.tensorboard": True, "run.amp": "off",
                "run.out_dir": str(tmp_path / "runs"), "run.name": "ddp"}  # fmt: skip
    cmd = [sys.executable, "-m", "vitc.cli.main", "train", "--nproc", "2", "--data-dir", str(tmp_path / "photos")]
    done = subprocess.run([*cmd, *_set_args(settings)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("stopped early after epoch 2 of 4") == 1 and done.stdout.count("next: vitc export") == 1
    assert json.loads((tmp_path / "runs" / "ddp" / "summary.json").read_text())["stopped_early"] is True


def _ranks(tmp_path: Path, script: str) -> Path:
    """A stand-in interpreter running `script` (sh) in every rank, $RANK set."""
    python = tmp_path / "python"
    python.write_text("#!/bin/sh\n" + script)
    python.chmod(0o755)
    return python


def test_the_rank_that_said_its_error_is_the_one_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unreadable image under data.on_bad_image=stop is read by one rank (its share): it exits 2 with its
    line while rank 0 fails in the same instant on the closed connection. The lowest failed rank was
    reported ('rank 0 of 2 exited with code 1 … --resume'), and the file was never named."""
    script = (
        'if [ "$RANK" = 1 ]; then echo "error: cannot read image photos/val/c1/3.png (data.on_bad_image=stop)" >&2;'
        " exit 2; fi\n"
        'sleep 0.02; echo "RuntimeError: [gloo/transport/tcp/pair.cc:553] Connection closed by peer" >&2; exit 1\n'
    )
    monkeypatch.setattr(sys, "executable", str(_ranks(tmp_path, script)))
    with pytest.raises(VitcError) as stopped:
        launcher.launch(["train"], nproc=2, poll_s=0.5)  # both have ended by the first look
    assert str(stopped.value) == "cannot read image photos/val/c1/3.png (data.on_bad_image=stop)"
    assert stopped.value.exit_code == 2


def test_ctrl_c_pressed_twice_lets_the_ranks_finish_saving(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A second Ctrl-C interrupted the launcher's wait for the ranks saving after the first: it SIGTERMed them
    mid-save and left with exit 130 and nothing said. The ranks now get the grace period, and their resume
    line is passed on. (Each rank ignores further Ctrl-C while it saves: vitc._signals.stop_signals_ignored.)"""
    import threading

    said = "error: interrupted; continue with: vitc train --resume --nproc 2"
    script = f'trap "" INT; sleep 1.5; echo "{said}" >&2; exit 130\n'  # a rank that saves, then says so
    monkeypatch.setattr(sys, "executable", str(_ranks(tmp_path, script)))
    for delay in (0.3, 0.6):  # as a terminal's Ctrl-C reaches the launcher, twice
        threading.Timer(delay, os.kill, (os.getpid(), signal.SIGINT)).start()
    with pytest.raises(VitcError) as stopped:
        launcher.launch(["train"], nproc=2, poll_s=0.05)
    assert str(stopped.value) == "interrupted; continue with: vitc train --resume --nproc 2"
    assert stopped.value.exit_code == 130


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_to_the_launcher_stops_every_rank(signum: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGTERM (timeout, kill, Slurm, docker stop) or SIGHUP ended the launcher at once, running none of
    its clean-up: the ranks, re-parented, trained on holding the run's lock ("being written by another vitc
    train process"). The ranks are now stopped as torchrun stops its workers, and one line says so, with
    exit code 128 + the signal; the launcher's own handlers are restored."""
    import threading

    script = 'echo $$ > "$RANK.pid"; exec sleep 60\n'  # a rank that would train for a minute
    monkeypatch.setattr(sys, "executable", str(_ranks(tmp_path, script)))
    monkeypatch.chdir(tmp_path)
    threading.Timer(0.5, os.kill, (os.getpid(), signum)).start()
    before = signal.getsignal(signum)
    with pytest.raises(VitcError) as stopped:  # what the run folder holds is said, as after Ctrl-C
        launcher.launch(["train"], nproc=2, poll_s=0.05, saved=lambda: "nothing was saved")
    name = signal.Signals(signum).name
    assert str(stopped.value) == f"stopped by {name}: the 2 processes were stopped; nothing was saved"
    assert stopped.value.exit_code == 128 + signum
    assert signal.getsignal(signum) is before
    for rank in (0, 1):
        with pytest.raises(ProcessLookupError):  # stopped and reaped
            os.kill(int((tmp_path / f"{rank}.pid").read_text()), 0)


def test_ctrl_c_and_sigterm_are_ignored_while_an_interrupted_run_saves() -> None:
    """The launcher SIGTERMs a rank that Slurm or a process-group kill already stopped: the save goes on."""
    from vitc._signals import stop_signals_ignored

    before = signal.getsignal(signal.SIGTERM)
    with stop_signals_ignored():
        signal.raise_signal(signal.SIGINT)  # ignored: the save goes on
        signal.raise_signal(signal.SIGTERM)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.getsignal(signal.SIGTERM) is before


def test_ctrl_c_before_training_began_says_nothing_was_saved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every rank interrupted in its start-up exits 130 without a resume line: it said 'rank 0 of 2 exited with
    code 130 … --resume continues from the last saved epoch' with exit code 2, and there was nothing."""
    monkeypatch.setattr(sys, "executable", str(_ranks(tmp_path, "exit 130\n")))
    with pytest.raises(VitcError) as stopped:
        launcher.launch(["train"], nproc=2)
    assert str(stopped.value) == "interrupted; nothing was saved before training began"
    assert stopped.value.exit_code == 130


@pytest.mark.parametrize("ending", ["exit 130", "kill -INT $$"])  # typer's quiet exit; Python's default handler
def test_ctrl_c_once_the_run_had_finished_says_what_the_folder_holds(
    ending: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C as the ranks printed the summary: every file was written, yet the launcher said 'interrupted before
    training began: nothing was saved' (or 'rank 0 of 2 was killed by SIGINT; … --resume continues from the last
    saved epoch'). Where no rank says what it saved, the command's look at the run folder is passed on."""
    import threading

    monkeypatch.setattr(sys, "executable", str(_ranks(tmp_path, f"sleep 1; {ending}\n")))
    threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
    with pytest.raises(VitcError) as stopped:
        launcher.launch(["train"], nproc=2, saved=lambda: "the run had finished: its files are in runs/x")
    assert str(stopped.value) == "interrupted; the run had finished: its files are in runs/x"
    assert stopped.value.exit_code == 130


def test_what_an_interrupted_launch_saved_is_read_from_the_run_folder(tmp_path: Path) -> None:
    import time

    from vitc.cli.train import _what_was_saved

    cfg = load_config(None, {"run.out_dir": str(tmp_path), "run.name": "x"})
    folder = tmp_path / "x"
    folder.mkdir()
    command = f"vitc train --resume {tmp_path / 'x'} --nproc 2"
    (folder / "resume.safetensors").write_bytes(b"")
    since = time.time() + 5  # launched after the resume file was written: nothing of this launch
    assert _what_was_saved(cfg, 2, False, since) == "nothing was saved"  # a --force launch keeps the old run
    assert _what_was_saved(cfg, 2, True, since) == f"continue with: {command}"
    assert _what_was_saved(cfg, 2, False, since - 10) == f"continue with: {command}"
    (folder / "summary.json").write_text("{}")
    finished = f"the run had finished: its checkpoints and summary.json are in {folder}"
    assert _what_was_saved(cfg, 2, True, since - 10) == finished


def test_an_in_memory_sets_unreadable_files_are_named_once(tmp_path: Path) -> None:
    """Every process loads an in-memory set whole: each named every unreadable file (N times under N
    processes), and again when a folder without test/ loaded val for the final test (8 lines for 2 files
    here); rank 0 speaks for them, once a file. A streamed set's shares are each process's own."""
    _two_colour_photos(tmp_path / "photos", {"train": 4, "val": 2}, (20, 20))
    for name in ("c0/1.png", "c1/0.png"):
        (tmp_path / "photos" / "val" / name).write_bytes(b"not a png")
    settings = {"model.name": "deit_micro", "model.args": {"depth": 1, "embed_dim": 32, "num_heads": 2},
                "data.image_size": 16, "data.stream": "memory", "optim.batch_size": 4, "optim.epochs": 1,
                "run.amp": "off", "run.out_dir": str(tmp_path / "runs"), "run.name": "ddp"}  # fmt: skip
    cmd = [sys.executable, "-m", "vitc.cli.main", "train", "--nproc", "2", "--data-dir", str(tmp_path / "photos")]
    done = subprocess.run([*cmd, *_set_args(settings)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stderr.count("skipped: cannot read image") == 2, done.stderr  # once each, on stderr


def test_the_resume_command_keeps_the_processes() -> None:
    """Ctrl-C under `--nproc 2` said `vitc train --resume RUN`, which continued in one process."""
    from vitc.train.run_folder import resume_command

    cfg = load_config(None, {"run.name": "x"})
    assert resume_command(cfg, 1, by_nproc=False) == "vitc train --resume train/runs/x"
    assert (
        resume_command(cfg, 2, by_nproc=False)
        == "torchrun --nproc_per_node 2 -m vitc.cli.main train --resume train/runs/x"
    )
    assert resume_command(cfg, 2, by_nproc=True) == "vitc train --resume train/runs/x --nproc 2"


def test_the_launcher_marks_its_processes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(launcher.LAUNCHER_ENV, raising=False)
    script = f'echo "error: launched by --nproc ${launcher.LAUNCHER_ENV}" >&2; exit 2\n'
    monkeypatch.setattr(sys, "executable", str(_ranks(tmp_path, script)))
    with pytest.raises(VitcError, match=r"^launched by --nproc 2$"):
        launcher.launch(["train"], nproc=2)
