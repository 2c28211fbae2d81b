"""Root of the `vitc` CLI. Each command lives in its own module and imports heavy packages lazily.

typer evaluates every command's annotations when it builds the app, also on Python 3.8 (JetPack 5):
so the CLI modules write `Optional[X]`/`List[X]` and `typing_extensions.Annotated` in command
signatures (ruff lints vitc/cli as py38 with keep-runtime-typing; see pyproject.toml).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import signal
import sys
from types import FrameType, ModuleType
from typing import Any, Optional

import typer
from typing_extensions import Annotated

from vitc import __version__
from vitc._lazy import require_training
from vitc._signals import sigterm_as_ctrl_c, stop_said, stop_signals_ignored
from vitc.cli import bench as bench_cli
from vitc.cli import build as build_cli
from vitc.cli import check as check_cli
from vitc.cli import compile as compile_cli
from vitc.cli import doctor as doctor_cli
from vitc.cli import eval as eval_cli
from vitc.cli import export as export_cli
from vitc.cli import import_ as import_cli
from vitc.cli import info as info_cli
from vitc.cli import inspect as inspect_cli
from vitc.cli import models as models_cli
from vitc.cli import predict as predict_cli
from vitc.cli import train as train_cli
from vitc.cli._console import tolerate_narrow_encodings
from vitc.cli._errors import DEBUG_HELP, F, evaluated, handle_errors, print_error, set_debug, stderr

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
@evaluated
def root(
    debug: Annotated[bool, typer.Option("--debug", help=DEBUG_HELP)] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """vitc: a compiler-oriented deployment pipeline for convolutional vision transformers."""
    set_debug(debug)


def training(name: str, fn: F) -> F:
    """A training-side command: one line when Python < 3.10 (JetPack 5) or torch is missing, before any import."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        require_training(f"vitc {name}")
        return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


app.command("models")(handle_errors(models_cli.models))
for _name, _fn in (
    ("import", import_cli.import_),
    ("train", train_cli.train),
    ("inspect", inspect_cli.inspect),
    ("compile", compile_cli.compile_),
    ("export", export_cli.export),
):
    app.command(_name)(handle_errors(training(_name, _fn)))
app.command("eval")(handle_errors(eval_cli.evaluate))  # an engine needs no torch: checked inside
app.command("check")(handle_errors(check_cli.check))
app.command("build")(handle_errors(build_cli.build))
app.command("bench")(handle_errors(bench_cli.bench))
app.command("predict")(handle_errors(predict_cli.predict))
app.command("doctor")(handle_errors(doctor_cli.doctor))
app.command("info")(handle_errors(info_cli.info))


def main() -> None:
    """The console entry point. A usage error click finds (an option's value of the wrong type or out of
    range, a missing argument, an unknown option) is one line and exit code 2, as vitc's own errors are;
    typer would draw it in a box of five or six lines. Ctrl-C ends any command with 130 and nothing more
    to say, during the command (typer's own catch, or ours) and after it (`_quiet_ctrl_c_at_exit`). SIGTERM
    is taken as Ctrl-C (`vitc._signals.sigterm_as_ctrl_c`), so that what a command was writing is removed,
    and ends it with 143 and one line, as it ends `vitc train` (whose own handler says more while it trains).
    Everything else ends as click ends it."""
    tolerate_narrow_encodings()
    with sigterm_as_ctrl_c() as sigterm:
        try:
            code = _run()
        except KeyboardInterrupt:  # outside typer's catch, which makes Exit(130) of one within the command
            code = 130
    if code == 130 and sigterm.received:
        signum = sigterm.received[0]
        print_error(stop_said(signum), 128 + signum, said_elsewhere=_said_elsewhere(stop_said(signum)))
        code = 128 + signum
    _quiet_ctrl_c_at_exit()
    sys.exit(code)


def _said_elsewhere(line: str) -> bool:
    """Another process of this machine prints `line`, a stop's: under torchrun a SIGTERM reaches every process alike
    (torchrun stopping its workers as one ended, Slurm's preemption), and each printed it outside the epochs (setup,
    as the run ends), where training's own stop line is printed once per machine (vitc.train.peers.first_to_say,
    counted on torchrun's store). Asked only where torch is loaded already, as `vitc train`'s processes have it:
    every other command stays torch-free."""
    if "torch" not in sys.modules:
        return False
    from vitc.train.peers import first_to_say

    with stop_signals_ignored():  # the line is said (or left to another process) whatever comes meanwhile
        return not first_to_say(line)


def _run() -> int:
    """The command's exit code."""
    click = _click_exceptions()
    try:
        code = app(standalone_mode=False)
    except click.UsageError as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # `vitc` or a group alone: the help, as click shows it
            exc.show()
            return int(exc.exit_code)
        command = exc.ctx.command_path if exc.ctx is not None else _command_given()  # a parser error has no ctx
        # the command line is every process's under torchrun: printed once per machine
        print_error(f"{exc.format_message()} (see `{command} --help`)", exc.exit_code, every_process=True)
        return int(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        return int(exc.exit_code)
    except Exception as exc:  # typer keeps its Abort (end of input at a prompt) apart from click's exceptions
        if type(exc).__name__ != "Abort":
            raise
        if isinstance(exc.__cause__, KeyboardInterrupt):  # Ctrl-C, which typer 0.12 made an Abort (0.15 an Exit(130))
            return 130
        stderr.print("Aborted!")
        return 1
    return code if isinstance(code, int) else 0


def _quiet_ctrl_c_at_exit() -> None:
    """From the first of the exit's callbacks on (registered last, it runs first), a Ctrl-C ends the process at once
    with 130 and nothing more: it raised KeyboardInterrupt in the callback it fell in (torch's libraries take a moment
    to unload after an export), which Python printed as `Exception ignored in atexit callback … KeyboardInterrupt`
    before exiting with the command's 0, as if nothing had been pressed. Not at once: a test or program that runs
    `main` in its own process keeps its Ctrl-C until it exits."""
    atexit.unregister(_exit_on_ctrl_c)
    atexit.register(_exit_on_ctrl_c)


def _exit_on_ctrl_c() -> None:
    for stream in (sys.stdout, sys.stderr):  # what the command printed is out before a Ctrl-C can end the process
        with contextlib.suppress(Exception):
            stream.flush()
    with contextlib.suppress(ValueError):  # not the main thread: signals are not Python's to set there
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # an embedding program's own is kept
            signal.signal(signal.SIGINT, _interrupted)


def _interrupted(signum: int, frame: Optional[FrameType]) -> None:
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    os._exit(128 + signum)


def _command_given() -> str:
    """`vitc COMMAND` as given on the command line, for an error click raises without its context."""
    names = {command.name or command.callback.__name__ for command in app.registered_commands if command.callback}
    given = next((arg for arg in sys.argv[1:] if arg in names), None)
    return f"vitc {given}" if given else "vitc"


def _click_exceptions() -> ModuleType:
    """The exceptions of the click typer runs on: its own copy from typer 0.22 (`typer._click`), else click's."""
    try:
        from typer._click import exceptions  # type: ignore[import-not-found]
    except ImportError:
        from click import exceptions
    return exceptions


if __name__ == "__main__":  # `python -m vitc.cli.main`, as torchrun launches it
    main()
