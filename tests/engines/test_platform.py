"""`vitc doctor --json` lists each GPU nvidia-smi reports, its memory included."""

from __future__ import annotations

import json
import os
from pathlib import Path

from typer.testing import CliRunner

SMI_ROW = "NVIDIA H100 80GB HBM3, 9.0, 81559, 550.54.15"


def test_doctor_lists_each_gpu_with_its_memory(tmp_path: Path, monkeypatch) -> None:
    from vitc.cli.main import app

    smi = tmp_path / "nvidia-smi"
    smi.write_text(f"#!/bin/sh\necho '{SMI_ROW}'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    result = CliRunner().invoke(app, ["doctor", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["facts"]["gpus"] == [
        {"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0", "memory_mb": 81559, "driver": "550.54.15"}
    ]
