"""Data- and length-dependent defaults: flip on for photos, off for digits; warm-up capped; printed and recorded."""

from __future__ import annotations

import json
from typing import Any

import pytest

from vitc.errors import VitcError
from vitc.train.config import load_config
from vitc.train.defaults import resolve_defaults


@pytest.mark.parametrize(("data", "flip"), [("digits", False), ("cifar10", True), ("imagefolder", True)])
def test_flip_follows_the_data(data: str, flip: bool) -> None:
    cfg = load_config(None, {"data.name": data, "data.dir": None if data == "digits" else "/data"})
    assert cfg.aug.flip is None  # open until the run starts
    notes = resolve_defaults(cfg)
    assert cfg.aug.flip is flip
    assert f"aug.flip = {str(flip).lower()} (default for {data}" in notes[0]


def test_explicit_flip_is_kept_and_typed() -> None:
    cfg = load_config(None, {"data.name": "cifar10", "data.dir": "/data", "aug.flip": False})
    notes = resolve_defaults(cfg)
    assert cfg.aug.flip is False and not any("aug.flip" in n for n in notes)
    with pytest.raises(VitcError, match="expects bool"):
        load_config(None, {"aug.flip": 1})


@pytest.mark.parametrize(("epochs", "warmup"), [(1, 0), (3, 0), (5, 1), (10, 2), (15, 3), (300, 3)])
def test_default_warmup_is_capped_at_a_fifth_of_the_run(epochs: int, warmup: int) -> None:
    cfg = load_config(None, {"optim.epochs": epochs})
    notes = resolve_defaults(cfg)
    assert cfg.optim.warmup_epochs == warmup
    of = f"{epochs} epoch{'s' * (epochs != 1)}"  # "of 1 epochs" before
    assert f"optim.warmup_epochs = {warmup} (default 3, at most 20% of {of})" in notes


def test_explicit_warmup_is_kept() -> None:
    cfg = load_config(None, {"optim.epochs": 3, "optim.warmup_epochs": 2})
    assert resolve_defaults(cfg) == ["aug.flip = false (default for digits: mirrored digits are other glyphs)"]
    assert cfg.optim.warmup_epochs == 2
    with pytest.raises(VitcError, match="must not be negative"):
        load_config(None, {"optim.warmup_epochs": -1})


def test_a_run_prints_and_records_its_defaults(tiny: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    from vitc.train.loop import train

    overrides = {k: v for k, v in tiny.items() if k != "optim.warmup_epochs"} | {"optim.epochs": 1}
    result = train(load_config(None, overrides), show_progress=True)
    out = capsys.readouterr().out
    assert "default: aug.flip = false (default for digits" in out
    assert "default: optim.warmup_epochs = 0 (default 3, at most 20% of 1 epoch)" in out
    saved = json.loads((result.run_dir / "config.json").read_text())
    assert saved["aug"]["flip"] is False and saved["optim"]["warmup_epochs"] == 0
    assert result.history[0]["lr"] < 1e-3  # no warm-up: the cosine has already decayed from the base lr
