"""`vitc models`: the zoo as a table (from the stats cache: no torch import when it is fresh)."""

from __future__ import annotations

import typer
from rich.table import Table
from typing_extensions import Annotated

from vitc._terminal import Fitted
from vitc.cli._console import console as plain_console


def models(
    pattern: Annotated[str, typer.Argument(help="Shell-style filter, e.g. 'convit*'.")] = "*",
) -> None:
    """List the registered models: family, parameters, GMACs and input size at the default resolution."""
    from vitc._model_sources import registered_names
    from vitc._zoo import zoo_stats
    from vitc.errors import unknown_model

    rows = zoo_stats(pattern)
    if not rows:
        names = registered_names()
        raise unknown_model(pattern, names, listing=f"`vitc models` without a pattern lists all {len(names)}")
    table = Table(title="vitc model zoo")
    for column in ("name", "family", "params", "GMACs", "input"):
        if column in ("params", "GMACs", "input"):  # figures whole at any width; names fold
            table.add_column(column, justify="right" if column != "input" else "left", no_wrap=True)
        else:
            table.add_column(column, overflow="fold")
    for stats in rows:
        size = "x".join(str(s) for s in stats["input_size"])
        table.add_row(stats["name"], stats["family"], f"{stats['params']:,}", f"{stats['gmacs']:.3f}", size)
    plain_console().print(Fitted(table))
