"""The batch range of an export and its engine: one static size, or a min:opt:max profile."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vitc.errors import VitcError
from vitc.limits import MAX_BATCH


@dataclass(frozen=True)
class BatchRange:
    """An optimisation-profile batch range; static when min == opt == max."""

    min: int
    opt: int
    max: int

    def __post_init__(self) -> None:
        if not (1 <= self.min <= self.opt <= self.max <= MAX_BATCH):
            raise VitcError(
                f"batch range must satisfy 1 <= min <= opt <= max <= {MAX_BATCH}, got {self.min}:{self.opt}:{self.max}"
            )

    @property
    def static(self) -> bool:
        return self.min == self.opt == self.max

    @property
    def dynamic(self) -> bool:
        return not self.static

    @classmethod
    def parse(cls, text: str, option: str = "--batch") -> BatchRange:
        """'8' (static) or 'MIN:OPT:MAX', e.g. '1:8:32'."""
        try:
            values = [int(p) for p in text.strip().split(":")]
        except ValueError:
            raise VitcError(f"{option} expects N or MIN:OPT:MAX, e.g. 1:8:32, got {text!r}") from None
        if len(values) not in (1, 3):
            raise VitcError(f"{option} expects N or MIN:OPT:MAX, e.g. 1:8:32, got {text!r}")
        return cls(*(values * 3 if len(values) == 1 else values))

    @classmethod
    def from_options(cls, batch: int | None, dynamic: str | None) -> BatchRange:
        """`vitc export --batch N` or `--dynamic-batch MIN:OPT:MAX` (static batch 1 by default)."""
        if batch is not None and dynamic is not None:
            raise VitcError("give --batch or --dynamic-batch, not both")
        if dynamic is not None:
            return cls.parse(dynamic, "--dynamic-batch")
        return cls.parse(str(1 if batch is None else batch))

    @classmethod
    def from_dict(cls, record: Any, source: str) -> BatchRange:
        try:
            return cls(int(record["min"]), int(record["opt"]), int(record["max"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise VitcError(f"{source}: batch must be {{min, opt, max}}, got {str(record)[:80]}") from exc

    def to_dict(self) -> dict[str, int]:
        return {"min": self.min, "opt": self.opt, "max": self.max}

    def __str__(self) -> str:
        return f"{self.min}:{self.opt}:{self.max}"
