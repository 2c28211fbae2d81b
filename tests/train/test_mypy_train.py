"""mypy --strict on training's setup (vitc.train.setup, vitc.train.network): the `Run` a loop step reads and
the steps that build it are typed precisely, so a field passed the wrong thing is caught before a run."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIG = """[mypy]
strict = True
python_version = 3.10
follow_imports = silent
# torch declares some of its own functions untyped (Tensor.backward)
disallow_untyped_calls = False
"""


@pytest.mark.slow
def test_mypy_strict_train_setup(tmp_path: Path) -> None:
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is not installed")
    config = tmp_path / "mypy.ini"
    config.write_text(CONFIG)
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(config), "--cache-dir", str(tmp_path / "cache"),
         "vitc/train/setup.py", "vitc/train/network.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
