"""`vitc models`: the zoo as a table."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table


def models(
    pattern: Annotated[str, typer.Argument(help="Shell-style filter, e.g. 'convit*'.")] = "*",
) -> None:
    """List the registered models: family, parameters, GMACs and input size at the default resolution."""
    from vitc.models import list_models
    from vitc.models._registry import unknown_model
    from vitc.models._stats import model_stats

    table = Table(title="vitc model zoo")
    for column in ("name", "family", "params", "GMACs", "input"):
        table.add_column(column, justify="right" if column in ("params", "GMACs") else "left")
    names = list_models(pattern)
    if not names:
        raise unknown_model(pattern)
    for name in names:
        stats = model_stats(name)
        size = "x".join(str(s) for s in stats["input_size"])
        table.add_row(name, stats["family"], f"{stats['params']:,}", f"{stats['gmacs']:.3f}", size)
    Console().print(table)
