"""mypy --strict on training's setup (vitc.train.setup, vitc.train.network): the `Run` a loop step reads and
the steps that build it are typed precisely, so a field passed the wrong thing is caught before a run."""

from __future__ import annotations

import pytest

from tests.mypy_run import STRICT_TRAIN, MypyReport


@pytest.mark.slow
def test_mypy_strict_train_setup(mypy_report: MypyReport) -> None:
    assert mypy_report.finished, mypy_report.output
    assert mypy_report.lines_of(*STRICT_TRAIN) == [], mypy_report.output
