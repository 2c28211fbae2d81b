"""A user's finished runs survive bad names, `--force` with bad input, kills mid-replacement and a second process."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from vitc.cli.main import app
from vitc.errors import VitcError
from vitc.train.run_folder import RunFolder, check_run_name

runner = CliRunner()


def _set(overrides: dict[str, Any]) -> list[str]:
    return [arg for key, value in overrides.items() for arg in ("--set", f"{key}={json.dumps(value)}")]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def finished(tiny: dict[str, Any]) -> tuple[dict[str, Any], Path]:
    """A finished one-epoch run `tiny`, and its folder."""
    overrides = {**tiny, "optim.epochs": 1}
    assert runner.invoke(app, ["train", "-q", *_set(overrides)]).exit_code == 0
    return overrides, Path(tiny["run.out_dir"]) / "tiny"


@pytest.mark.parametrize("name", ["../victim", ".", "..", "a/b", "/abs", "", "x\ny", "run.new", "-rf", "a" * 129])
def test_run_names_are_one_path_component(name: str) -> None:
    with pytest.raises(VitcError, match="not allowed"):
        check_run_name(name)


def test_force_with_a_path_as_name_deletes_nothing(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("keep me")
    runs = tmp_path / "runs"
    for name in ("../victim", "."):
        result = runner.invoke(app, ["train", "--force", "--name", name, "--set", f"run.out_dir={runs}"])
        assert result.exit_code == 2 and "not allowed" in result.output, result.output
    assert (victim / "precious.txt").read_text() == "keep me"


def test_force_with_a_bad_data_dir_keeps_the_old_run(finished: tuple[dict[str, Any], Path], tmp_path: Path) -> None:
    overrides, run = finished
    before = _snapshot(run)
    bad = {**overrides, "data.name": "imagefolder", "data.dir": str(tmp_path / "typo")}
    result = runner.invoke(app, ["train", "-q", "--force", *_set(bad)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert _snapshot(run) == before


def test_force_replaces_the_run_once_the_new_one_has_a_checkpoint(finished: tuple[dict[str, Any], Path]) -> None:
    overrides, run = finished
    old_config = json.loads((run / "config.json").read_text())
    result = runner.invoke(app, ["train", "-q", "--force", *_set({**overrides, "run.seed": 7})])
    assert result.exit_code == 0, result.output
    assert json.loads((run / "config.json").read_text())["run"]["seed"] == 7 != old_config["run"]["seed"]
    assert sorted(p.name for p in run.parent.iterdir() if not p.name.endswith(".lock")) == ["tiny"]


def test_force_with_tensorboard_goes_on_in_the_renamed_folder(finished: tuple[dict[str, Any], Path]) -> None:
    """`--force` with log.tensorboard: the writer appended by path to `.tiny.new/tensorboard/` after the folder was
    renamed to tiny/ at the first checkpoint, and the run ended at epoch 2 in two tracebacks (FileNotFoundError)."""
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    overrides, run = finished
    again = {**overrides, "optim.epochs": 2, "log.tensorboard": True, "log.figures_every": 0}
    result = runner.invoke(app, ["train", "-q", "--force", *_set(again)])
    assert result.exit_code == 0, result.output
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("epoch/val_top1")] == [1, 2]
    assert sorted(p.name for p in run.parent.iterdir() if not p.name.endswith(".lock")) == ["tiny"]


def test_a_killed_force_run_leaves_the_old_run(finished: tuple[dict[str, Any], Path]) -> None:
    _, run = finished
    before = _snapshot(run)
    folder = RunFolder(run.parent, "tiny")
    folder.start(force=True, resume=False)  # as a --force run that is then killed during its first epoch
    folder.path.mkdir()
    (folder.path / "config.json").write_text("{}")
    assert _snapshot(run) == before
    again = RunFolder(run.parent, "tiny")  # the next --force run starts from a clean staging folder
    again.start(force=True, resume=False)
    assert not again.path.exists() and _snapshot(run) == before


def test_a_kill_between_the_renames_restores_the_old_run(finished: tuple[dict[str, Any], Path]) -> None:
    _, run = finished
    before = _snapshot(run)
    run.rename(run.parent / ".tiny.old")  # commit() was killed after its first rename
    RunFolder(run.parent, "tiny").start(force=False, resume=True)
    assert _snapshot(run) == before


def test_a_second_process_on_the_same_run_stops(tiny: dict[str, Any]) -> None:
    holder = RunFolder(tiny["run.out_dir"], "tiny")
    holder.acquire()  # a first `vitc train --name tiny` that is still running
    try:
        result = runner.invoke(app, ["train", "-q", *_set(tiny)])
        assert result.exit_code == 2 and "being written by another" in result.output, result.output
        assert not (Path(tiny["run.out_dir"]) / "tiny").exists()
    finally:
        holder.release()
    assert runner.invoke(app, ["train", "-q", *_set({**tiny, "optim.epochs": 1})]).exit_code == 0


def test_an_existing_run_is_refused_before_the_data_is_loaded(
    finished: tuple[dict[str, Any], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    overrides, _ = finished

    def no_loading(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the data set was loaded before the run folder was checked")

    monkeypatch.setattr("vitc.train.setup.open_feed", no_loading)
    result = runner.invoke(app, ["train", "-q", *_set(overrides)])
    assert result.exit_code == 2 and "already holds a run" in result.output, result.output


def test_out_dir_that_is_a_file(tiny: dict[str, Any], tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    result = runner.invoke(app, ["train", "-q", *_set({**tiny, "run.out_dir": str(tmp_path / "file")})])
    assert result.exit_code == 2 and "is a file" in result.output, result.output


def test_fewer_images_than_one_batch_trains_on_a_partial_batch(tiny: dict[str, Any]) -> None:
    small = {**tiny, "data.fraction": 0.02, "optim.batch_size": 64, "optim.epochs": 1}  # 22 training images
    result = runner.invoke(app, ["train", "-q", *_set(small)])
    assert result.exit_code == 0, result.output
    metrics = Path(tiny["run.out_dir"]) / "tiny" / "metrics.jsonl"
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["lr"] > 0


def _bad_images(tmp_path: Path) -> dict[str, Any]:
    """An image folder whose train/cat holds a truncated and an empty JPEG, read with data.on_bad_image=stop."""
    from tests.train.test_first_day import write_photos

    photos = write_photos(tmp_path / "photos")
    overrides = {"data.name": "imagefolder", "data.dir": str(photos), "data.fraction": 1.0, "data.image_size": 16}
    return {**overrides, "data.on_bad_image": "stop"}


@pytest.mark.parametrize("stream", ["auto", "stream"])
def test_a_run_stopped_by_a_bad_image_leaves_no_run_folder(tiny: dict[str, Any], tmp_path: Path, stream: str) -> None:
    """It used to leave `runs/tiny/` holding only index.json (and config.json when streamed): a half-made run."""
    result = runner.invoke(app, ["train", "-q", *_set({**tiny, **_bad_images(tmp_path), "data.stream": stream})])
    assert result.exit_code == 2 and "data.on_bad_image=stop" in result.output, result.output
    assert "Traceback" not in result.output
    assert sorted(p.name for p in Path(tiny["run.out_dir"]).iterdir()) == []


def test_force_stopped_by_a_bad_image_keeps_the_old_run(finished: tuple[dict[str, Any], Path], tmp_path: Path) -> None:
    overrides, run = finished
    before = _snapshot(run)
    result = runner.invoke(app, ["train", "-q", "--force", *_set({**overrides, **_bad_images(tmp_path)})])
    assert result.exit_code == 2 and "data.on_bad_image=stop" in result.output, result.output
    assert _snapshot(run) == before
    assert sorted(p.name for p in run.parent.iterdir()) == ["tiny"]  # no .tiny.new left with its index


def test_force_on_a_disk_that_fills_takes_back_its_new_run(
    finished: tuple[dict[str, Any], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk fills as a --force run writes its first resume state, its checkpoints written: the old run was
    kept, but `.tiny.new/` (2.7 MB of a deit_micro run) stayed on the full disk, named nowhere."""
    import errno

    from safetensors import torch as safetensors_torch

    overrides, run = finished
    before = _snapshot(run)
    save_file = safetensors_torch.save_file

    def full_at_the_resume_state(tensors: Any, filename: str, metadata: Any = None) -> None:
        if Path(filename).name.startswith(".resume.safetensors."):  # the temporary atomic_write gives it
            raise OSError(errno.ENOSPC, "No space left on device", filename)
        save_file(tensors, filename, metadata=metadata)

    monkeypatch.setattr(safetensors_torch, "save_file", full_at_the_resume_state)
    result = runner.invoke(app, ["train", "-q", "--force", *_set({**overrides, "run.seed": 7})])
    assert result.exit_code == 2 and "resume.safetensors: the disk is full" in result.output, result.output
    assert _snapshot(run) == before
    assert sorted(p.name for p in run.parent.iterdir()) == ["tiny"]  # no .tiny.new with its checkpoints


def test_discard_takes_back_only_what_the_run_wrote(tmp_path: Path) -> None:
    """A folder that is not a run keeps what it held before; a folder with a checkpoint keeps everything."""
    runs = tmp_path / "runs"
    mine = runs / "mine"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("mine")
    folder = RunFolder(runs, "mine")
    folder.start(force=False, resume=False)  # not a run (no resume.safetensors): written in place
    (mine / "index.json").write_text("{}")
    (mine / "tensorboard").mkdir()
    folder.discard()
    assert _snapshot(mine) == {"notes.txt": b"mine"} and not (mine / "tensorboard").exists()

    (mine / "resume.safetensors").write_bytes(b"state")  # a run, resumed, that stops before its next checkpoint
    resumed = RunFolder(runs, "mine")
    resumed.start(force=False, resume=True)
    (mine / "index.json").write_text("{}")
    resumed.discard()
    assert sorted(_snapshot(mine)) == ["index.json", "notes.txt", "resume.safetensors"]
    RunFolder(runs, "other").discard()  # never started: nothing to take back
    assert sorted(p.name for p in runs.iterdir()) == ["mine"]


def test_ctrl_c_before_the_first_checkpoint_of_a_force_run_keeps_the_old_run(
    finished: tuple[dict[str, Any], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A --force run cut short in its first epoch has nothing worth more than the finished run: the old run
    stays as it was and the new one is dropped (it replaced the old run with a state of zero steps). Cut
    short in its second epoch, it has replaced the old run and resumes."""
    from tests.train.test_loop import _interrupt_at

    overrides, run = finished
    before = _snapshot(run)
    with monkeypatch.context() as patch:
        _interrupt_at(patch, call=2)  # the first epoch (3 steps)
        result = runner.invoke(app, ["train", "-q", "--force", *_set({**overrides, "run.seed": 7})])
    assert result.exit_code != 0 and "interrupted before the first epoch ended" in " ".join(result.output.split())
    assert _snapshot(run) == before
    assert sorted(p.name for p in run.parent.iterdir() if not p.name.endswith(".lock")) == ["tiny"]
    again = {**overrides, "run.seed": 7, "optim.epochs": 2}
    with monkeypatch.context() as patch:
        _interrupt_at(patch, call=5)  # the second epoch: the new run has its first checkpoint
        result = runner.invoke(app, ["train", "-q", "--force", *_set(again)])
    assert f"continue with: vitc train --resume {run}" in " ".join(result.output.split()), result.output
    assert json.loads((run / "config.json").read_text())["run"]["seed"] == 7
    assert runner.invoke(app, ["train", "-q", "--resume", *_set(again)]).exit_code == 0


def test_a_folder_holding_only_a_best_checkpoint_is_a_run_that_is_not_overwritten(tmp_path: Path) -> None:
    """A folder with best.safetensors is a run folder to eval, export and info; training took it for a fresh
    folder (no resume.safetensors) and wrote its checkpoints over the one there without --force. The refusal
    offers no --resume, which has nothing to continue from there (a kill between the first epoch's checkpoints
    and its resume state leaves such a folder)."""
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "best.safetensors").write_bytes(b"weights")
    with pytest.raises(VitcError, match=r"holds checkpoints but no resume state \(.*\): --force starts over"):
        RunFolder(tmp_path, "run").start(force=False, resume=False)  # not --resume: it has nothing to continue
    assert (tmp_path / "run" / "best.safetensors").read_bytes() == b"weights"


def test_a_run_refused_after_torchruns_restart_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """torchrun --max-restarts N restarts the processes with the command line that started the run: rank 0
    refused the run folder it had itself written, in words that left the restart out."""
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "resume.safetensors").write_bytes(b"")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    with pytest.raises(VitcError) as refused:
        RunFolder(tmp_path, "run").start(force=False, resume=False)
    assert str(refused.value).endswith(
        "(torchrun's restart 1 of this launch repeats its command line, which no vitc train command survives: "
        "launch with --max-restarts 0 and continue a stopped run with --resume)"
    )


def test_a_run_without_its_resume_state_is_told_to_start_over_not_to_resume(
    finished: tuple[dict[str, Any], Path],
) -> None:
    """A SIGKILL between the first epoch's checkpoints and its resume state left a folder that `vitc train` refused
    with "--resume continues it", and that --resume refused as "nothing to resume": both now say --force."""
    overrides, run_dir = finished
    (run_dir / "resume.safetensors").unlink()
    for resume in ([], ["--resume"]):
        result = runner.invoke(app, ["train", "-q", *resume, *_set(overrides)])
        said = result.output.strip()
        assert result.exit_code == 2 and len(said.splitlines()) == 1, result.output
        assert "no resume state" in said and "--force starts over" in said and "--resume continues" not in said, said
        assert f"--pretrained {run_dir / 'best.safetensors'} --name NEW starts a new run from their weights" in said
    assert (run_dir / "best.safetensors").is_file()  # nothing was removed
