"""A leading `~` in a path option: bash expands it only at the start of a word, so `--json=~/p.json` (and
`--set k=~/x`) reached vitc as `~/p.json`, which wrote a literal `./~/p.json` or said "no such file" of a
folder that exists. Every path-typed option and argument of every command is expanded (vitc.cli._errors.
handle_errors). Torch-free: a runtime test (Makefile RUNTIME_TESTS)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import List, Optional  # noqa: UP035 (typer reads them on Python 3.8: a runtime test)

import pytest
import typer
from typer.testing import CliRunner
from typing_extensions import Annotated  # noqa: UP035

from vitc.cli._errors import handle_errors

ROOT = Path(__file__).resolve().parents[1]


def test_path_options_and_arguments_start_at_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    got = {}

    def command(
        source: Annotated[Path, typer.Argument()],
        json_out: Annotated[Optional[Path], typer.Option("--json")] = None,  # noqa: UP045
        engine: Annotated[Optional[List[Path]], typer.Option("--engine")] = None,  # noqa: UP006, UP045
        name: Annotated[Optional[str], typer.Option("--name")] = None,  # noqa: UP045
    ) -> None:
        got.update(source=source, json=json_out, engine=engine, name=name)

    app = typer.Typer()
    app.command("x")(handle_errors(command))
    app.command("y")(handle_errors(command))  # two commands: typer keeps "x" as a subcommand
    args = ["x", "~/a.onnx", "--json=~/my runs/p.json", "--engine=~/e.plan", "--engine", "rel~/e.plan", "--name=~n"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    home = tmp_path / "home"
    assert got == {
        "source": home / "a.onnx",
        "json": home / "my runs" / "p.json",
        "engine": [home / "e.plan", Path("rel~/e.plan")],  # only a leading `~`
        "name": "~n",  # not a path: as given
    }


def test_a_real_command_reads_under_home(tmp_path: Path) -> None:
    """`vitc check ~/m.onnx` as a program that does not expand it passes it: it looked for `./~/m.onnx`."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HOME": str(tmp_path / "home")}
    script = "import sys; sys.argv[0] = 'vitc'; from vitc.cli.main import main; main()"
    done = subprocess.run(
        [sys.executable, "-c", script, "check", "~/m.onnx"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert (done.returncode, done.stderr) == (2, f"error: {tmp_path / 'home' / 'm.onnx'}: no such file\n")


def test_every_folder_option_is_a_path() -> None:
    """`vitc export --data-dir=~/imgs` and `--calib-dir=~/imgs` were str options, which the expansion of path
    options never saw: "missing folder ~/imgs". Every option naming a folder is a path, so it is expanded."""
    import inspect

    from typing_extensions import get_type_hints

    from vitc.cli.main import app

    def paths(hint: object) -> bool:
        return hint is Path or any(paths(arg) for arg in getattr(hint, "__args__", ()))

    folders = {}
    for info in app.registered_commands:
        callback = inspect.unwrap(info.callback)
        for name, hint in get_type_hints(callback).items():
            if name.endswith("_dir"):
                folders[f"{callback.__name__} --{name.replace('_', '-')}"] = paths(hint)
    assert "export --calib-dir" in folders and "train --data-dir" in folders
    assert [option for option, is_path in folders.items() if not is_path] == []
