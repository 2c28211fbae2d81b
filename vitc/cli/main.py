"""Root of the `vitc` CLI. Each command lives in its own module and imports heavy packages lazily."""

from __future__ import annotations

from typing import Annotated

import typer

from vitc import __version__
from vitc.cli import bench as bench_cli
from vitc.cli import build as build_cli
from vitc.cli import check as check_cli
from vitc.cli import compile as compile_cli
from vitc.cli import doctor as doctor_cli
from vitc.cli import export as export_cli
from vitc.cli import import_ as import_cli
from vitc.cli import info as info_cli
from vitc.cli import inspect as inspect_cli
from vitc.cli import models as models_cli
from vitc.cli import train as train_cli
from vitc.cli._errors import handle_errors, set_debug

app = typer.Typer(
    name="vitc",
    help="Train, compile, export and benchmark ConViT, CvT and SP-ViT for TensorRT.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"vitc {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks (also VITC_DEBUG=1).")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """vitc: a compiler-oriented deployment pipeline for convolutional vision transformers."""
    set_debug(debug)


app.command("models")(handle_errors(models_cli.models))
app.command("import")(handle_errors(import_cli.import_))
app.command("train")(handle_errors(train_cli.train))
app.command("eval")(handle_errors(train_cli.evaluate))
app.command("inspect")(handle_errors(inspect_cli.inspect))
app.command("compile")(handle_errors(compile_cli.compile_))
app.command("export")(handle_errors(export_cli.export))
app.command("check")(handle_errors(check_cli.check))
app.command("build")(handle_errors(build_cli.build))
app.command("bench")(handle_errors(bench_cli.bench))
app.command("doctor")(handle_errors(doctor_cli.doctor))
app.command("info")(handle_errors(info_cli.info))


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # `python -m vitc.cli.main`, as torchrun launches it
    main()
