"""Every console vitc prints on, in the CLI and in the training loop alike: a `PlainConsole`.

Apart from vitc._text (plain-text helpers that need no Rich) so that the library modules reading only those
(vitc.export, vitc.pretrained) do not import Rich, whose import draws from Python's `random` stream.
"""

from __future__ import annotations

import os
from typing import Any

from rich.console import Console, ConsoleOptions, RenderResult
from rich.table import Column, Table
from rich.text import Text

from vitc._text import printable

LOG_WIDTH = 200  # columns of output that is not a terminal, unless COLUMNS says otherwise


class PlainConsole(Console):
    """A console that escapes the control characters of every string it renders (table cells, titles,
    printed text); the line breaks of vitc's own multi-line strings stay.

    Output that is not a terminal (a log file, `| tee`, CI) is LOG_WIDTH columns wide rather than Rich's
    80, so a table written there keeps its numbers instead of cutting them to "…"; a terminal keeps its
    own width, and COLUMNS (or `width=`) still wins.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if kwargs.get("width") is None and "COLUMNS" not in os.environ and not (self.is_terminal or self.is_jupyter):
            self.width = LOG_WIDTH

    def render_str(self, text: str, **kwargs: Any) -> Text:
        return super().render_str("\n".join(printable(line) for line in text.split("\n")), **kwargs)


FOLD_MIN = 12  # columns (padding included) a name column keeps when a table is narrowed to fit


class Fitted:
    """A table whose figures are never cut to "…" or dropped, however narrow the console (COLUMNS=80 in CI).

    Rich narrows every column of a table too wide for the console, numbers included: at 80 columns a long
    runner name left `vitc bench` columns empty, and short ones cut `194.3` to `194…`. Here the columns
    made with `no_wrap=True` (figures) keep their width, the others (names, paths) fold; where even that
    does not fit, each row is shown as `field value` lines instead, which fit anything ~30 columns wide.
    """

    def __init__(self, table: Table) -> None:
        self.table = table

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        table = self.table
        least = self._least_width(console, options)
        if table.width is not None or least is None or least <= options.max_width:
            yield table
        else:
            yield stacked(table)

    def _least_width(self, console: Console, options: ConsoleOptions) -> int | None:
        """The width the table needs with its names folded; None where Rich's measuring (private: a Jetson may
        have another Rich release) is not there: the table is then shown as Rich lays it out."""
        try:
            widths = [table_column_width(self.table, console, options, column) for column in self.table.columns]
            return sum(widths) + self.table._extra_width
        except (AttributeError, TypeError):
            return None


def table_column_width(table: Table, console: Console, options: ConsoleOptions, column: Column) -> int:
    """The least width of `column` (padding included) that cuts none of it: all of a no_wrap one."""
    widest = table._measure_column(console, options, column).maximum
    return widest if column.no_wrap else min(widest, FOLD_MIN)


def stacked(table: Table) -> Table:
    """`table` with one `field value` line per cell, its rows apart: the layout of a table too wide to fit."""
    out = Table(title=table.title, caption=table.caption, show_header=False)
    out.add_column("field", style="bold", no_wrap=True)
    out.add_column("value", overflow="fold")
    cells = [list(column.cells) for column in table.columns]
    for row in range(table.row_count):
        if row:
            out.add_section()
        for i, column in enumerate(table.columns):
            out.add_row(column.header, cells[i][row])
    return out
