"""run.sync_bn (timm's --sync-bn): BatchNorm over every DDP process's batch, checked on a CPU with torch's own
SyncBatchNorm running on stand-in kernels over gloo (tests/train/sync_bn_cpu.py)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from tests.train.sync_bn_cpu import BATCH, STEP_CASES, StepCase, step_batch, step_model
from tests.train.test_distributed import _set_args
from vitc.checkpoint import read_checkpoint
from vitc.errors import VitcError
from vitc.models.formulation import TUNABLE
from vitc.models.layers import BATCHNORMS
from vitc.train.config import load_config
from vitc.train.distributed import DistInfo, sync_batchnorm
from vitc.train.loop import train

HELPER = Path(__file__).with_name("sync_bn_cpu.py")
TIMEOUT_S = 240  # a collective that never matches is a hang: the processes are stopped and the test fails


def _ranks(args: list[str], tmp_path: Path) -> list[subprocess.CompletedProcess[str]]:
    """`python sync_bn_cpu.py ARGS` as the 2 processes of a torchrun launch; stopped if they hang."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    base = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2"}
    base |= {"LOCAL_WORLD_SIZE": "2", "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, str(HELPER), *args],
            env={**base, "RANK": str(rank), "LOCAL_RANK": str(rank)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
        )
        for rank in range(2)
    ]
    done = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=TIMEOUT_S)
            done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return done


def _close(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor], scale: float = 1.0, share: float = 0.0) -> None:
    """Each tensor within 1e-6, or within `share` of its largest magnitude (bfloat16's rounding)."""
    assert list(got) == list(want)
    for key in want:
        expected = want[key].double() * scale
        atol = max(1e-6, share * expected.abs().max().item())
        torch.testing.assert_close(got[key].double(), expected, atol=atol, rtol=0, msg=key)


def _one_process(case: StepCase, images: torch.Tensor, labels: torch.Tensor) -> dict[str, dict[str, torch.Tensor]]:
    """The reference: one process, plain BatchNorm, one step of `case`'s model on `images`."""
    model = step_model(case.model, case.checkpointed)
    with case.cast():
        logits = model(images)
    F.cross_entropy(logits.float(), labels).backward()
    return {"state": model.state_dict(), "grads": {k: p.grad for k, p in model.named_parameters()}}


def test_two_processes_with_sync_bn_step_as_one_process_on_the_whole_batch(tmp_path: Path) -> None:
    """2 processes take STEP_CASES's steps under sync-BN through vitc's step functions, and each ends with the
    running statistics (to 1e-6) and gradients of one process with plain BatchNorm:
    - combined: CvT, each process on half the batch, as one process on all of it; activation checkpointing's
      recomputation gathers again, and the statistics it would count twice are kept once.
    - stand_in, compiled, bf16: process 1's batch is unreadable and it takes the stand-in step (an empty batch
      in train mode): no process hangs, the statistics are one process's on process 0's half alone and the
      gradients half of its (the all-reduce averages in the stand-in's zeros, as without sync-BN). Compiled:
      torch.compile cannot trace a SyncBatchNorm, and a checkpointed CvT block ran its checkpoint eagerly
      without restoring the statistics (counted twice). bf16: a stand-in under autocast would send bfloat16
      zeros where the others send float32 statistics, and gloo aborts.
    Process 0's checkpoint of a SyncBatchNorm model has BatchNorm's keys and loads into a plain model; the EMA
    copy evaluates on one process alone (eval mode: no gather)."""
    done = _ranks(["steps", str(tmp_path)], tmp_path)
    for proc in done:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    images, labels = step_batch()
    for name, case in STEP_CASES.items():
        share = slice(0, BATCH // 2) if case.unreadable else slice(0, BATCH)
        want = _one_process(case, images[share], labels[share])
        for seen in ranks:
            _close(seen[name]["state"], want["state"])
            # under bf16 the gradients round where plain BatchNorm's kernel and SyncBatchNorm's differ: 0.2% apart
            _close(seen[name]["grads"], want["grads"], 0.5 if case.unreadable else 1.0, share=0.01 * case.bf16)
        assert any("bn" in key and "running_var" in key for key in want["state"])

    plain, _ = read_checkpoint(tmp_path / "checkpoint.safetensors")
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in plain.modules())
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in plain.modules()) == 3  # SP-ViT's stem
    last = ranks[0][list(STEP_CASES)[-1]]  # the model process 0 saved
    _close(plain.state_dict(), last["state"])
    ema = last["ema_logits"]
    assert ema.shape == (BATCH, 3) and torch.isfinite(ema).all()


def test_a_sync_bn_run_trains_as_one_process_and_survives_an_unreadable_batch(tmp_path: Path) -> None:
    """`vitc train` of CvT under sync-BN in 2 processes, one step: the checkpoint has one process's running
    statistics (to 1e-6) and weights, and summary.json says sync-BN was on; streamed photos where one
    process's whole batch is unreadable end (its stand-in joins the gathers) with every bad file counted."""
    from PIL import Image

    from tests.train.conftest import TINY

    tiny = {**TINY, "model.name": "cvt_micro", "model.args": {}, "optim.epochs": 1, "model.drop_path_rate": 0.0}
    tiny |= {"run.out_dir": str(tmp_path / "runs"), "data.fraction": 0.05}
    single = train(load_config(None, {**tiny, "run.name": "single"}), show_progress=False)
    for proc in _ranks(["train", *_set_args({**tiny, "run.name": "ddp", "run.sync_bn": True})], tmp_path):
        assert proc.returncode == 0, proc.stdout + proc.stderr
    ddp = tmp_path / "runs" / "ddp"
    expected, _ = read_checkpoint(single.run_dir / "last.safetensors")
    got, _ = read_checkpoint(ddp / "last.safetensors")
    _close(dict(got.named_buffers()), dict(expected.named_buffers()))  # the statistics of the whole batch
    for key, value in expected.named_parameters():  # AdamW's first step, lr·g/(|g| + 1e-8), is ±lr (1e-3) but
        # where a gradient is near 1e-8: there the float error of another order of sums moves it by up to ~6e-5
        torch.testing.assert_close(got.get_parameter(key), value, atol=1e-4, rtol=0, msg=key)
    assert json.loads((ddp / "summary.json").read_text())["sync_bn"] is True
    assert json.loads((single.run_dir / "summary.json").read_text())["sync_bn"] is False

    rng = torch.Generator().manual_seed(0)
    for split, count in (("train", 6), ("val", 2)):
        for name in ("cat", "dog"):
            folder = tmp_path / "photos" / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = torch.randint(0, 256, (20, 20, 3), dtype=torch.uint8, generator=rng).numpy()
                Image.fromarray(pixels).save(folder / f"{i}.jpg")
    for i in range(3):  # every other training image of cat unreadable: some step gives a process none
        (tmp_path / "photos" / "train" / "cat" / f"{2 * i}.jpg").write_bytes(b"not a jpeg")
    settings = {"model.name": "spvit_micro", "model.args": {"depth": 1, "local_up_to_layer": 1}, "run.amp": "off",
                "data.image_size": 16, "data.stream": "stream", "optim.batch_size": 2, "optim.epochs": 1,
                "run.sync_bn": True, "run.out_dir": str(tmp_path / "runs"), "run.name": "bad"}  # fmt: skip
    args = ["train", "-q", "--data-dir", str(tmp_path / "photos"), *_set_args(settings)]
    for proc in _ranks(args, tmp_path):
        assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads((tmp_path / "runs" / "bad" / "summary.json").read_text())
    assert summary["skipped_images"] == 3 and summary["sync_bn"] is True


def test_sync_bn_on_cpu_processes_is_refused_in_one_line(tmp_path: Path) -> None:
    """torch's SyncBatchNorm has no CPU kernels: `--device cpu --nproc 2` on CvT stops before it trains, where
    it would have crashed in DDP's set-up ('SyncBatchNorm layers only work with GPU modules')."""
    cmd = [sys.executable, "-m", "vitc.cli.main", "train", "--device", "cpu", "--nproc", "2", "--model", "cvt_micro"]
    cmd += _set_args({"run.sync_bn": True, "run.out_dir": str(tmp_path / "runs")})
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stdout + done.stderr
    assert lines[0].startswith("error: run.sync_bn needs CUDA for cvt_micro's 15 BatchNorm layers (torch's")
    assert "--set run.sync_bn=false" in lines[0] and not list((tmp_path / "runs").glob("*/*.safetensors"))


def test_each_process_refuses_sync_bn_on_a_cpu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Launched by torchrun, or with run.device=auto on a machine without CUDA: each process refuses once its
    device is resolved, before it loads any data."""
    from vitc.train import loop

    monkeypatch.setattr(loop, "process_info", lambda device_type: DistInfo(rank=0, world_size=2))
    overrides = {"model.name": "cvt_micro", "run.sync_bn": True, "run.device": "cpu", "run.out_dir": str(tmp_path)}
    with pytest.raises(VitcError, match=r"run.sync_bn needs CUDA for .* train the 2 CPU processes without it"):
        train(load_config(None, overrides), show_progress=False)
    assert not list(tmp_path.glob("*/*.safetensors"))


def test_sync_bn_is_ignored_for_one_process_and_where_nothing_synchronises(
    tiny: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """As timm (--sync-bn under DDP only), one process trains as without it, in one line; a model without
    BatchNorm, or a frozen backbone (its BatchNorms in eval mode), has nothing to gather, and is not refused on a
    CPU either (it was: 'run.sync_bn needs CUDA' for DeiT, which converts nothing)."""
    overrides = {**tiny, "model.name": "cvt_micro", "model.args": {}, "optim.epochs": 1, "run.sync_bn": True}
    result = train(load_config(None, overrides), show_progress=True)
    said = " ".join(capsys.readouterr().out.split())
    assert "sync-BN: off for one process, whose BatchNorm sees the whole batch (run.sync_bn is for DDP)" in said
    assert result.sync_bn is False and json.loads((result.run_dir / "config.json").read_text())["run"]["sync_bn"]

    two = DistInfo(rank=0, world_size=2)
    deit, cvt = step_model("deit_micro"), step_model("cvt_micro")
    said_deit = "sync-BN: deit_micro has no BatchNorm, so run.sync_bn changes nothing"
    assert sync_batchnorm(deit, two, frozen=False, device="cpu") == (False, said_deit)
    assert sync_batchnorm(deit, DistInfo(), frozen=False, device="cpu") == (False, said_deit)
    assert sync_batchnorm(cvt, two, frozen=True, device="cpu")[0] is False
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in cvt.modules())
    with pytest.raises(VitcError, match=r"run.sync_bn expects bool"):
        load_config(None, {"run.sync_bn": "yes"})


@pytest.mark.parametrize("name", ["cvt_micro", "spvit_micro"])
def test_a_sync_bn_model_keeps_batchnorms_names_and_times_its_attention_alone(name: str, tmp_path: Path) -> None:
    """The conversion keeps every parameter and buffer under its name and in its order (checkpoints, EMA's zip
    over state dicts), a resume file goes either way between a SyncBatchNorm model and a plain one (--resume may
    turn run.sync_bn on or off), and no GPSA/SP-SA block holds a BatchNorm: the attention timing, which rank 0
    runs alone in train mode, never enters a gather the other processes would not join."""
    from vitc.train.optim import ModelEma
    from vitc.train.state import TrainState, load_state, save_state

    plain, synced = step_model(name), step_model(name)
    assert sync_batchnorm(synced, DistInfo(rank=0, world_size=2), frozen=False, device="cuda")[0]
    assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in synced.modules())
    assert list(synced.state_dict()) == list(plain.state_dict())
    for block in (m for m in synced.modules() if isinstance(m, TUNABLE)):
        assert not any(isinstance(m, BATCHNORMS) for m in block.modules())

    for bn in (m for m in synced.modules() if isinstance(m, torch.nn.SyncBatchNorm)):
        bn.running_mean.add_(1.0)  # statistics a plain model does not have
    ema = ModelEma(synced, 0.5)
    ema.update(synced)
    resume = tmp_path / "resume.safetensors"
    save_state(resume, TrainState(), synced, torch.optim.AdamW(synced.parameters()), ema.module, {}, {})
    into, into_ema = step_model(name), step_model(name)
    load_state(resume, into, torch.optim.AdamW(into.parameters()), into_ema, {})
    _close(into.state_dict(), synced.state_dict())
    _close(into_ema.state_dict(), ema.module.state_dict())
    save_state(resume, TrainState(), plain, torch.optim.AdamW(plain.parameters()), None, {}, {})
    load_state(resume, synced, torch.optim.AdamW(synced.parameters()), None, {})
    _close(synced.state_dict(), plain.state_dict())
