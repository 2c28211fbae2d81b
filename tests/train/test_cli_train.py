"""`vitc train` and `vitc eval` through the CLI: a tiny run, its evaluation, and bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from vitc.checkpoint import read_meta
from vitc.cli.main import app

runner = CliRunner()


def _set(overrides: dict[str, Any]) -> list[str]:
    return [arg for key, value in overrides.items() for arg in ("--set", f"{key}={json.dumps(value)}")]


def test_train_then_eval(tiny: dict[str, Any], tmp_path: Path) -> None:
    result = runner.invoke(app, ["train", "-q", *_set(tiny)])
    assert result.exit_code == 0, result.output
    assert "run summary" in result.output and "test top-1" in result.output
    assert "warning: this run takes 9 optimiser steps" in result.stderr  # -q: logged by the library, printed here
    # -q hides the progress and the start-up notes, not the results: each epoch's line (logged, printed here)
    assert re.findall(r"^epoch +(\d+)  train loss \d\.\d{4}  val loss", result.stdout, re.M) == ["1", "2", "3"]
    assert "default:" not in result.stdout and "step " not in result.stdout
    best = Path(tiny["run.out_dir"]) / "tiny" / "best.safetensors"
    evaluated = runner.invoke(app, ["eval", str(best), "--split", "val", "--out", str(tmp_path / "cm.png")])
    assert evaluated.exit_code == 0, evaluated.output
    assert "top-1" in evaluated.output and (tmp_path / "cm.png").stat().st_size > 1000


def test_a_log_gets_a_progress_line_in_place_of_the_bar(tiny: dict[str, Any]) -> None:
    """Output that is not a terminal (CliRunner's, a CI log) had no bar, only a blank line per epoch: it gets
    a line of the bar's figures every log.interval_s seconds (here: every step), with the epoch's running loss."""
    result = runner.invoke(app, ["train", *_set({**tiny, "optim.epochs": 1, "log.interval_s": 1e-9})])
    assert result.exit_code == 0, result.output
    step = r"^epoch 1/1  step (\d)/3 \(\d+%\)  loss \d\.\d{4} \(mean (\d\.\d{4})\)  lr (\S+)  [\d.]+ img/s  eta [\d:]+$"
    lines = re.findall(step, result.stdout, re.M)
    assert [line[0] for line in lines] == ["1", "2", "3"], result.stdout
    row = json.loads((Path(tiny["run.out_dir"]) / "tiny" / "metrics.jsonl").read_text())
    assert lines[-1][1:] == (f"{row['train_loss']:.4f}", f"{row['lr']:.2e}")  # the epoch's loss, its last step's lr
    assert f"epoch   1  train loss {row['train_loss']:.4f}" in result.stdout
    assert "default: aug.flip" in result.stdout and "\n\n" not in result.stdout.split("run summary")[0]


def test_resume_needs_no_recipe(tiny: dict[str, Any]) -> None:
    assert runner.invoke(app, ["train", "-q", *_set({**tiny, "optim.epochs": 1})]).exit_code == 0
    again = runner.invoke(
        app, ["train", "-q", "--resume", "--name", "tiny", *_set({"run.out_dir": tiny["run.out_dir"]})]
    )
    assert again.exit_code == 0 and "has finished its 1 epoch" in again.output, again.output  # nothing left to do
    ignored = runner.invoke(app, ["train", "-q", "--resume", str(Path(tiny["run.out_dir"]) / "tiny"), "--lr", "0.5"])
    assert ignored.exit_code == 0 and "not applied: optim.lr = 0.5 (was 0.001)" in ignored.output, ignored.output
    run_dir = Path(tiny["run.out_dir"]) / "tiny"
    # the folder, as timm's path; every other setting changed is said too, under -q as well (only --epochs was)
    longer = runner.invoke(app, ["train", "-q", "--resume", f"{run_dir}/", "--epochs", "2", "--set", "optim.lr=1e-4"])
    assert longer.exit_code == 0 and "resumed with optim.epochs = 2 (was 1)" in longer.output, longer.output
    assert "resumed with optim.lr = 0.0001 (was 0.001)" in longer.output, longer.output
    assert sum(line.startswith("resumed with") for line in longer.output.splitlines()) == 2
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 2
    # config.json holds the new values only: the run's records keep which epochs had the old ones
    resumed = {"epoch": 2, "step": 0, "changed": {"optim.epochs": [1, 2], "optim.lr": [0.001, 0.0001]}}
    assert json.loads((run_dir / "summary.json").read_text())["resumes"] == [resumed]
    provenance = read_meta(run_dir / "last.safetensors").provenance
    assert provenance["resumed"] == "at epoch 2 (optim.epochs 1 → 2, optim.lr 0.001 → 0.0001)"
    third = runner.invoke(app, ["train", "--resume", str(run_dir), "--epochs", "3"])  # where it goes on, said
    assert third.exit_code == 0 and f"resuming {run_dir} at epoch 3 of 3\n" in third.output, third.output
    config = run_dir / "config.json"
    recorded = config.read_text()
    shorter = runner.invoke(  # it trained nothing and rewrote config.json to 1 beside two epochs' metrics
        app, ["train", "--resume", "--name", "tiny", "--epochs", "1", *_set({"run.out_dir": tiny["run.out_dir"]})]
    )
    assert shorter.exit_code == 2 and "has trained 3 epochs: --epochs must be at least 3" in shorter.output
    assert config.read_text() == recorded


def test_a_resume_by_folder_of_a_run_named_by_its_model_changes_nothing_unsaid(tiny: dict[str, Any]) -> None:
    """`vitc train` then `vitc train --resume train/runs/convit_micro --epochs 2` said "resumed with run.name =
    'convit_micro' (was '')": the folder names the run, which its config.json left to the model's name."""
    unnamed = {k: v for k, v in tiny.items() if k != "run.name"}
    assert runner.invoke(app, ["train", "-q", *_set({**unnamed, "optim.epochs": 1})]).exit_code == 0
    run_dir = Path(tiny["run.out_dir"]) / tiny["model.name"]
    longer = runner.invoke(app, ["train", "-q", "--resume", str(run_dir), "--epochs", "2"])
    assert longer.exit_code == 0, longer.output
    assert [line for line in longer.output.splitlines() if "resumed with" in line] == [
        "resumed with optim.epochs = 2 (was 1): the learning-rate schedule is recomputed for the new length from "
        "where the run stopped"
    ]


def test_bad_input_is_one_line_and_exit_2(tmp_path: Path) -> None:
    own_runs = ["--set", f"run.out_dir={tmp_path}"]  # else `make demo`'s train/runs/convit_micro answers first
    run = tmp_path / "old"
    run.mkdir()
    (run / "config.json").write_text("{}")
    tarball = tmp_path / "cifar-10-python.tar.gz"  # the download itself, not the folder it unpacks to
    tarball.write_bytes(b"\x1f\x8b")
    unpack = f"{tarball} is a file, not a folder: unpack the archive (tar xzf {tarball}) and give the folder it makes"
    cases = [
        (["train", "--data-dir", str(tarball), *own_runs], unpack),
        (["train", "--data-dir", str(run / "config.json"), *own_runs], "config.json is a file, not a folder: give the"),
        (["train", "--set", "optim.lrr=1"], "unknown config key"),
        (["train", "--set", "aug.repeats=-3"], "config key aug.repeats must not be negative, got -3"),
        (["train", "--set", "aug.repeats=2.5"], "config key aug.repeats expects int, got 2.5"),
        (["train", "--set", "log.interval_s=-1"], "config key log.interval_s must not be negative, got -1.0"),
        (["train", "--data", "imagefolder", "--data-dir", str(tmp_path / "none"), *own_runs], "missing folder"),
        (["train", "--model", "convit_mikro"], "did you mean convit_micro"),
        (["train", str(tmp_path / "missing.toml")], "not found"),
        (["train", "--resume", "--name", "never", "--set", f"run.out_dir={tmp_path}"], "nothing to resume"),
        (["train", "--resume", str(tmp_path)], "is a folder without config.json, not a run folder"),
        (["train", str(run), "--model", "deit_micro"], f"{run} is a run folder, not a recipe: `vitc train --resume"),
        (["train", "--resume", str(run), "--name", "other"], "is run 'old' of"),
        (["train", str(run / "best.safetensors")], "is a checkpoint, not a recipe: `vitc train --pretrained"),
        (["train", "--resume", str(run / "last.safetensors"), "--name", "other"], "is run 'old' of"),
        (["eval", str(tmp_path / "missing.safetensors")], "no such file"),
        (["train", "--lr", "-1", *own_runs], "config key optim.lr must be positive"),
    ]
    for args, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output, (args, result.output)
        assert "Traceback" not in result.output


def test_a_run_folder_given_as_recipe_offers_pretrained_only_with_a_best_checkpoint(tmp_path: Path) -> None:
    """`vitc train RUN` of a run stopped in its first epoch offered `vitc train --pretrained RUN`, which then
    refused the folder: the offer now follows the checkpoint the run folder stands for (vitc._run_layout)."""
    from vitc import save_checkpoint
    from vitc.models import create_model

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    (run / "resume.safetensors").write_bytes(b"")
    result = runner.invoke(app, ["train", str(run)], env={"COLUMNS": "400"})
    assert result.exit_code == 2 and result.output.strip() == (
        f"error: {run} is a run folder, not a recipe: `vitc train --resume {run}` continues it (it has no "
        "best.safetensors to start a new run from)"
    ), result.output
    save_checkpoint(run / "best.safetensors", create_model("deit_micro", depth=1))
    result = runner.invoke(app, ["train", str(run)], env={"COLUMNS": "400"})
    assert result.exit_code == 2 and result.output.strip().endswith(
        f"`vitc train --pretrained {run}` starts a new run from its weights"
    ), result.output
    (run / "config.json").unlink()  # eval and export take it still: no folder "not a run folder" to train
    for args, said in [
        (["train", str(run)], f"error: {run} is a run folder without config.json, not a recipe TOML"),
        (["train", "--resume", str(run)], f"error: nothing to resume: {run} is a run folder without config.json"),
    ]:
        result = runner.invoke(app, args, env={"COLUMNS": "400"})
        assert result.exit_code == 2 and result.output.strip() == said, result.output


def test_a_resume_state_given_as_recipe_offers_resume_and_the_runs_best(tmp_path: Path) -> None:
    """`vitc train RUN/resume.safetensors` offered `vitc train --pretrained RUN/resume.safetensors`, which refuses
    a resume state: it now names `--resume RUN`, and RUN/best.safetensors to start anew from once there is one."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    for name in ("resume.safetensors", "resume.rank1.safetensors"):  # rank 0's, and a DDP rank's part
        (run / name).write_bytes(b"")
    said = f"error: {run / 'resume.safetensors'} is a run's resume state, not a recipe: `vitc train --resume {run}`"
    result = runner.invoke(app, ["train", str(run / "resume.safetensors")], env={"COLUMNS": "400"})
    assert result.exit_code == 2 and result.output.strip() == f"{said} continues that run", result.output
    (run / "best.safetensors").write_bytes(b"")
    for name in ("resume.safetensors", "resume.rank1.safetensors"):
        result = runner.invoke(app, ["train", str(run / name)], env={"COLUMNS": "400"})
        assert result.exit_code == 2 and result.output.strip() == (
            f"error: {run / name} is a run's resume state, not a recipe: `vitc train --resume {run}` continues that "
            f"run, `vitc train --pretrained {run / 'best.safetensors'}` starts a new run from its best weights"
        ), result.output
    result = runner.invoke(app, ["train", str(run / "best.safetensors")], env={"COLUMNS": "400"})
    assert result.exit_code == 2 and result.output.strip() == (
        f"error: {run / 'best.safetensors'} is a checkpoint, not a recipe: "
        f"`vitc train --pretrained {run / 'best.safetensors'}` starts a new run from it"
    ), result.output


def test_timms_training_flags_set_the_config(tiny: dict[str, Any]) -> None:
    """timm's `-b 16 --lr 2e-3 --seed 3` answered "No such option: --lr (Possible options: --help)": only
    --set optim.lr=... took them."""
    settings = {k: v for k, v in tiny.items() if k != "optim.batch_size"}
    result = runner.invoke(
        app, ["train", "-q", *_set({**settings, "optim.epochs": 1}), "-b", "16", "--lr", "2e-3", "--seed", "3"]
    )
    assert result.exit_code == 0, result.output
    config = json.loads((Path(tiny["run.out_dir"]) / "tiny" / "config.json").read_text())
    assert (config["optim"]["batch_size"], config["optim"]["lr"], config["run"]["seed"]) == (16, 2e-3, 3)


def test_a_second_run_needs_force(tiny: dict[str, Any]) -> None:
    args = ["train", "-q", *_set({**tiny, "optim.epochs": 1})]
    assert runner.invoke(app, args).exit_code == 0
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "--force starts over" in again.output
    assert runner.invoke(app, [*args, "--force"]).exit_code == 0


def test_rgb_weights_fine_tune_a_one_channel_model(tiny: dict[str, Any], tmp_path: Path) -> None:
    """`vitc train --pretrained W --set model.args.in_chans=1` with RGB weights: the patch embedding is adapted
    (summed over RGB, as timm's load_pretrained), the line says so, and the run trains on grey digits."""
    import torch

    from vitc.checkpoint import read_meta
    from vitc.models import create_model

    weights = tmp_path / "rgb.pth"
    torch.save(create_model("deit_micro", **tiny["model.args"]).state_dict(), weights)
    settings = {**tiny, "optim.epochs": 1, "model.args": {**tiny["model.args"], "in_chans": 1}}
    result = runner.invoke(app, ["train", "--pretrained", str(weights), *_set(settings)])
    assert result.exit_code == 0, result.output
    assert "patch_embed.proj.weight: 3-channel (RGB) weights adapted to in_chans=1, summed over" in result.output
    meta = read_meta(Path(tiny["run.out_dir"]) / "tiny" / "best.safetensors")
    assert meta.cfg.input_size[0] == 1 and meta.cfg.mean == (0.5,) and meta.args["in_chans"] == 1


def test_a_model_that_pools_nothing_is_refused_before_training(tiny: dict[str, Any]) -> None:
    settings = {**tiny, "model.args": {**tiny["model.args"], "global_pool": ""}}
    result = runner.invoke(app, ["train", *_set(settings)])
    assert result.exit_code == 2 and "model.args: global_pool='' gives every token's logits" in result.output
    assert not (Path(tiny["run.out_dir"]) / "tiny" / "best.safetensors").exists()


def test_a_data_dir_and_out_dir_under_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--data-dir=~/photos` said `missing folder ~/photos` of a folder that exists, and `--set run.out_dir=~/runs`
    would have made `./~/runs/`: each is read where the shell would have expanded it. A folder with val/ but no
    train/ is refused before any data is loaded, naming the folder vitc looked at."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "photos" / "val" / "a").mkdir(parents=True)
    result = runner.invoke(app, ["train", "-q", "--data-dir=~/photos", "--set", "run.out_dir=~/runs"])
    assert result.exit_code == 2
    assert f"{tmp_path / 'photos'}" in result.output and "missing folder ~" not in result.output, result.output
    assert not (tmp_path / "~").exists()
