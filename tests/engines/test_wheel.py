"""The Jetson install: the wheel `pip wheel .` builds installs without torch and serves `vitc info` and
`vitc bench --engine` (the README's install line for devices where vitc is not on PyPI)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import sys
site = sys.argv[1]
sys.path.insert(0, site)  # the installed wheel, ahead of the checkout
sys.modules["torch"] = None  # any `import torch` now raises ImportError, as on a Jetson without it
import json
import vitc
from typer.testing import CliRunner
from vitc.cli.main import app
assert vitc.__file__.startswith(site), vitc.__file__
runner = CliRunner()
info = runner.invoke(app, ["info", sys.argv[2], "--json"])
bench = runner.invoke(app, ["bench", "--engine", sys.argv[2], "--batch", "1", "-n", "2", "--warmup", "1"])
torch = sorted(m for m in sys.modules if m.split(".")[0] == "torch" and sys.modules[m] is not None)
print(json.dumps({"info": [info.exit_code, info.output], "bench": [bench.exit_code, bench.output], "torch": torch}))
"""


def _pip(*args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


@pytest.mark.slow
def test_the_wheel_installs_and_runs_without_torch(tiny_onnx: Path, tmp_path: Path) -> None:
    source = tmp_path / "src"  # a copy: building writes build/ and vitc.egg-info next to the sources
    shutil.copytree(ROOT / "vitc", source / "vitc", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    _pip("wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", str(tmp_path / "dist"), str(source))
    (wheel,) = (tmp_path / "dist").glob("vitc-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        metadata = archive.read(next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))).decode()
        assert "vitc/models/zoo_stats.json" in archive.namelist()  # package data travels with it
    core = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:") and "extra ==" not in line]
    assert core and not any("torch" in line for line in core), core

    site = tmp_path / "site"
    _pip("install", "--no-deps", "--no-index", "-q", "--target", str(site), str(wheel))
    assert (site / "bin" / "vitc").is_file()  # the console script
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(site), str(tiny_onnx)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["info"][0] == 0 and json.loads(result["info"][1])["kind"] == "onnx", result["info"][1]
    assert result["bench"][0] == 0, result["bench"][1]
    assert result["torch"] == []
