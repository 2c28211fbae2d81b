"""The progress of an epoch where the output is not a terminal: a line at most every log.interval_s seconds."""

from __future__ import annotations

import io
from typing import Any

import pytest

from vitc._terminal import PlainConsole
from vitc.train import progress as progress_module
from vitc.train.progress import EpochProgress


def _log_of(every_s: float, times: list[float], monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The lines an epoch of len(times) - 1 steps prints to a file, the clock reading `times` (its start first)."""
    clock = iter(times)
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: next(clock))
    out = io.StringIO()
    shown = EpochProgress(console=PlainConsole(file=out), show_top5=False, every_s=every_s)
    shown.start(epoch=1, epochs=4, steps=len(times) - 1)
    for step in range(len(times) - 1):
        shown.show_loss(2.0 - step / 10, 2.0 - step / 20)
        shown.advance(loss=None, lr=1e-3, images=64)
    shown.finish()
    return out.getvalue().splitlines()


def test_a_line_at_most_every_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    """Steps ending at 10, 20, 31, 40, 62 and 70 s: lines at 31 s and 62 s (30 s apart at least), none at the others,
    and no blank line (Rich's bar, drawn to a file, left one)."""
    lines = _log_of(30.0, [0.0, 10.0, 20.0, 31.0, 40.0, 62.0, 70.0], monkeypatch)
    assert lines == [
        "epoch 2/4  step 3/6 (50%)  loss 1.8000 (mean 1.9000)  lr 1.00e-03  6 img/s  eta 0:00:31",
        "epoch 2/4  step 5/6 (83%)  loss 1.6000 (mean 1.8000)  lr 1.00e-03  5 img/s  eta 0:00:12",
    ]


def test_interval_zero_prints_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _log_of(0.0, [0.0, 40.0, 80.0], monkeypatch) == []


def test_disabled_prints_nothing(capsys: Any) -> None:
    """A quiet run's progress, or another DDP rank's: no line, whatever the interval."""
    quiet = EpochProgress(enabled=False, every_s=1e-9)
    quiet.start(epoch=0, epochs=1, steps=2)
    quiet.advance(loss=1.0, lr=1e-3, images=8)
    assert capsys.readouterr().out == ""
