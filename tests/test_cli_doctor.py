"""`vitc doctor` on a machine without onnx and onnxruntime (a Jetson installed with `[trt-cu11]` alone): each
missing package's row names what to install, as the tensorrt row does, and the commands that need onnx have
their row."""

from __future__ import annotations

import json
import sys

import pytest
from typer.testing import CliRunner

from vitc.cli import doctor
from vitc.cli.main import app

cli = CliRunner()


@pytest.fixture
def without_onnx(monkeypatch: pytest.MonkeyPatch) -> None:
    real = doctor._version
    monkeypatch.setattr(doctor, "_version", lambda dist: None if dist == "onnx" else real(dist))
    monkeypatch.setitem(sys.modules, "onnxruntime", None)


def test_the_onnx_rows_name_their_install_and_check_and_info_have_a_row(without_onnx, monkeypatch) -> None:
    """They said `missing` alone, while the tensorrt row named its remedy; `vitc check` and `vitc info x.onnx`,
    which need onnx, were in no row of the command table."""
    monkeypatch.setenv("COLUMNS", "1000")  # one table row per line
    result = cli.invoke(app, ["doctor"])
    assert result.exit_code == 0, result.output
    rows = {
        line.split("│")[1].strip(): line.split("│")[-2].strip() for line in result.output.splitlines() if "│" in line
    }
    assert rows["onnx"] == rows["onnxruntime"] == "missing (pip install 'vitc[onnx]')"
    assert rows["check / info x.onnx"] == "missing"
    assert rows["bench / predict / eval x.onnx"] == "missing"
    commands = {row["command"]: row for row in json.loads(cli.invoke(app, ["doctor", "--json"]).output)["commands"]}
    assert commands["check / info x.onnx"]["needs"] == "onnx" and commands["check / info x.onnx"]["ok"] is False


def test_check_and_info_are_ready_where_onnx_is() -> None:
    pytest.importorskip("onnx")
    commands = {row[0]: row for row in doctor.requirements(doctor.gather())}
    assert commands["check / info x.onnx"][1:3] == ("onnx", True)
