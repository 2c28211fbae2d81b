"""The campaign at run time: the GPU failing under a command, files changing under a streaming run,
and what a run leaves in its folder (the DDP worker killed mid-epoch is in test_ddp_kill.py).

There is no GPU in CI: CUDA's failures are raised where torch raises them (torch.cuda.OutOfMemoryError
from an optimiser step or a forward, a CUDA error from a lost device, torch.cuda.is_available() False).
Each case checks what test_campaign.py checks: exit code 2 and one `error:` line, no traceback,
within the memory and time bounds, and no file outside the case's own folders changed.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from tests.reliability import hostile
from tests.reliability.test_campaign import bounded, tree_digest
from vitc.cli.main import app

runner = CliRunner()
TINY = [
    *("--set", "model.name=deit_micro", "--set", "model.args.depth=1", "--set", "model.args.embed_dim=32"),
    *("--set", "model.args.num_heads=2", "--set", "data.fraction=0.1", "--set", "optim.batch_size=32"),
    *("--set", "run.amp=off", "--set", "optim.epochs=1", "--set", "optim.warmup_epochs=0"),
]
OOM = "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 7.79 GiB total capacity; 6.10 GiB already allocated)"


@pytest.fixture
def user(tmp_path: Path) -> Iterator[Path]:
    """The user's other files: no case may change them."""
    mine = tmp_path / "user_files"
    hostile.image_folder(mine / "photos_set")
    (mine / "notes.txt").write_text("mine")
    before = tree_digest(mine)
    yield mine
    assert tree_digest(mine) == before, "a file outside the case's folders changed"


def invoke(argv: list[str]) -> Any:
    with bounded():
        return runner.invoke(app, argv)


def refused(result: Any, *fragments: str) -> str:
    """Exit 2, one `error:` line last, no traceback; returns that line."""
    output = result.output
    assert result.exit_code == 2, (result.exit_code, output[-3000:], result.exception)
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error: ") and sum(line.startswith("error:") for line in lines) == 1, output
    for fragment in fragments:
        assert fragment in output, output
    return lines[-1]


# ---------------------------------------------------------------- CUDA


@pytest.mark.slow
def test_train_out_of_gpu_memory_keeps_the_last_checkpoint(
    tmp_path: Path, user: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OOM in the second epoch: one line with the batch and what to try; epoch 1's checkpoint stays and
    --resume continues from it."""
    from vitc.train import loop

    saved: list[int] = []
    save_state, step = loop.save_state, torch.optim.AdamW.step

    def counting_save(*args: Any, **kwargs: Any) -> Any:
        saved.append(1)
        return save_state(*args, **kwargs)

    def failing_step(self: Any, *args: Any, **kwargs: Any) -> Any:
        if saved:  # epoch 1 finished and was saved
            raise torch.cuda.OutOfMemoryError(OOM)
        return step(self, *args, **kwargs)

    monkeypatch.setattr(loop, "save_state", counting_save)
    monkeypatch.setattr(torch.optim.AdamW, "step", failing_step)
    runs = ["--set", f"run.out_dir={tmp_path / 'runs'}", "--name", "oom"]
    line = refused(invoke(["train", "-q", *TINY, *runs, "--set", "optim.epochs=2"]), "out of GPU memory")
    assert "at batch size 32 (epoch 2, training)" in line
    assert "--set optim.batch_size=16" in line and "--set run.amp=bf16" in line
    assert "last.safetensors (epoch 1) is kept, --resume continues from it" in line
    monkeypatch.undo()

    result = runner.invoke(app, ["train", "-q", "--resume", *runs, "--set", "optim.epochs=2"])
    assert result.exit_code == 0, result.output
    rows = (tmp_path / "runs" / "oom" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(row)["epoch"] for row in rows] == [1, 2]


def test_train_out_of_gpu_memory_in_the_final_test(tmp_path: Path, user: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """OOM scoring the best checkpoint on the test split, after the last epoch: one line, the run kept."""
    from vitc.train import loop

    calls: list[int] = []
    evaluate = loop.evaluate_batches

    def failing(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:  # epoch 1's validation, then the final test
            raise torch.cuda.OutOfMemoryError(OOM)
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(loop, "evaluate_batches", failing)
    result = invoke(["train", "-q", *TINY, "--set", f"run.out_dir={tmp_path / 'runs'}", "--name", "t"])
    line = refused(result, "out of GPU memory at batch size 256 (the final test)", "vitc eval scores it")
    assert str(tmp_path / "runs" / "t") in line and (tmp_path / "runs" / "t" / "best.safetensors").is_file()


@pytest.mark.slow
def test_train_gpu_lost(tmp_path: Path, user: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A CUDA error from the device (lost, reset) in the first step: one line, the error named."""

    def lost(*_: Any, **__: Any) -> Any:
        raise RuntimeError("CUDA error: unspecified launch failure\nCUDA kernel errors may be reported later")

    monkeypatch.setattr(torch.optim.AdamW, "step", lost)
    result = invoke(["train", "-q", *TINY, "--set", f"run.out_dir={tmp_path / 'runs'}"])
    line = refused(result, "the GPU failed at batch size 32 (epoch 1, training)", "unspecified launch failure")
    assert "nothing was saved" in line


@pytest.mark.parametrize(
    "argv",
    [["train", "-q", "--device", "cuda", *TINY], ["bench", "--model", "deit_micro", "--device", "cuda", "-n", "1"]],
    ids=["train", "bench"],
)
def test_device_cuda_without_a_gpu(argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    argv = [*argv, "--set", f"run.out_dir={tmp_path}"] if argv[0] == "train" else argv
    refused(invoke(argv), "--device cuda was asked for, but")


def test_bench_out_of_gpu_memory(user: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vitc.engines.torch_runner import TorchRunner

    infer = TorchRunner.infer_impl

    def failing(self: Any, feed: dict[str, Any]) -> Any:
        if feed["input"].shape[0] == 4:
            raise torch.cuda.OutOfMemoryError(OOM)
        return infer(self, feed)

    monkeypatch.setattr(TorchRunner, "infer_impl", failing)
    result = invoke(["bench", "--model", "deit_micro", "-b", "1,4", "-n", "1", "--warmup", "0"])
    refused(result, "out of GPU memory at batch size 4 (deit_micro", "a smaller --batch")


def test_compile_out_of_gpu_memory(user: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vitc.compile import pipeline

    def failing(*_: Any, **__: Any) -> Any:
        raise torch.cuda.OutOfMemoryError(OOM)

    monkeypatch.setattr(pipeline, "check_inputs", failing)
    refused(invoke(["compile", "deit_micro"]), "out of GPU memory checking the compiled model at batch size 1")


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    """deit_micro (random weights) for the two classes of `user`'s photos_set."""
    import vitc

    model = vitc.create_model("deit_micro", num_classes=2, depth=1, embed_dim=32, num_heads=2)
    return vitc.save_checkpoint(tmp_path / "m.safetensors", model, ["a", "b"])


def test_eval_out_of_gpu_memory(checkpoint: Path, user: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`vitc eval` beside a training run that fills the GPU: one line saying what to try (a traceback before)."""
    from vitc.train import evaluate

    def failing(*_: Any, **__: Any) -> Any:
        raise torch.cuda.OutOfMemoryError(OOM)

    monkeypatch.setattr(evaluate, "predict_labelled", failing)
    result = invoke(["eval", str(checkpoint), "--data", "imagefolder", "--data-dir", str(user / "photos_set")])
    refused(result, "out of GPU memory evaluating at batch size 256; try freeing the GPU", "or --device cpu")


@pytest.mark.parametrize("where", ["load", "classify"])
def test_predict_out_of_gpu_memory(checkpoint: Path, user: Path, where: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """`vitc predict` with a checkpoint: the model moved onto a full GPU, or its images run there (a traceback)."""
    import vitc

    def failing(*_: Any, **__: Any) -> Any:
        raise torch.cuda.OutOfMemoryError(OOM)

    if where == "load":
        monkeypatch.setattr(torch.nn.Module, "to", failing)
    else:
        monkeypatch.setattr(vitc, "predict", failing)
    doing = "loading the model" if where == "load" else "classifying 8 images"  # a chunk of the 12
    result = invoke(["predict", str(checkpoint), str(user / "photos_set")])
    refused(result, f"out of GPU memory {doing}; try freeing the GPU", "or --device cpu")


# ---------------------------------------------------------------- streaming: files change under the run


def _hand_edited_index(data: Path, run_dir: Path) -> None:
    """index.json as if written for this folder (its key matches), then edited: it names a file that
    does not exist and a FIFO; val's entry comes from another folder."""
    from vitc.data.stream import INDEX_VERSION

    train = data / "train"
    os.mkfifo(train / "a" / "pipe.png")  # reading a FIFO blocks until someone writes: a hang if opened
    key = {"root": str(train.resolve()), "mtime_ns": [os.stat(train).st_mtime_ns] + [
        os.stat(train / c).st_mtime_ns for c in ("a", "b")
    ]}  # fmt: skip
    files = [["0.png", "1.png", "2.png", "ghost.png", "pipe.png"], ["0.png", "1.png", "2.png"]]
    elsewhere = {"key": {"root": "/elsewhere/val", "mtime_ns": [1, 2, 3]}, "classes": ["a", "b"], "files": files}
    record = {"version": INDEX_VERSION, "splits": {
        "train": {"key": key, "classes": ["a", "b"], "count": 8, "files": files}, "val": elsewhere,
    }}  # fmt: skip
    run_dir.mkdir(parents=True)
    (run_dir / "index.json").write_text(json.dumps(record))


def _read_only(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Writes under `folder` fail with EROFS, as on a read-only mount (chmod does not stop root)."""
    real_open, real_os_open = open, os.open

    def inside(path: Any) -> bool:
        return str(Path(os.fspath(path)).absolute()).startswith(str(folder))

    def guarded_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if isinstance(file, (str, os.PathLike)) and inside(file) and set(mode) & set("wax+"):
            raise OSError(errno.EROFS, "Read-only file system", str(file))
        return real_open(file, mode, *args, **kwargs)

    def guarded_os_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if inside(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_os_open(path, flags, *args, **kwargs)

    monkeypatch.setattr("builtins.open", guarded_open)
    monkeypatch.setattr(os, "open", guarded_os_open)


@pytest.mark.slow
@pytest.mark.parametrize("on_bad_image", ["skip", "stop"])
def test_stream_files_change_between_indexing_and_reading(
    on_bad_image: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read-only data folder, a hand-edited index.json (a missing file, a FIFO; val's from another
    folder), a file deleted and one truncated after indexing: skipped and counted, or one line under
    on_bad_image=stop; never a hang (the FIFO is never opened)."""
    from vitc.data import stream

    data = hostile.image_folder(tmp_path / "data")
    runs = tmp_path / "runs"
    _hand_edited_index(data, runs / "s")
    index = stream.index_imagefolder

    def index_then_change(data_dir: Any, split: str, cache: Any = None, recorded: Any = None) -> Any:
        found = index(data_dir, split, cache, recorded)
        if split == "train":
            (data / "train" / "a" / "1.png").unlink()  # vanished
            truncated = data / "train" / "b" / "0.png"
            truncated.write_bytes(truncated.read_bytes()[:40])
        return found

    monkeypatch.setattr(stream, "index_imagefolder", index_then_change)
    _read_only(data, monkeypatch)
    argv = ["train", *TINY, "--data", "imagefolder", "--data-dir", str(data), "--set", "data.fraction=1.0"]
    argv += ["--set", "data.stream=stream", "--set", "run.workers=0", "--set", f"run.out_dir={runs}", "--name", "s"]
    result = invoke([*argv, "--set", f"data.on_bad_image={on_bad_image}"])
    if on_bad_image == "stop":
        refused(result, "data.on_bad_image=stop")
        return
    assert result.exit_code == 0, (result.output[-3000:], result.exception)
    for name in ("ghost.png", "pipe.png", "1.png", "0.png"):
        assert f"{name}" in result.output
    assert "elsewhere" not in result.output  # val's foreign entry was not used: val was listed again
    row = json.loads((runs / "s" / "metrics.jsonl").read_text().splitlines()[-1])
    assert row["skipped_images"] == 4
    assert not any(p.name.endswith(".lock") for p in runs.iterdir())


# ---------------------------------------------------------------- lock files


def test_a_run_that_never_trained_leaves_no_lock_file(tmp_path: Path) -> None:
    data = hostile.image_folder(tmp_path / "data")
    for image in (data / "val" / "b").iterdir():
        image.unlink()  # a class folder without images: the run stops after taking its lock
    runs = tmp_path / "runs"
    argv = ["train", "-q", *TINY, "--data", "imagefolder", "--data-dir", str(data), "--set", f"run.out_dir={runs}"]
    result = invoke(argv)
    refused(result, "has no images")
    assert [p.name for p in runs.iterdir() if p.name.endswith(".lock")] == [], "the run left its lock file"
