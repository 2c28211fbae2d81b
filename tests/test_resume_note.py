"""`vitc info RUN/resume.safetensors` on a run with nothing left to train said "continues it at epoch 4 of 3"."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vitc.cli.main import app


def _note(tmp_path: Path, epochs_done: int, of: int, stopped_early: bool = False) -> str:
    torch = pytest.importorskip("torch")  # writing a resume file is the training side's
    from vitc.models import create_model
    from vitc.train.state import TrainState, save_state

    model = create_model("deit_micro", depth=1)
    history = [{"epoch": e + 1} for e in range(epochs_done)]
    history[-1]["stopped_early"] = stopped_early
    state = TrainState(epoch=epochs_done, global_step=10 * epochs_done, best_top1=50.0, history=history)
    info = {"model": "deit_micro", "args": {"depth": 1}, "config": {"optim": {"epochs": of}}, "classes": ["a", "b"]}
    path = tmp_path / "run" / "resume.safetensors"
    path.parent.mkdir(exist_ok=True)
    save_state(path, state, model, torch.optim.AdamW(model.parameters()), None, {}, info)
    result = CliRunner().invoke(app, ["info", str(path), "--json"])
    assert result.exit_code == 0, result.output
    return str(json.loads(result.output)["note"])


def test_a_finished_run_is_said_finished_with_how_to_train_it_longer(tmp_path: Path) -> None:
    note = _note(tmp_path, 3, 3)
    assert "epoch 4 of 3" not in note
    assert note.startswith(
        f"the run finished its 3 epochs: `vitc train --resume {tmp_path / 'run'} --epochs N` (N > 3)"
    )


def test_a_run_stopped_by_patience_says_how_to_train_the_rest(tmp_path: Path) -> None:
    note = _note(tmp_path, 2, 5, stopped_early=True)
    assert note.startswith("the run stopped early after epoch 2 of 5 (optim.patience)")
    assert "--set optim.patience=0` trains its other 3" in note


def test_an_unfinished_run_is_continued_where_it_stopped(tmp_path: Path) -> None:
    assert f"`vitc train --resume {tmp_path / 'run'}` continues it at epoch 3 of 5;" in _note(tmp_path, 2, 5)
