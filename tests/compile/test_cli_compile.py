"""`vitc compile` through a local Typer app (the lead registers compile_ in vitc.cli.main)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from typer.testing import CliRunner

from vitc.checkpoint import save_checkpoint
from vitc.cli._errors import handle_errors
from vitc.cli.compile import compile_

from .conftest import build

app = typer.Typer()
app.command("compile")(handle_errors(compile_))
app.command("noop")(lambda: None)  # two commands, so `compile` stays a subcommand as in vitc.cli.main
runner = CliRunner()


def test_model_name_table_and_json(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    result = runner.invoke(app, ["compile", "convit_micro", "--target", "onnx", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "static_gpsa" in result.output and "compile+check" in result.output
    record = json.loads(out.read_text())
    assert record["target"] == "onnx" and record["source"] == "convit_micro"
    assert record["rows"][0] == {"name": "static_gpsa", "fired": 4, "max_abs_diff": record["rows"][0]["max_abs_diff"]}
    assert record["max_abs_diff"] <= 1e-4


def test_checkpoint(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "model.safetensors", build("cvt_micro"))
    result = runner.invoke(app, ["compile", str(path)])
    assert result.exit_code == 0, result.output
    assert "fold_cvt_projections" in result.output


def test_errors_exit_2(tmp_path: Path) -> None:
    for args in (["convit_micro", "--target", "tpu"], ["convit_mikro"], [str(tmp_path / "missing.safetensors")]):
        result = runner.invoke(app, ["compile", *args])
        assert result.exit_code == 2, (args, result.output)
