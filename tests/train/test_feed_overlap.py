"""The GPU feed's logic on the CPU: batches augmented ahead and losses read every few steps train the
same run bit for bit, Ctrl-C with a batch drawn ahead resumes exactly, a non-finite loss read late
still names its step, and summary.json says where a step's time goes (vitc.train.meter).

What only a GPU can check (the side stream, pinned copies, the device-seeded erasing noise) is in the
`test_cuda_*` tests below, which `make gpu-check` runs on the lent machine (docs/gpu_check.py, train).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from tests.doc_scripts import load_doc_script
from vitc._io import read_safetensors_metadata
from vitc.artifacts.resume import RESUME_KEY
from vitc.checkpoint import read_checkpoint
from vitc.cli.main import app
from vitc.data.prefetch import Prefetcher
from vitc.data.transforms import TrainAugment
from vitc.train import loop, meter, setup
from vitc.train.config import load_config
from vitc.train.interrupt import TrainingInterrupted
from vitc.train.loop import train
from vitc.train.progress import EpochProgress

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
# every random draw of the recipe: crops and their filters, flips, erasing noise, mixup/cutmix, drop-path
DRAWS = {"aug.crop_scale": [0.5, 1.0], "aug.train_interpolation": "random", "aug.flip": True, "aug.erasing": 0.25,
         "aug.mixup": 0.8, "aug.cutmix": 1.0}  # fmt: skip


def _run(overrides: dict[str, Any], resume: bool = False) -> loop.RunResult:
    return train(load_config(None, overrides), resume=resume, show_progress=False)


def _as_on_a_gpu(patch: pytest.MonkeyPatch, read_every: int = 3) -> None:
    """The CPU run takes the GPU's path: one batch augmented ahead, losses read every few steps."""
    patch.setitem(loop.FEED_AHEAD, "cpu", 1)
    patch.setitem(meter.READ_EVERY, "cpu", read_every)


def _same_files(a: Path, b: Path) -> None:
    for name in ("last.safetensors", "resume.safetensors"):
        expected, got = load_file(a / name), load_file(b / name)
        assert expected.keys() == got.keys()
        assert all(torch.equal(expected[k], got[k]) for k in expected), name


def test_feeding_ahead_and_reading_late_train_the_same_run(tiny: dict[str, Any], monkeypatch: pytest.MonkeyPatch):
    tiny |= {**DRAWS, "model.drop_path_rate": 0.2}
    reference = _run({**tiny, "run.name": "each_in_turn"})
    _as_on_a_gpu(monkeypatch, read_every=2)  # 3 steps an epoch: reads mid-epoch and at its end
    ahead = _run({**tiny, "run.name": "ahead"})
    assert ahead.history == reference.history and ahead.test == reference.test
    _same_files(reference.run_dir, ahead.run_dir)


@pytest.mark.parametrize("fused", [False, True])  # True: AdamW as CUDA runs it (setup.FUSED_ADAMW_ON)
def test_ctrl_c_with_a_batch_drawn_ahead_resumes_exactly(
    tiny: dict[str, Any], monkeypatch: pytest.MonkeyPatch, fused: bool
) -> None:
    tiny |= {**DRAWS, "model.drop_path_rate": 0.2}
    if fused:
        monkeypatch.setattr(setup, "FUSED_ADAMW_ON", ("cpu",))
    reference = _run({**tiny, "run.name": "straight"})
    _as_on_a_gpu(monkeypatch)  # at the 5th step (epoch 2, step 2): its batch 3 drawn, 2 losses unread
    with monkeypatch.context() as patch:
        original, count = EpochProgress.advance, {"n": 0}

        def advance(self: Any, *args: Any, **kwargs: Any) -> None:
            count["n"] += 1
            if count["n"] == 5:
                raise KeyboardInterrupt
            original(self, *args, **kwargs)

        patch.setattr(EpochProgress, "advance", advance)
        with pytest.raises(TrainingInterrupted):
            _run(tiny)
    resumed = _run(tiny, resume=True)
    assert resumed.history == reference.history and resumed.test == reference.test
    _same_files(reference.run_dir, resumed.run_dir)
    record = json.loads(read_safetensors_metadata(resumed.run_dir / "resume.safetensors")[RESUME_KEY])
    assert {group["fused"] for group in record["param_groups"]} == ({True} if fused else {None})


def test_a_non_finite_loss_read_late_names_its_step(tiny: dict[str, Any], monkeypatch: pytest.MonkeyPatch):
    """Read every 3 steps, the loss poisoned from epoch 2's second step on: the run trains on to the
    end of that epoch, then stops with the one line (exit 2), and epoch 1's checkpoint stays good."""
    _as_on_a_gpu(monkeypatch)
    calls, original = {"n": 0}, loop.F.log_softmax

    def poisoned(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        calls["n"] += 1
        out = original(x, *args, **kwargs)
        return out * float("nan") if calls["n"] > 4 else out  # as in test_loop: epoch 1 and one step are fine

    monkeypatch.setattr(loop.F, "log_softmax", poisoned)
    args = [arg for key, value in tiny.items() for arg in ("--set", f"{key}={json.dumps(value)}")]
    result = CliRunner().invoke(app, ["train", "-q", *args])
    assert result.exit_code == 2, result.output
    assert "the loss became nan at epoch 2, step 2; stopped" in result.output
    assert "last.safetensors (lower optim.lr and --resume)" in result.output and "Traceback" not in result.output
    model, meta = read_checkpoint(Path(tiny["run.out_dir"]) / "tiny" / "last.safetensors")
    assert meta.provenance["epoch"] == 1 and all(torch.isfinite(p).all() for p in model.parameters())


def test_summary_says_where_the_time_went(tiny: dict[str, Any]) -> None:
    result = _run({**tiny, "optim.epochs": 2})
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["train_step_images_per_s"] > 0 and summary["train_images_per_s"] > 0
    assert 0 <= summary["data_wait_fraction"] < 1 and summary["data_wait_seconds"] >= 0
    assert 0 < summary["warmup_seconds"] < summary["seconds"] and 0 < summary["eval_seconds"] < summary["seconds"]
    assert result.timing == {k: summary[k] for k in result.timing}


def test_the_meter_splits_waits_steps_and_warm_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """Host-clock marks (the CPU's timeline) at known times: the first step is the warm-up, the waits
    before later steps are the data wait, and the rate counts the later steps' images over their time."""
    clock = iter([0.0, 1.0, 3.0, 3.5, 4.0, 4.5, 5.5])  # epoch start, then (start, end) of three steps
    monkeypatch.setattr(meter.time, "perf_counter", lambda: next(clock))
    m = meter.StepMeter(torch.device("cpu"))
    m.start_epoch()
    for step in range(3):
        m.finish(torch.tensor(2.0 + step), 8, step, step + 1, 0.1, m.mark())
    assert [(value, s.step) for value, s in m.read()] == [(2.0, 0), (3.0, 1), (4.0, 2)]
    assert m.summary() == {
        "train_step_images_per_s": 16 / 1.5,  # steps 2 and 3: 0.5 s and 1.0 s
        "data_wait_seconds": 1.0,  # 0.5 s before each
        "data_wait_fraction": 1.0 / 2.5,
        "warmup_seconds": 3.0,  # the first batch (1 s) and the first step (2 s)
        "eval_seconds": 0.0,
    }


def _batches(n: int, empty_at: int = -1) -> list[tuple[torch.Tensor, torch.Tensor, list[str]]]:
    g = torch.Generator().manual_seed(1)
    out = []
    for i in range(n):
        k = 0 if i == empty_at else 4
        out.append((torch.randint(0, 256, (k, 3, 16, 16), dtype=torch.uint8, generator=g), torch.arange(k) % 3, []))
    return out


def _augment() -> TrainAugment:
    return TrainAugment(num_classes=3, mean=(0.5,) * 3, std=(0.25,) * 3, crop_scale=(0.5, 1.0), erase_prob=0.5)


def test_the_prefetcher_draws_in_batch_order_and_knows_what_to_rewind() -> None:
    """Ahead or not, each batch gets the same draws as the loop that augmented it in turn; while a batch
    waits drawn ahead, `rewind_state` is the generator's state before its draws; an empty batch passes."""
    data, device = _batches(4, empty_at=2), torch.device("cpu")
    g = torch.Generator().manual_seed(7)
    expected = [_augment()(x, y, g) if len(y) else None for x, y, _ in data]
    g.manual_seed(7)
    ready = Prefetcher(iter(data), _augment(), g, device, ahead=1)
    states = []
    for i, want in enumerate(expected):
        batch = next(ready)
        states.append(batch.aug_state)
        if want is None:
            assert batch.x is None and batch.count == 0
        else:
            assert torch.equal(batch.x, want[0]) and torch.equal(batch.targets, want[1]) and batch.count == 4
        if i < len(data) - 1:  # the next batch is drawn already: a stop now rewinds to before it
            assert len(ready.queue) == 1 and torch.equal(ready.rewind_state(), ready.queue[0].aug_state)
    assert not ready.queue and torch.equal(ready.rewind_state(), g.get_state())
    with pytest.raises(StopIteration):
        next(ready)
    g.manual_seed(7)  # the state a batch carries replays its draws
    for (x, y, _), state, want in zip(data, states, expected, strict=True):
        g.set_state(state)
        if want is not None:
            assert torch.equal(_augment()(x, y, g)[0], want[0])


@cuda
def test_cuda_augmentation_matches_the_cpu_and_replays() -> None:
    """Same draws from the CPU generator: crops, flips and mixup on the GPU match the CPU's values (a crop's
    8-bit value may round the other way where the two devices' sums fall either side of a half level: at
    most a level, on a rare value); with erasing (noise from a device generator seeded by the run's) two
    passes from the same state are identical, and the generator ends where it would."""
    x, y, _ = _batches(1)[0]
    plain = TrainAugment(num_classes=3, mean=(0.5,) * 3, std=(0.25,) * 3, crop_scale=(0.5, 1.0), mixup_alpha=0.8)
    g = torch.Generator().manual_seed(3)
    on_cpu = plain(x, y, g)
    g.manual_seed(3)
    on_gpu = plain(x, y, g, torch.device("cuda"))
    assert on_gpu[0].is_cuda and on_gpu[1].is_cuda
    diff, level = (on_gpu[0].cpu() - on_cpu[0]).abs(), 1 / 255 / 0.25  # a level, normalised by std 0.25
    assert float(diff.max()) <= level + 1e-5 and float((diff > 1e-5).float().mean()) < 0.005
    torch.testing.assert_close(on_gpu[1].cpu(), on_cpu[1])
    runs = []
    for _ in range(2):
        g.manual_seed(3)
        runs.append((_augment()(x, y, g, torch.device("cuda"))[0].cpu(), g.get_state()))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])


@cuda
def test_cuda_prefetcher_on_a_side_stream_gives_the_same_batches() -> None:
    data, device = _batches(5), torch.device("cuda")
    got = []
    for ahead in (0, 1):
        g = torch.Generator().manual_seed(5)
        got.append([b.x.cpu() for b in Prefetcher(iter(data), _augment(), g, device, ahead=ahead)])
    assert all(torch.equal(a, b) for a, b in zip(*got, strict=True))


@cuda
def test_cuda_run_reports_its_timing(tiny: dict[str, Any]) -> None:
    result = _run({**tiny, "run.device": "cuda", "optim.epochs": 2})
    timing = result.timing
    assert timing["train_step_images_per_s"] > 0 and 0 <= timing["data_wait_fraction"] < 1
    assert result.history[-1]["train_loss"] > 0


def test_gpu_check_shows_where_the_time_went() -> None:
    """The train section's table of `make gpu-check`: the steps' rate, the data wait, warm-up and evaluation."""
    gpu_check = load_doc_script("gpu_check")
    row = {"model": "deit_tiny", "amp": "bf16", "train_images_per_s": 900.0, "seconds": 20.0}
    row |= {"train_step_images_per_s": 3000.0, "data_wait_fraction": 0.042, "warmup_seconds": 1.2, "eval_seconds": 3.4}
    row |= {"attention": ["fused_dense", "flex"]}  # the formulations vitc train chose (vitc.models.formulation)
    section = {"status": "ok", "settings": ["optim.epochs=2"], "rows": [row], "feed_tests": "3 passed (exit 0)"}
    text = gpu_check.markdown({"dry_run": False, "seconds": 1.0, "sections": {"train": section}})
    assert "| model | AMP | train img/s | step img/s | data wait | warm-up s | eval s | s |" in text
    assert "| deit_tiny | bf16 | 900.0 | 3000.0 | 4.2% | 1.2 | 3.4 | 20.0 | fused_dense, flex |" in text
    assert "3 passed (exit 0)" in text


class _Stream:
    """A CPU stand-in for a CUDA stream: it logs what is queued on it, in order."""

    def __init__(self, name: str, log: list[tuple[str, ...]]) -> None:
        self.name, self.log = name, log

    def record_event(self) -> str:
        self.log.append((self.name, "event"))
        return f"event {self.log.count((self.name, 'event'))}"

    def wait_event(self, event: str) -> None:
        self.log.append((self.name, "waits for", event))


class _Tensor:
    """A stand-in for a batch's tensor: it logs the stream that keeps it (record_stream)."""

    def __init__(self, name: str, log: list[tuple[str, ...]]) -> None:
        self.name, self.log = name, log

    def record_stream(self, stream: _Stream) -> None:
        self.log.append((stream.name, "keeps", self.name))


def test_the_prefetcher_hands_each_batch_over_after_its_own_event(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CUDA branch's order with a stand-in for torch.cuda: batch i+1 is augmented on the side stream
    before batch i is handed over, the main stream waits for batch i's event only, and the batch's
    tensors are recorded on the main stream (they were allocated on the side one)."""
    log: list[tuple[str, ...]] = []
    side, main, current = _Stream("side", log), _Stream("main", log), []

    @contextlib.contextmanager
    def on(stream: _Stream) -> Any:
        current.append(stream)
        yield
        current.pop()

    def augment(images: torch.Tensor, labels: torch.Tensor, g: torch.Generator, device: Any) -> tuple[Any, Any]:
        i = int(images[0, 0, 0, 0])
        log.append((current[-1].name, f"augments {i}"))
        return _Tensor(f"x{i}", log), _Tensor(f"t{i}", log)

    monkeypatch.setattr(torch.cuda, "Stream", lambda device: side)
    monkeypatch.setattr(torch.cuda, "stream", on)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: main)
    data = [(torch.full((1, 1, 1, 1), i), torch.zeros(1), []) for i in range(3)]
    ready = Prefetcher(iter(data), augment, torch.Generator(), torch.device("cuda"), ahead=1)
    assert [b.x.name for b in ready] == ["x0", "x1", "x2"]  # type: ignore[union-attr]
    assert log == [
        ("side", "augments 0"), ("side", "event"), ("side", "augments 1"), ("side", "event"),
        ("main", "waits for", "event 1"), ("main", "keeps", "x0"), ("main", "keeps", "t0"),
        ("side", "augments 2"), ("side", "event"),
        ("main", "waits for", "event 2"), ("main", "keeps", "x1"), ("main", "keeps", "t1"),
        ("main", "waits for", "event 3"), ("main", "keeps", "x2"), ("main", "keeps", "t2"),
    ]  # fmt: skip


def test_the_worker_thread_feed_claims_each_batch_at_the_hand_over(monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/feed_timing.py's worker-thread variant: the worker iterated a Prefetcher that queued each
    batch's wait on the main stream as it was made, so step i waited for batch i+1's augmentation too.
    The training thread now claims each batch right before its step: the main stream's order is fixed."""
    import time

    feed_timing = load_doc_script("feed_timing")
    log: list[tuple[str, ...]] = []
    side, main = _Stream("side", log), _Stream("main", log)

    def augment(images: torch.Tensor, labels: torch.Tensor, g: torch.Generator, device: Any) -> tuple[Any, Any]:
        i = int(images[0, 0, 0, 0])
        return _Tensor(f"x{i}", log), _Tensor(f"t{i}", log)

    def step(batch: Any) -> None:
        time.sleep(0.05)  # the worker runs ahead meanwhile
        log.append(("main", f"step {batch.x.name}"))

    monkeypatch.setattr(torch.cuda, "Stream", lambda device: side)
    monkeypatch.setattr(torch.cuda, "stream", lambda stream: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: main)
    data = [(torch.full((1, 1, 1, 1), i), torch.zeros(1), []) for i in range(3)]
    feed = Prefetcher(iter(data), augment, torch.Generator(), torch.device("cuda"), 0, hand_over=False)
    feed_timing.worker_feed(feed, step)
    assert [entry for entry in log if entry[0] == "main"] == [
        ("main", "waits for", "event 1"), ("main", "keeps", "x0"), ("main", "keeps", "t0"), ("main", "step x0"),
        ("main", "waits for", "event 2"), ("main", "keeps", "x1"), ("main", "keeps", "t1"), ("main", "step x1"),
        ("main", "waits for", "event 3"), ("main", "keeps", "x2"), ("main", "keeps", "t2"), ("main", "step x2"),
    ]  # fmt: skip
