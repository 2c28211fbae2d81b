"""TensorRT before 8.5 (JetPack 5.0.2 ships 8.4.1) is refused in one line, before any TensorRT call: `vitc doctor`
said build and bench "ready", then `vitc build` and `vitc bench` failed with `AttributeError: 'tensorrt.ICudaEngine'
object has no attribute 'num_io_tensors'` (the name-based I/O API vitc runs came with 8.5)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.engines.fakes.tensorrt_fake import API_DIR
from vitc.cli.main import app
from vitc.engines import tensorrt as T

cli = CliRunner()
JETPACK_502 = "# R35 (release), REVISION: 1.0, GCID: 31346300, BOARD: t186ref, EABI: aarch64, DATE: Thu Aug 25 2022"
ON_JETSON = (
    "error: vitc needs TensorRT 8.5 or newer (JetPack 5.1 or later on a Jetson); this machine has TensorRT 8.4.1.5 "
    "(JetPack 5.0.2): upgrade JetPack"
)
OFF_JETSON = "error: vitc needs TensorRT 8.5 or newer; this machine has TensorRT 8.4.1.5: upgrade TensorRT"


def on_jetpack_502(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An AGX Orin on L4T 35.1 (JetPack 5.0.2), without nvpmodel or a GPU clock node."""
    from vitc.engines import platform

    (tmp_path / "nv_tegra_release").write_text(JETPACK_502 + "\n")
    (tmp_path / "model").write_text("NVIDIA Jetson AGX Orin Developer Kit\x00")
    monkeypatch.setattr(platform, "TEGRA_RELEASE", tmp_path / "nv_tegra_release")
    monkeypatch.setattr(platform, "DEVICE_MODEL", tmp_path / "model")
    monkeypatch.setattr(platform, "gpu_clock_range", lambda: None)
    monkeypatch.setattr(platform, "_run", lambda cmd, timeout=10.0: None)


def error_line(*args: object) -> str:
    result = cli.invoke(app, [str(a) for a in args])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def test_build_and_the_plan_runner_refuse_tensorrt_84_on_jetpack_502(fake, export_dir, monkeypatch, tmp_path):
    """The build wrote a timing cache and then failed in its drift check; bench, predict and eval said the 8.5 plan
    must be rebuilt here (which cannot be done). Each says the one line, nothing is written, TensorRT is never
    called."""
    fake("8.5")
    plan = tmp_path / "built" / "m.plan"
    assert cli.invoke(app, ["build", str(export_dir / "model.fp32.onnx"), "--out", str(plan)]).exit_code == 0
    on_jetpack_502(monkeypatch, tmp_path)
    trt = fake("8.4")
    out = tmp_path / "engines"
    assert error_line("build", export_dir / "model.fp32.onnx", "--out", out / "m.plan") == ON_JETSON
    assert not out.exists()  # no plan, no sidecar, no timing cache
    images = tmp_path / "images"
    images.mkdir()
    pytest.importorskip("PIL.Image").new("RGB", (12, 9), (200, 30, 90)).save(images / "x.png")
    for args in (("bench", "-e", plan), ("predict", plan, images), ("eval", plan)):
        assert error_line(*args) == ON_JETSON, args
    assert list(trt._log) == []  # no TensorRT object was made: nothing logged


def test_off_a_jetson_the_line_names_tensorrt_not_jetpack(fake, tiny_onnx, tmp_path):
    fake("8.4")
    line = error_line("build", tiny_onnx, "--out", tmp_path / "m.plan")
    assert line == f"{OFF_JETSON} (pip install --upgrade tensorrt)"


def test_doctor_says_tensorrt_84_is_unsupported_not_ready(fake, monkeypatch, tmp_path):
    on_jetpack_502(monkeypatch, tmp_path)
    fake("8.4")
    monkeypatch.setenv("COLUMNS", "1000")  # one table row per line
    table = cli.invoke(app, ["doctor"])
    assert table.exit_code == 0, table.output
    rows = {
        line.split("│")[1].strip(): line.split("│")[-2].strip() for line in table.output.splitlines() if "│" in line
    }
    assert rows["tensorrt"] == "unsupported: " + ON_JETSON[len("error: ") :]
    for command in ("build", "bench / predict / eval x.plan"):
        assert rows[command] == "unsupported: TensorRT 8.4.1.5 < 8.5 (upgrade JetPack)", command
    done = cli.invoke(app, ["doctor", "--json"])
    commands = {row["command"]: row for row in json.loads(done.output)["commands"]}
    assert commands["build"]["ok"] is False
    assert commands["build"]["unsupported"] == "TensorRT 8.4.1.5 < 8.5 (upgrade JetPack)"


@pytest.mark.parametrize(("version", "refused"), [("8.4.1.5", True), ("8.2.1.8", True), ("8.5.2.2", False)])
def test_the_oldest_release_is_the_oldest_one_the_api_data_holds(version, refused):
    """vitc runs what tests/engines/trt_api/ was extracted from, 8.5 on; 8.4 is the fake made to be refused."""
    oldest = min(
        (p.stem[len("trt_") :] for p in API_DIR.glob("trt_*.json")), key=lambda v: tuple(map(int, v.split(".")))
    )
    assert T.version_text(T.OLDEST_RELEASE) == oldest == "8.5"
    assert T.too_old(version) is refused
