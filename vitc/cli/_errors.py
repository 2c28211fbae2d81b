"""Turn VitcError into one line on stderr and exit code 2; `--debug` (before or after the command) or
VITC_DEBUG=1 shows the traceback."""

from __future__ import annotations

import functools
import inspect
import os
from typing import Any, Callable, TypeVar

import typer
from rich.table import Table
from rich.text import Text
from typing_extensions import Annotated, get_type_hints

from vitc.cli._console import console, printable
from vitc.errors import VitcError

F = TypeVar("F", bound=Callable[..., Any])
stderr = console(stderr=True)  # messages hold paths and keys from files: never markup, control characters escaped
_state = {"debug": False}
DEBUG_HELP = "Show full tracebacks (also VITC_DEBUG=1)."
# every command takes --debug too (`vitc eval X --debug`), hidden from its help: `vitc --help` lists it once
_DEBUG = inspect.Parameter(
    "debug",
    inspect.Parameter.KEYWORD_ONLY,
    default=False,
    annotation=Annotated[bool, typer.Option("--debug", hidden=True, help=DEBUG_HELP)],
)


def set_debug(enabled: bool) -> None:
    _state["debug"] = enabled


def debug_enabled() -> bool:
    return _state["debug"] or os.environ.get("VITC_DEBUG", "") not in ("", "0")


def _print_key_table(exc: VitcError) -> None:
    report = getattr(exc, "report", None)
    if report is None:
        return
    table = Table(title="state-dict mismatch", show_lines=False)
    for column in ("problem", "key", "detail"):
        table.add_column(column)
    for row in report.rows():
        table.add_row(*row)
    stderr.print(table)


def evaluated(fn: F) -> F:
    """Give `fn` its signature with the annotations evaluated, as typer reads it on every Python.

    typer evaluates `from __future__ import annotations` strings itself only on Python >= 3.10
    (inspect.signature(eval_str=True)); on 3.8 (JetPack 5) it would read `Annotated[...]` as a string
    and turn every option into a positional argument.
    """
    hints = get_type_hints(fn, include_extras=True)
    signature = inspect.signature(fn)
    params = [p.replace(annotation=hints.get(p.name, p.annotation)) for p in signature.parameters.values()]
    fn.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    return fn


def handle_errors(fn: F) -> F:
    """Wrap a command so that a VitcError ends it cleanly with exit code 2, and give it the --debug option
    that keeps the traceback, as the root's does (`vitc --debug eval X`)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, debug: bool = False, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except VitcError as exc:
            if debug or debug_enabled():
                raise
            _print_key_table(exc)
            stderr.print(Text.assemble(("error:", "bold red"), " ", printable(str(exc))), soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None

    command = evaluated(wrapper)
    signature = inspect.signature(command)
    command.__signature__ = signature.replace(parameters=[*signature.parameters.values(), _DEBUG])  # type: ignore[attr-defined]
    return command  # type: ignore[return-value]
