"""Turn VitcError into one line on stderr and its exit code (2 for bad input, 1 for a failed check);
`--debug` (before or after the command) or VITC_DEBUG=1 shows the traceback. Under torchrun an error every
process raises alike is printed once per machine, and each process's line is what torchrun's own summary of
the failed processes shows."""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import os
import signal
import sys
import time
from typing import Any, Callable, Optional, TypeVar

import typer
from rich.table import Table
from rich.text import Text
from typing_extensions import Annotated, get_type_hints

from vitc.cli._console import console, printable
from vitc.cli._options import expand_home
from vitc.errors import VitcError
from vitc.train.agree import prints_shared_errors

F = TypeVar("F", bound=Callable[..., Any])
stderr = console(stderr=True)  # messages hold paths and keys from files: never markup, control characters escaped
_state = {"debug": False}
DEBUG_HELP = "Show full tracebacks (also VITC_DEBUG=1)."
SILENT_WAIT_S = 10.0  # the longest a process that leaves an error's line to another waits to be stopped
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
    """Wrap a command so that a VitcError ends it cleanly with its exit code (2, or 1 for CheckFailed), give it
    the --debug option that keeps the traceback, as the root's does (`vitc --debug eval X`), and its paths' `~`
    expanded."""

    @functools.wraps(fn)
    def wrapper(*args: Any, debug: bool = False, **kwargs: Any) -> Any:
        args = tuple(expand_home(arg) for arg in args)  # every path-typed option and argument, in one place
        kwargs = {name: expand_home(value) for name, value in kwargs.items()}
        try:
            return fn(*args, **kwargs)
        except VitcError as exc:
            if debug or debug_enabled():
                raise
            _print_key_table(exc)  # a process's own (a state-dict mismatch): an agreed error has none
            print_error(str(exc), exc.exit_code, every_process=exc.every_process, said_elsewhere=exc.said_elsewhere)
            raise typer.Exit(exc.exit_code) from None
        except (ImportError, OSError):  # a torch installed but broken (a JetPack wheel without its libraries)
            why = None if debug or debug_enabled() else broken_torch()
            if why is None:
                raise
            print_error(why, 2)
            raise typer.Exit(2) from None

    command = evaluated(wrapper)
    signature = inspect.signature(command)
    command.__signature__ = signature.replace(parameters=[*signature.parameters.values(), _DEBUG])  # type: ignore[attr-defined]
    return command  # type: ignore[return-value]


def broken_torch() -> Optional[str]:
    """After an ImportError or OSError: the one line for a torch that is installed but fails to import, else None
    (another error, which keeps its traceback). Its import is tried once more, as it failed, for the reason."""
    from vitc._lazy import has_module, import_optional, needed_but_broken

    if "torch" in sys.modules or not has_module("torch"):
        return None
    _, why = import_optional("torch")
    return None if why is None else needed_but_broken("torch", why)


def print_error(message: str, code: int, every_process: bool = False, said_elsewhere: bool = False) -> None:
    """vitc's one `error:` line on stderr, for an error that ends the command with `code`. Under torchrun, an error
    `every_process` raises alike (the processes' agreed line, an error in the command line they share) is printed by
    the first process on each machine alone (vitc.train.agree.prints_shared_errors), one `said_elsewhere` by another
    process of the machine (vitc.train.peers: a stop's line, a peer's end), and every process records its line for
    torchrun's summary."""
    _record_for_torchrun(f"error: {message}")
    if said_elsewhere:  # the process that says it is stopping too, as torchrun is: no need to wait for it
        return
    if every_process and not prints_shared_errors():
        _wait_to_be_stopped(code)
        return
    stderr.print(Text.assemble(("error:", "bold red"), " ", printable(message)), soft_wrap=True)


def _wait_to_be_stopped(code: int) -> None:
    """A process that leaves the line to the first process of its machine waits for its launcher to stop it, then
    exits with `code`, silently: torchrun stops every process as soon as one has ended with an error, so one that
    ended at once stopped the process that prints the line before it had printed it, at random (no line at all).
    Stopped (SIGTERM; SIGINT from Ctrl-C), or SILENT_WAIT_S later under a launcher that stops none, it exits."""

    def leave(signum: int, frame: Any) -> None:
        raise SystemExit(code)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, leave)
    time.sleep(SILENT_WAIT_S)


def _record_for_torchrun(line: str) -> None:
    """The line in the error file torchrun gives each process (TORCHELASTIC_ERROR_FILE), which its summary of the
    failed processes (ChildFailedError) shows where it said "error_file: <N/A>" and "traceback : To enable
    traceback see: …". The layout is that of torch.distributed.elastic's ErrorHandler.record_exception (what
    `@record` writes), without the traceback it would show instead of the message; torch is not imported for it."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path:  # not under torchrun, or under one that keeps no files (its log_dir os.devnull)
        return
    record = {"message": {"message": line, "extraInfo": {"timestamp": str(int(time.time()))}}}
    with contextlib.suppress(OSError), open(path, "w", encoding="utf-8") as file:
        json.dump(record, file)
