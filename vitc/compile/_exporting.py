"""Whether torch.export is tracing, on every supported torch.

`torch.compiler.is_exporting` arrived in torch 2.5. On torch 2.4 vitc keeps its own flag, raised
around the one torch.export call it makes (`vitc.compile.program.export_with_free_batch`), so a
module that records another graph for export sees the same answer on both.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["exporting", "is_exporting"]

_raised = [False]  # torch 2.4: set while export_with_free_batch traces (dynamo reads it as a constant)


def _own_flag() -> bool:
    """torch 2.4's stand-in for torch.compiler.is_exporting."""
    return _raised[0]


is_exporting = getattr(torch.compiler, "is_exporting", _own_flag)


@contextmanager
def exporting() -> Iterator[None]:
    """The block is a torch.export trace (only torch 2.4 needs telling: newer torch sets its own flag)."""
    before = _raised[0]
    _raised[0] = True
    try:
        yield
    finally:
        _raised[0] = before
