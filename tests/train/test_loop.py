"""The training loop end to end on a tiny model: artifacts, exact resume, NaN stop, bad resumes."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from vitc._io import read_safetensors_metadata
from vitc.artifacts.resume import RESUME_KEY, resume_summary
from vitc.checkpoint import read_checkpoint
from vitc.data.feed import MemoryFeed
from vitc.data.sampling import epoch_share, make_generator
from vitc.errors import VitcError
from vitc.train import loop
from vitc.train.config import load_config
from vitc.train.interrupt import TrainingInterrupted
from vitc.train.loop import train
from vitc.train.optim import lr_at
from vitc.train.progress import EpochProgress
from vitc.train.records import check_resumable
from vitc.train.report import read_metrics
from vitc.train.state import TrainState


def _run(overrides: dict[str, Any], resume: bool = False) -> loop.RunResult:
    return train(load_config(None, overrides), resume=resume, show_progress=False)


def test_missing_matplotlib_is_one_clear_error_before_any_epoch(
    tiny: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """torch without the [torch] extra's matplotlib: the run failed where curves.png was first drawn, once 10 s had
    passed or at the last epoch (then without that epoch's resume state); now before it loads any data."""
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` raises ImportError
    with pytest.raises(VitcError, match=r"needs 'matplotlib', which is not installed \(pip install 'vitc\[torch\]'\)"):
        _run(tiny)
    assert not (Path(tiny["run.out_dir"]) / "tiny").exists()


def test_a_run_writes_every_artifact(tiny: dict[str, Any]) -> None:
    result = _run(tiny)
    names = sorted(p.name for p in result.run_dir.iterdir())
    checkpoints = ["best.safetensors", "last.safetensors", "resume.safetensors"]
    assert names == sorted([*checkpoints, "config.json", "metrics.jsonl", "curves.png", "summary.json"])
    rows = read_metrics(result.run_dir / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == [1, 2, 3] and rows == result.history
    assert {"train_loss", "lr", "val_top1", "val_top5", "val_loss"} <= set(rows[0])
    assert 0.0 <= result.test["top1"] <= 100.0 and result.test["top5"] >= result.test["top1"]
    model, meta = read_checkpoint(result.run_dir / "best.safetensors")
    assert meta.class_names == [str(i) for i in range(10)] and meta.provenance["trained_by"] == "vitc train"
    assert model.head.out_features == 10


def test_a_quiet_run_from_python_logs_its_warnings_and_prints_nothing(
    tiny: dict[str, Any], capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """train(cfg, show_progress=False) still printed "warning: this run takes 3 optimiser steps" on stdout."""
    with caplog.at_level(logging.WARNING, logger="vitc"):
        _run({**tiny, "optim.epochs": 1})
    assert capsys.readouterr().out == ""
    logged = [record.getMessage() for record in caplog.records if record.name.startswith("vitc.")]
    assert any(line.startswith("warning: this run takes") for line in logged), logged


def _interrupt_at(monkeypatch: pytest.MonkeyPatch, call: int) -> None:
    """Make the `call`-th optimiser step's progress update raise KeyboardInterrupt (as Ctrl-C would)."""
    original = EpochProgress.advance
    count = {"n": 0}

    def advance(self: Any, *args: Any, **kwargs: Any) -> None:
        count["n"] += 1
        if count["n"] == call:
            raise KeyboardInterrupt
        original(self, *args, **kwargs)

    monkeypatch.setattr(EpochProgress, "advance", advance)


# aug.repeats: the epoch's repeated order resumes at its step too; "random": each crop's filter is drawn as well
@pytest.mark.parametrize(("repeats", "interpolation"), [(0, "bilinear"), (3, "bilinear"), (0, "random")])
def test_resume_after_ctrl_c_reproduces_the_uninterrupted_run(
    tiny: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, repeats: int, interpolation: str
) -> None:
    tiny["aug.crop_scale"] = [0.5, 1.0]  # random crops and drop-path: both RNG streams must be restored
    tiny["model.drop_path_rate"] = 0.2
    tiny["aug.repeats"] = repeats
    tiny["aug.train_interpolation"] = interpolation
    reference = _run({**tiny, "run.name": "straight"})

    with monkeypatch.context() as patch:
        _interrupt_at(patch, call=5)  # in the middle of epoch 2
        with pytest.raises(TrainingInterrupted, match=r"--resume .*/tiny"):
            _run(tiny)
    resumed = _run(tiny, resume=True)

    assert resumed.history == reference.history
    assert resumed.test == reference.test
    assert json.loads((resumed.run_dir / "config.json").read_text())["aug"]["train_interpolation"] == interpolation
    for name in ("last.safetensors", "resume.safetensors"):
        expected, got = load_file(reference.run_dir / name), load_file(resumed.run_dir / name)
        assert expected.keys() == got.keys()
        assert all(torch.equal(expected[k], got[k]) for k in expected), name


def test_a_resume_within_an_epoch_keeps_that_epochs_order(
    tiny: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stopped within an epoch, a run resumes at its step of the epoch's order, which the seed, aug.repeats,
    the batch and the data's share decide: another of them resumed silently on another order (some samples
    twice, others never). More epochs stay allowed, and at an epoch's end any change."""
    tiny["aug.repeats"] = 3
    with monkeypatch.context() as patch:
        _interrupt_at(patch, call=5)  # epoch 2, after its second step
        with pytest.raises(TrainingInterrupted):
            _run(tiny)
    resume_file = Path(tiny["run.out_dir"]) / "tiny" / "resume.safetensors"
    for key, old, new in (
        ("aug.repeats", 3, 2),
        ("optim.batch_size", 32, 16),
        ("run.seed", 0, 1),
        ("data.fraction", 0.1, 0.2),
    ):
        with pytest.raises(VitcError) as refused:
            _run({**tiny, key: new}, resume=True)
        assert str(refused.value) == (
            f"{resume_file} stopped within epoch 2, after step 2, with {key}={old}, which the rest of that epoch's "
            f"order depends on: resume with {key}={old} (not {new}), or start a new run with {key}={new}"
        )
    info = json.loads(read_safetensors_metadata(resume_file)[RESUME_KEY])["info"]
    with pytest.raises(VitcError, match=r"after step 2, on 126 training images, where this data has 127: resume on"):
        check_resumable(resume_file, {**info, "train_images": 127})

    assert len(_run({**tiny, "optim.epochs": 4}, resume=True).history) == 4
    assert len(_run({**tiny, "optim.epochs": 5, "aug.repeats": 2}, resume=True).history) == 5


def test_repeated_augmentation_trains_timms_order_and_count(
    tiny: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """aug.repeats=3 on 315 images: timm's RepeatAugSampler's order, 256 samples (85 images' three copies and
    one more) an epoch, so 8 steps of 32 rather than 9, and the learning-rate schedule over those steps."""
    tiny |= {"data.fraction": 0.25, "optim.epochs": 2, "optim.lr": 1e-3, "aug.repeats": 3}
    fed: list[tuple[int, torch.Tensor]] = []
    original = MemoryFeed.train_batches

    def record(self: MemoryFeed, order: list[torch.Tensor], epoch: int, copies: Any = None) -> Any:
        fed.append((epoch, torch.cat(order)))
        return original(self, order, epoch, copies)

    monkeypatch.setattr(MemoryFeed, "train_batches", record)
    result = train(load_config(None, tiny), show_progress=True)
    assert [epoch for epoch, _ in fed] == [0, 1]
    for epoch, order in fed:
        assert torch.equal(order, epoch_share(315, make_generator(0, epoch), repeats=3)[0])
    summary = resume_summary(result.run_dir / "resume.safetensors")
    assert summary is not None and summary.global_step == 16
    assert result.history[-1]["lr"] == lr_at(15, 16, 8, 1e-3, 1e-5)  # warm-up: optim.warmup_epochs=1
    said = capsys.readouterr().out
    assert (
        "repeated augmentation (aug.repeats=3): 3 copies of each image, each augmented apart, one after another in "
        "this process's batches; 256 samples an epoch, about 85 images (the 315 training images rounded down to a "
        "multiple of 256, as timm's RepeatAugSampler)" in " ".join(said.split())
    )


@pytest.mark.parametrize("epoch", [2, 3])  # the last too (nothing was saved: its training ran again)
def test_ctrl_c_in_validation_runs_that_epochs_end_again(
    tiny: dict[str, Any], monkeypatch: pytest.MonkeyPatch, epoch: int
) -> None:
    """Ctrl-C during an epoch's validation saved the state as past that epoch: --resume went on without its
    metrics row (metrics [1, 3]) and without its chance to be the best checkpoint."""
    tiny["model.drop_path_rate"] = 0.2
    reference = _run({**tiny, "run.name": "straight"})
    evaluate, calls = loop.evaluate_batches, []

    def interrupted(*args: Any, **kwargs: Any) -> dict[str, float]:
        calls.append(1)
        if len(calls) == epoch:
            raise KeyboardInterrupt
        return evaluate(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(loop, "evaluate_batches", interrupted)
        with pytest.raises(TrainingInterrupted, match=r"--resume .*/tiny"):
            _run(tiny)
    resumed = _run(tiny, resume=True)
    assert [row["epoch"] for row in resumed.history] == [1, 2, 3] and resumed.history == reference.history
    expected, got = load_file(reference.run_dir / "last.safetensors"), load_file(resumed.run_dir / "last.safetensors")
    assert all(torch.equal(expected[k], got[k]) for k in expected)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(
    tiny: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    steps = {"n": 0}
    original = loop.F.log_softmax

    def poisoned(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        steps["n"] += 1
        out = original(x, *args, **kwargs)
        return out * float("nan") if steps["n"] > 4 else out  # epoch 1 (3 steps) trains fine

    monkeypatch.setattr(loop.F, "log_softmax", poisoned)
    with pytest.raises(VitcError, match="loss became nan at epoch 2, step 2"):
        _run(tiny)
    run_dir = Path(tiny["run.out_dir"]) / "tiny"
    model, meta = read_checkpoint(run_dir / "last.safetensors")
    assert meta.provenance["epoch"] == 1
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("optim", "epochs", -1, "config key optim.epochs must be positive, got -1"),
        ("run", "seed", -1, "config key run.seed must be in 0..2**63-1, got -1"),
        ("optim", "epochs", "3", "config key optim.epochs expects int, got '3'"),  # a TypeError before
        ("optim", "batch_size", 2.5, "config key optim.batch_size expects int | None, got 2.5"),
    ],
)
def test_a_config_edited_in_python_is_checked_as_load_config_checks_it(
    tiny: dict[str, Any], section: str, key: str, value: Any, message: str
) -> None:
    """train(cfg) took a config edited after load_config unchecked: epochs = -1 said "this run takes -19
    optimiser step (-1 epoch…)", then raised ZeroDivisionError. It is one VitcError now, before the run folder."""
    cfg = load_config(None, tiny)
    setattr(getattr(cfg, section), key, value)
    with pytest.raises(VitcError) as caught:
        train(cfg, show_progress=False)
    assert str(caught.value) == message
    assert not (Path(tiny["run.out_dir"]) / "tiny").exists()


def test_bad_resumes(tiny: dict[str, Any]) -> None:
    with pytest.raises(VitcError, match="nothing to resume"):
        _run(tiny, resume=True)
    _run({**tiny, "optim.epochs": 1})
    with pytest.raises(VitcError, match="already holds a run"):
        _run({**tiny, "optim.epochs": 1})
    other = {**tiny, "model.name": "convit_micro", "model.args": {"depth": 2, "embed_dim": 32, "local_up_to_layer": 1}}
    with pytest.raises(VitcError, match="was written by deit_micro"):
        _run(other, resume=True)
    bigger = {**tiny, "data.image_size": 48}  # the argument named (the two dicts of arguments were printed whole)
    with pytest.raises(VitcError, match=r"with other arguments than this run's: img_size 48 \(was its default\)$"):
        _run(bigger, resume=True)


def test_autocast_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    from vitc.train import device

    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: True)
    assert device.pick_amp("auto", cpu) is torch.bfloat16
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: False)
    assert device.pick_amp("auto", cpu) is None and device.pick_amp("bf16", cpu) is torch.bfloat16
    assert device.pick_amp("off", cpu) is None
    with pytest.raises(VitcError, match="fp16 autocast needs CUDA"):
        device.pick_amp("fp16", cpu)
    # on a GPU: bf16 where it is native (Ampere and later), fp16 on a V100 or T4, whose bf16 torch emulates
    # (is_bf16_supported() says True there unless emulation is excluded)
    cuda = torch.device("cuda")
    for native, dtype in ((True, torch.bfloat16), (False, torch.float16)):
        monkeypatch.setattr(
            torch.cuda, "is_bf16_supported", lambda including_emulation=True, n=native: n or including_emulation
        )
        assert device.pick_amp("auto", cuda) is dtype


def test_a_resume_file_keeps_the_gpus_random_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a GPU, drop-path draws its masks from the CUDA generator: its state is saved and restored with the
    CPU's (a resumed run reseeded it and replayed the first session's masks). The GPU is faked here."""
    from vitc.train import state as run_state

    saved = {"cuda": torch.arange(16, dtype=torch.uint8)}
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda: saved["cuda"].clone())
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda value: saved.update(restored=value))
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    path = tmp_path / "resume.safetensors"
    run_state.save_state(path, TrainState(), model, optimizer, None, {"aug": torch.Generator()}, {})
    saved["cuda"] = torch.zeros(16, dtype=torch.uint8)  # the generator moves on
    run_state.load_state(path, model, optimizer, None, {"aug": torch.Generator()})
    assert torch.equal(saved["restored"], torch.arange(16, dtype=torch.uint8))


def test_fp16s_loss_scale_is_resumed(tiny: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """fp16 (a V100's or T4's `run.amp=auto`): the GradScaler's backed-off scale goes into the resume file; a
    resume restarted at 65536, which would overflow and skip steps again. fp16 autocast runs on the CPU here."""
    scales: list[float] = []
    overflow = {"at": 2, "calls": 0}
    unscale, update = torch.amp.GradScaler.unscale_, torch.amp.GradScaler.update

    def unscale_with_one_overflow(self: Any, optimizer: torch.optim.Optimizer) -> None:
        overflow["calls"] += 1
        if overflow["calls"] == overflow["at"]:  # one inf gradient: the scale halves, the step is skipped
            grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
            grads[0].view(-1)[0] = float("inf")
        unscale(self, optimizer)

    def update_and_record(self: Any, *args: Any) -> None:
        scales.append(self.get_scale())
        update(self, *args)

    monkeypatch.setattr(loop, "pick_amp", lambda choice, device: torch.float16)
    monkeypatch.setattr(torch.amp.GradScaler, "unscale_", unscale_with_one_overflow)
    monkeypatch.setattr(torch.amp.GradScaler, "update", update_and_record)
    reference = _run({**tiny, "run.name": "straight"})
    expected = list(scales)
    assert expected[:3] == [65536.0, 65536.0, 32768.0]
    scales.clear()
    overflow["calls"] = 0
    with monkeypatch.context() as patch:
        _interrupt_at(patch, call=5)  # in the middle of epoch 2
        with pytest.raises(TrainingInterrupted):
            _run(tiny)
    overflow["at"] = -1  # the overflow happened in the first session
    resumed = _run(tiny, resume=True)
    assert scales == expected
    assert resumed.history == reference.history


@pytest.mark.parametrize(("first", "then"), [((), ("cpu",)), (("cpu",), ())], ids=["to-fused", "from-fused"])
def test_a_resumed_run_steps_with_its_own_devices_adamw(
    tiny: dict[str, Any], monkeypatch: pytest.MonkeyPatch, first: tuple[str, ...], then: tuple[str, ...]
) -> None:
    """A run started on the CPU and resumed on a GPU (or the other way): AdamW steps fused where this session's
    device takes it (setup.FUSED_ADAMW_ON, "cuda"; the CPU stands in for it here). torch's load_state_dict took
    `fused` with every other setting from the file: the GPU session stepped with the CPU's for-loop kernel."""
    from vitc.train import setup

    fused: list[set[Any]] = []
    step = loop._backward_and_step

    def recording(run: Any, loss: torch.Tensor) -> None:
        fused.append({group.get("fused") for group in run.optimizer.param_groups})
        step(run, loss)

    monkeypatch.setattr(loop, "_backward_and_step", recording)
    monkeypatch.setattr(setup, "FUSED_ADAMW_ON", first)
    with monkeypatch.context() as patch:
        _interrupt_at(patch, call=5)  # in the middle of epoch 2
        with pytest.raises(TrainingInterrupted):
            _run(tiny)
    assert fused and all(kernel == {True if first else None} for kernel in fused)
    fused.clear()
    monkeypatch.setattr(setup, "FUSED_ADAMW_ON", then)
    _run(tiny, resume=True)
    assert fused and all(kernel == {True if then else None} for kernel in fused)


def test_a_resumed_run_keeps_its_attention_and_the_measurement_draws_nothing(
    tiny: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a GPU `vitc train` times GPSA's formulations (the CPU stands in here). The timing drew its inputs
    from torch's generator after --resume had restored it, so drop-path's masks moved; and a resume measured
    again, which could pick other kernels. A tuned run now draws as a pinned one, and a resume keeps its choice."""
    from vitc.models import formulation
    from vitc.train import device

    monkeypatch.setattr(device, "TUNED_DEVICES", ("cpu",))
    monkeypatch.setattr(formulation, "pick", lambda trials: "fused")
    tiny.update({"model.name": "convit_micro", "model.drop_path_rate": 0.2, "aug.crop_scale": [0.5, 1.0]})
    tiny["model.args"] = {"depth": 2, "local_up_to_layer": 1, "embed_dim": 32, "num_heads": 2}
    pinned = _run({**tiny, "run.name": "pinned", "model.args": {**tiny["model.args"], "attn_impl": "fused"}})
    reference = _run({**tiny, "run.name": "straight"})
    assert reference.history == pinned.history
    with monkeypatch.context() as patch:
        _interrupt_at(patch, call=5)
        with pytest.raises(TrainingInterrupted):
            _run(tiny)
    monkeypatch.setattr(formulation, "pick", lambda trials: "reference")  # what a new measurement would say
    resumed = _run(tiny, resume=True)
    assert resumed.history == reference.history
    summary = json.loads((resumed.run_dir / "summary.json").read_text())
    assert [row["chosen"] for row in summary["attention"]] == ["fused"]
    expected, got = load_file(reference.run_dir / "last.safetensors"), load_file(resumed.run_dir / "last.safetensors")
    assert all(torch.equal(expected[k], got[k]) for k in expected)


def test_no_cuda_says_whether_pytorch_is_a_cpu_build(monkeypatch: pytest.MonkeyPatch) -> None:
    """A new GPU machine with a CPU-only PyTorch is told to install a CUDA build, not that it has no GPU."""
    from vitc._device import pick_device
    from vitc.engines.torch_runner import TorchRunner, model_from_zoo

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", None)
    with pytest.raises(VitcError, match=r"^--device cuda was asked for, but this PyTorch \(.+\) is a CPU-only build"):
        pick_device("cuda")
    runner = TorchRunner(model_from_zoo("deit_micro"), device="cuda")
    with pytest.raises(VitcError, match="is a CPU-only build: install a CUDA build for your driver"):
        runner.activate()
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    with pytest.raises(VitcError, match=r"built for CUDA 13.0\) finds no usable GPU: `nvidia-smi` lists"):
        pick_device("cuda")
    assert pick_device("auto") == torch.device("cpu")


@pytest.mark.parametrize(
    "command",
    [["train"], ["eval", "run"], ["bench", "-m", "deit_micro"], ["bench", "-e", "model.onnx"]],
    ids=["train", "eval", "bench-model", "bench-engine"],
)
def test_a_gpu_number_as_device_says_how_to_choose_a_gpu(command: list[str]) -> None:
    """`--device cuda:1` (torch's and Ultralytics' way to name a GPU) was refused without saying how to
    choose one, and bench with only engines ignored any --device that was not "cpu" (`gpu` ran on auto)."""
    from typer.testing import CliRunner

    from vitc.cli.main import app

    runner = CliRunner()
    for device, hint in [
        ("cuda:1", ": choose the GPU with CUDA_VISIBLE_DEVICES=1 before the command and --device cuda"),
        ("0,1", "CUDA_VISIBLE_DEVICES=0,1 before the command and --device cuda; `vitc train --nproc 2` trains on 2"),
        ("gpu", ": --device cuda"),
        ("mps", "cpu, cuda)"),
    ]:
        result = runner.invoke(app, [*command, "--device", device])
        assert result.exit_code == 2 and f"unknown device {device!r} for --device" in result.output, result.output
        assert hint in result.output and "Traceback" not in result.output


def test_decoding_workers_default_to_a_gpus_share_of_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    """A streamed folder on a GPU was decoded by the training process alone (run.workers was 0), several
    times slower than the GPU trains; a CPU keeps its cores for the step."""
    from vitc.train import device

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    assert device.pick_workers(None, cuda) == 8 and device.pick_workers(None, cuda, world_size=4) == 3
    assert device.pick_workers(None, cpu) == 0 and device.pick_workers(2, cpu) == 2
    assert device.pick_workers(0, cuda) == 0
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    assert device.pick_workers(None, cuda) == 1 and device.pick_workers(None, cuda, world_size=2) == 1
    assert load_config(None, {}).run.workers is None
    from vitc.train.distributed import DistInfo

    two_machines = DistInfo(rank=5, world_size=8, local_rank=1)  # torchrun: 4 processes on each of 2 machines
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert two_machines.on_this_machine == 4  # the cores were divided by all 8 processes
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    assert two_machines.on_this_machine == 8
    with pytest.raises(VitcError, match=r"run\.workers must not be negative"):
        load_config(None, {"run.workers": -1})


def test_bf16_autocast_run(tiny: dict[str, Any]) -> None:
    result = _run({**tiny, "run.amp": "bf16", "optim.epochs": 1})
    assert len(result.history) == 1 and result.history[0]["train_loss"] > 0


@pytest.mark.parametrize("model", ["convit_micro", "spvit_micro"])  # their hand-written autograd Functions
def test_run_compile_trains_the_same_model(tiny: dict[str, Any], model: str) -> None:
    """run.compile (timm's --torchcompile): the compiled step traces through GPSA's and SP-SA's backward.

    aot_eager runs the forward and backward graphs torch.compile captures (AOTAutograd) without
    generating kernels, so it checks the capture in seconds; inductor's kernels are timed on a GPU
    (docs/peer_timing.py). Same seed, same data: the losses agree with the eager run's.
    """
    overrides = {**tiny, "model.name": model, "model.args": {"depth": 2, "local_up_to_layer": 1}, "optim.epochs": 1}
    eager = _run({**overrides, "run.name": "eager"})
    compiled = _run({**overrides, "run.name": "compiled", "run.compile": "aot_eager"})
    assert compiled.compile_seconds is not None and compiled.compile_seconds > 0 and eager.compile_seconds is None
    assert compiled.history[0]["train_loss"] == pytest.approx(eager.history[0]["train_loss"], rel=1e-4)
    summary = json.loads((compiled.run_dir / "summary.json").read_text())
    assert summary["compile"] == "aot_eager" and summary["compile_seconds"] > 0
    from safetensors import safe_open

    with safe_open(str(compiled.run_dir / "best.safetensors"), "pt") as f:  # plain keys, no _orig_mod.
        assert not any(key.startswith("_orig_mod") for key in f.keys())  # noqa: SIM118
    with pytest.raises(VitcError, match=r"run.compile must be one of off, inductor"):
        load_config(None, {**overrides, "run.compile": "yes"})


def test_run_compile_mode_reaches_inductor(tiny: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """run.compile_mode=reduce-overhead (timm's --torchcompile-mode): CUDA graphs for launch-bound steps."""
    calls: list[dict[str, Any]] = []

    def record(model: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return model  # the eager step: what is checked is what torch.compile was asked for

    monkeypatch.setattr(torch, "compile", record)
    _run({**tiny, "optim.epochs": 1, "run.compile": "inductor", "run.compile_mode": "reduce-overhead"})
    _run({**tiny, "optim.epochs": 1, "run.compile": "inductor", "run.name": "plain"})
    assert calls == [{"backend": "inductor", "mode": "reduce-overhead"}, {"backend": "inductor"}]
    with pytest.raises(VitcError, match=r"run.compile_mode=reduce-overhead is inductor's; set run.compile=inductor"):
        load_config(None, {**tiny, "run.compile_mode": "reduce-overhead"})
    with pytest.raises(VitcError, match=r"run.compile_mode must be one of default, reduce-overhead"):
        load_config(None, {**tiny, "run.compile": "inductor", "run.compile_mode": "fast"})


def test_ctrl_c_while_scoring_after_training_says_how_to_finish(
    tiny: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C after the last epoch, as the best checkpoint was scored on the test split, ended with exit 130 and
    nothing said (no test score, no summary.json). It now says so, and --resume writes them."""

    def pressed(run: Any) -> None:
        raise KeyboardInterrupt

    overrides = {**tiny, "optim.epochs": 1}
    with monkeypatch.context() as patch:
        patch.setattr(loop, "_finish", pressed)
        with pytest.raises(TrainingInterrupted, match=r"interrupted while scoring the best checkpoint, after "
                           r"training: .*tiny's checkpoints are complete; its test score and summary.json follow "
                           r"from: vitc train --resume .*/tiny"):  # fmt: skip
            _run(overrides)
    result = _run(overrides, resume=True)
    assert result.test["top1"] >= 0 and (result.run_dir / "summary.json").is_file() and len(result.history) == 1


def test_eager_compile_of_checkpointed_batchnorm_blocks_is_refused_in_one_line(tiny: dict[str, Any]) -> None:
    """torch.compile's eager backend with CvT's checkpointed blocks died in the first backward: 'one of the
    variables needed for gradient computation has been modified by an inplace operation' (a BatchNorm count)."""
    overrides = {**tiny, "model.name": "cvt_micro", "model.args": {}, "optim.epochs": 1}
    with pytest.raises(VitcError, match=r"run.compile=eager cannot recompute cvt_micro's BatchNorm blocks .*aot_eager"):
        _run({**overrides, "run.compile": "eager", "run.grad_checkpointing": True})
    _run({**overrides, "model.name": "spvit_micro", "run.compile": "eager", "run.grad_checkpointing": True})
    frozen = {**overrides, "run.name": "frozen", "optim.freeze": "backbone"}  # eval mode: nothing is recomputed
    _run({**frozen, "run.compile": "eager", "run.grad_checkpointing": True})


@pytest.mark.parametrize("model", ["convit_micro", "cvt_micro"])  # GPSA's autograd Function; CvT's BatchNorm
def test_grad_checkpointing_trains_the_same_steps(
    tiny: dict[str, Any], model: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """run.grad_checkpointing (timm's --grad-checkpointing): the blocks' activations are recomputed in the
    backward, drop-path's masks replayed, BatchNorm's statistics counted once: the same weights."""
    from vitc.models import layers

    args = {"depth": 2, "local_up_to_layer": 1} if model == "convit_micro" else {}
    overrides = {**tiny, "model.name": model, "model.args": args, "optim.epochs": 1, "model.drop_path_rate": 0.1}
    plain = _run({**overrides, "run.name": "plain"})
    calls: list[int] = []
    real = layers.checkpoint
    monkeypatch.setattr(layers, "checkpoint", lambda *a, **k: calls.append(1) or real(*a, **k))
    recomputed = _run({**overrides, "run.name": "recomputed", "run.grad_checkpointing": True})
    assert calls  # the blocks ran checkpointed
    expected, got = load_file(plain.run_dir / "last.safetensors"), load_file(recomputed.run_dir / "last.safetensors")
    assert expected.keys() == got.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], atol=1e-6, rtol=1e-5, msg=key)
    assert json.loads((recomputed.run_dir / "config.json").read_text())["run"]["grad_checkpointing"] is True
