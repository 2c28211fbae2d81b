"""Strict state-dict loading that explains a mismatch instead of dumping PyTorch's message."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from vitc.errors import VitcError


@dataclass
class KeyReport:
    """How a state dict differs from a model: the table `vitc import` prints."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    wrong_shape: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)  # key, model, file

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.wrong_shape)

    def rows(self, limit: int = 20) -> list[tuple[str, str, str]]:
        """(problem, key, detail) rows, at most `limit` per problem."""
        rows = [("missing", k, "in the model, not in the file") for k in self.missing[:limit]]
        rows += [("unexpected", k, "in the file, not in the model") for k in self.unexpected[:limit]]
        rows += [("wrong shape", k, f"model {list(m)} vs file {list(f)}") for k, m, f in self.wrong_shape[:limit]]
        return rows

    def summary(self) -> str:
        counts = (len(self.missing), len(self.unexpected), len(self.wrong_shape))
        return "{} missing, {} unexpected, {} wrongly shaped keys".format(*counts)


class KeyMismatchError(VitcError):
    """Raised when weights do not fit a model; carries the report for a table."""

    def __init__(self, message: str, report: KeyReport) -> None:
        super().__init__(message)
        self.report = report


def compare_keys(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> KeyReport:
    expected = model.state_dict()
    report = KeyReport(
        missing=[k for k in expected if k not in state_dict],
        unexpected=[k for k in state_dict if k not in expected],
    )
    for key, value in state_dict.items():
        if key in expected and tuple(expected[key].shape) != tuple(value.shape):
            report.wrong_shape.append((key, tuple(expected[key].shape), tuple(value.shape)))
    return report


def load_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "weights") -> None:
    """Load every key with the right shape, or raise KeyMismatchError listing what differs."""
    report = compare_keys(model, state_dict)
    if not report.ok:
        name = getattr(model, "vitc_name", type(model).__name__)
        raise KeyMismatchError(f"{source} does not fit {name}: {report.summary()}", report)
    model.load_state_dict(state_dict, strict=True)
