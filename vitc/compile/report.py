"""CompileReport: what each pass did and how far the logits moved, as a table or JSON."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["TOLERANCE", "CompileReport", "PassRow"]

TOLERANCE = 1e-4  # max |Δ logits| that compile_model(check=True) accepts


@dataclass(frozen=True)
class PassRow:
    """One pass of the pipeline: how often it fired and max |Δ logits| vs the original after it."""

    name: str
    fired: int
    max_abs_diff: float | None  # None when check=False


@dataclass
class CompileReport:
    model: str
    target: str
    input_size: tuple[int, int, int]
    rows: list[PassRow] = field(default_factory=list)
    max_abs_diff: float | None = None  # whole pipeline, final model vs original
    check_batch: int = 0
    seconds: float = 0.0
    tolerance: float = TOLERANCE

    @property
    def fired(self) -> dict[str, int]:
        return {row.name: row.fired for row in self.rows}

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["input_size"] = list(self.input_size)
        return out
