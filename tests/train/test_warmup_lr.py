"""optim.warmup_lr (timm's --warmup-lr): where the warm-up starts, checked, recorded and compared on resume; unset,
the schedule is vitc's own, step for step."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from vitc.cli.main import app
from vitc.cli.train import resumed_with
from vitc.errors import VitcError
from vitc.train.config import TrainConfig, load_config
from vitc.train.defaults import resolve_defaults, resolve_for_data
from vitc.train.optim import lr_at
from vitc.train.report import lr_schedule

runner = CliRunner()
TOTAL, WARMUP, BASE, MIN = 100, 10, 1e-3, 1e-5


def _set(overrides: dict[str, Any]) -> list[str]:
    return [arg for key, value in overrides.items() for arg in ("--set", f"{key}={json.dumps(value)}")]


def test_warmup_starts_at_warmup_lr_and_reaches_lr_at_the_warmup_end() -> None:
    at = [lr_at(s, TOTAL, WARMUP, BASE, MIN, warmup_lr=1e-6) for s in range(TOTAL)]
    assert at[0] == 1e-6  # timm's first step: the warm-up rate itself
    assert at[5] == pytest.approx(1e-6 + (BASE - 1e-6) / 2)  # half way, linearly
    assert at[WARMUP - 1] == pytest.approx(1e-6 + (BASE - 1e-6) * 9 / 10) and at[WARMUP - 1] < BASE
    assert at[WARMUP] == BASE  # the cosine starts at the peak
    assert all(a < b for a, b in itertools.pairwise(at[: WARMUP + 1]))
    assert at[WARMUP:] == [lr_at(s, TOTAL, WARMUP, BASE, MIN) for s in range(WARMUP, TOTAL)]  # the cosine unchanged


def test_warmup_lr_of_zero_and_of_lr() -> None:
    assert lr_at(0, TOTAL, WARMUP, BASE, MIN, warmup_lr=0.0) == 0.0
    assert lr_at(5, TOTAL, WARMUP, BASE, MIN, warmup_lr=0.0) == pytest.approx(BASE / 2)
    assert {lr_at(s, TOTAL, WARMUP, BASE, MIN, warmup_lr=BASE) for s in range(WARMUP + 1)} == {BASE}  # no warm-up


def test_a_default_run_keeps_its_schedule() -> None:
    """Unset (the default, which config.json records as null), step s < warm-up trains at lr * (s + 1) / warmup:
    the schedule every earlier run trained with."""
    cfg = TrainConfig()
    assert cfg.optim.warmup_lr is None and cfg.to_dict()["optim"]["warmup_lr"] is None
    assert lr_at(0, TOTAL, WARMUP, BASE, MIN) == BASE / WARMUP
    assert lr_at(4, TOTAL, WARMUP, BASE, MIN) == BASE * 5 / WARMUP
    assert lr_at(WARMUP - 1, TOTAL, WARMUP, BASE, MIN) == BASE
    assert lr_at(WARMUP, TOTAL, WARMUP, BASE, MIN) == BASE
    planned = lr_schedule(TOTAL, WARMUP, BASE, MIN, steps_per_epoch=5, warmup_lr=cfg.optim.warmup_lr)
    assert planned == lr_schedule(TOTAL, WARMUP, BASE, MIN, steps_per_epoch=5)
    assert planned[0] == (0.2, BASE / WARMUP)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"optim.warmup_lr": -1e-6}, r"^config key optim.warmup_lr must not be negative, got -1e-06$"),
        ({"optim.warmup_lr": "1e-6"}, r"^config key optim.warmup_lr expects float \| None, got '1e-6'$"),
        (
            {"optim.lr": 1e-3, "optim.warmup_lr": 0.01, "optim.warmup_epochs": 2},
            r"^config key optim.warmup_lr must be at most optim.lr \(0.001\), the rate the warm-up rises to, "
            r"got 0.01$",
        ),
    ],
)
def test_bad_warmup_lr_is_one_clear_line(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(VitcError, match=message):
        load_config(None, overrides)


def test_warmup_lr_above_a_default_lr_is_refused_once_the_lr_is_set() -> None:
    cfg = load_config(None, {"optim.warmup_lr": 0.01})  # lr unset: 1e-3 from scratch, fitted when fine-tuning
    resolve_defaults(cfg)  # as every run, first: a warm-up of 3 epochs (of 40), the lr still unset
    with pytest.raises(VitcError, match=r"^config key optim.warmup_lr must be at most optim.lr \(0.001\)"):
        resolve_for_data(cfg, n_train=1000)


def test_warmup_lr_above_lr_is_refused_once_a_default_warmup_is_set() -> None:
    cfg = load_config(None, {"optim.epochs": 10, "optim.lr": 1e-3, "optim.warmup_lr": 0.01})  # warm-up: default
    with pytest.raises(VitcError, match=r"^config key optim.warmup_lr must be at most optim.lr \(0.001\)"):
        resolve_defaults(cfg)  # 2 epochs of warm-up (a fifth of 10)


@pytest.mark.parametrize(
    "overrides",
    [
        {"optim.lr": 1e-4, "optim.warmup_lr": 1e-3, "optim.warmup_epochs": 0},  # no warm-up, said so
        {"optim.epochs": 1, "optim.warmup_lr": 0.01},  # the default warm-up of one epoch's run is none; lr default
    ],
)
def test_warmup_lr_without_a_warmup_is_taken(overrides: dict[str, Any]) -> None:
    """Above optim.lr it was refused as "must be at most optim.lr, the rate the warm-up rises to" where there is
    no warm-up for it to start; it has no effect there, as timm ignores --warmup-lr with --warmup-epochs 0."""
    cfg = load_config(None, overrides)
    resolve_defaults(cfg)
    resolve_for_data(cfg, n_train=1000)
    assert cfg.optim.warmup_epochs == 0 and cfg.optim.warmup_lr == overrides["optim.warmup_lr"]
    assert cfg.optim.lr is not None
    schedule = [lr_at(s, TOTAL, 0, cfg.optim.lr, MIN, cfg.optim.warmup_lr) for s in range(TOTAL)]
    assert schedule == [lr_at(s, TOTAL, 0, cfg.optim.lr, MIN) for s in range(TOTAL)] and schedule[0] == cfg.optim.lr


def test_bad_warmup_lr_through_the_cli_is_exit_2(tmp_path: Path) -> None:
    for args, message in [
        (["--set", "optim.warmup_lr=-1"], "error: config key optim.warmup_lr must not be negative, got -1.0"),
        (["--lr", "1e-4", "--set", "optim.warmup_lr=0.001"], "error: config key optim.warmup_lr must be at most"),
    ]:
        result = runner.invoke(app, ["train", *args, "--set", f"run.out_dir={tmp_path}"])
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(message), result.output


def test_a_run_trains_with_it_records_it_and_a_resume_says_its_change(tiny: dict[str, Any]) -> None:
    """One epoch of 3 steps, all warm-up: the last trains at 1e-4 + (1e-3 - 1e-4) * 2/3 (unset: 1e-3)."""
    tiny |= {"optim.epochs": 1, "optim.lr": 1e-3, "optim.warmup_lr": 1e-4}
    result = runner.invoke(app, ["train", "-q", *_set(tiny)])
    assert result.exit_code == 0, result.output
    run = Path(tiny["run.out_dir"]) / "tiny"
    assert json.loads((run / "config.json").read_text())["optim"]["warmup_lr"] == 1e-4
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["lr"] == pytest.approx(1e-4 + 9e-4 * 2 / 3) == lr_at(2, 3, 3, 1e-3, 1e-5, 1e-4)
    resumed = runner.invoke(app, ["train", "--resume", str(run), "--epochs", "2", "--set", "optim.warmup_lr=2e-4"])
    assert resumed.exit_code == 0, resumed.output
    assert "resumed with optim.warmup_lr = 0.0002 (was 0.0001)" in resumed.output
    assert json.loads((run / "config.json").read_text())["optim"]["warmup_lr"] == 2e-4


def test_a_run_recorded_before_the_key_resumes_unchanged() -> None:
    """config.json of a run from before optim.warmup_lr lacks it: resumed, nothing is said to have changed."""
    before = TrainConfig().to_dict()
    del before["optim"]["warmup_lr"]
    assert resumed_with(before, TrainConfig().to_dict()) == []
    after = TrainConfig()
    after.optim.warmup_lr = 1e-6
    assert resumed_with(before, after.to_dict()) == ["optim.warmup_lr = 1e-06 (was None)"]
