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

    def to_markdown(self) -> str:
        """The pass table and its check, for a file beside the compiled artifact."""
        size = "x".join(str(s) for s in self.input_size)
        lines = [
            f"# vitc compile {self.model} → {self.target}",
            "",
            "| pass | fired | max abs Δ logits |",
            "|---|---:|---:|",
            *(f"| {r.name} | {r.fired} | {_diff(r.max_abs_diff)} |" for r in self.rows),
            f"| **pipeline** | {sum(r.fired for r in self.rows)} | {_diff(self.max_abs_diff)} |",
            "",
            f"Checked on {self.check_batch} random {size} input(s), tolerance {self.tolerance:g}.",
        ]
        return "\n".join(lines) + "\n"


def _diff(value: float | None) -> str:
    return "-" if value is None else f"{value:.2e}"
