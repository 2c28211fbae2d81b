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
    from vitc.models._stats import model_stats

    table = Table(title="vitc model zoo")
    for column, justify in (("name", "left"), ("family", "left"), ("params", "right"), ("GMACs", "right"), ("input", "left")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for name in list_models(pattern):
        stats = model_stats(name)
        size = "x".join(str(s) for s in stats["input_size"])
        table.add_row(name, stats["family"], f"{stats['params']:,}", f"{stats['gmacs']:.3f}", size)
    Console().print(table)
