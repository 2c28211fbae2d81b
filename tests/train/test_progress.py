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
        "epoch 2/4  step 3/6 (50%)  loss 1.8000 (mean 1.9000)  lr 1.00e-03  6.2 img/s  eta 0:00:31",
        "epoch 2/4  step 5/6 (83%)  loss 1.6000 (mean 1.8000)  lr 1.00e-03  5.2 img/s  eta 0:00:12",
    ]


def test_a_slow_runs_rate_keeps_a_decimal(monkeypatch: pytest.MonkeyPatch) -> None:
    """64 images in 200 s read "0 img/s" (and the run summary "train img/s 1"): below 10 a rate keeps one decimal,
    from 10 up whole numbers, in the progress line and the summary table alike (vitc._text.rate)."""
    from vitc._text import rate

    (line,) = _log_of(30.0, [0.0, 200.0], monkeypatch)
    assert "  0.3 img/s  " in line, line
    assert [rate(x) for x in (0.0, 0.04, 0.32, 1.26, 9.94, 10.4, 1234.5)] == [
        "0.0", "0.0", "0.3", "1.3", "9.9", "10", "1234",
    ]  # fmt: skip


def test_interval_zero_prints_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _log_of(0.0, [0.0, 40.0, 80.0], monkeypatch) == []


def test_disabled_prints_nothing(capsys: Any) -> None:
    """A quiet run's progress, or another DDP rank's: no line, whatever the interval."""
    quiet = EpochProgress(enabled=False, every_s=1e-9)
    quiet.start(epoch=0, epochs=1, steps=2)
    quiet.advance(loss=1.0, lr=1e-3, images=8)
    assert capsys.readouterr().out == ""


def test_the_run_summary_shows_a_slow_rate_with_a_decimal(capsys: Any) -> None:
    """The summary table's "train img/s" read 1 for a run of 0.6 img/s."""
    from types import SimpleNamespace

    from vitc.cli.train import _summary

    figures = {"best_val_top1": 50.0, "train_images_per_s": 0.6, "seconds": 300.0, "run_dir": "runs/slow"}
    result = SimpleNamespace(test_split="test", test={"top1": 50.0}, val_precision="fp32", history=[{}], **figures)
    _summary("convit_tiny", result)  # type: ignore[arg-type]
    rows = [line for line in capsys.readouterr().out.splitlines() if "50.00%" in line]
    assert len(rows) == 1 and " 0.6 " in rows[0], rows
