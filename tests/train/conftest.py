"""A tiny, fast training configuration shared by the training tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

TINY: dict[str, Any] = {
    "model.name": "deit_micro",
    "model.args": {"depth": 1, "embed_dim": 32, "num_heads": 2},
    "data.fraction": 0.1,
    "optim.epochs": 3,
    "optim.batch_size": 32,
    "optim.warmup_epochs": 1,
    "aug.crop_scale": [1.0, 1.0],
    "run.amp": "off",  # the equivalence tests compare floats exactly; autocast has its own test
}


@pytest.fixture
def tiny(tmp_path: Path) -> dict[str, Any]:
    """Overrides for a 3-epoch, 3-steps-per-epoch run under tmp_path."""
    return {**TINY, "model.args": dict(TINY["model.args"]), "run.out_dir": str(tmp_path / "runs"), "run.name": "tiny"}
