"""Accuracy drift between a reference and an artifact, from logits alone (numpy, no torch).

The same report is produced after `vitc export` (PyTorch FP32 vs ONNX Runtime), after `vitc build`
(reference logits stored with the export vs the TensorRT engine) and by `vitc bench --data`, so
the numbers are comparable across every step and can be computed on a Jetson.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from vitc.errors import VitcError


@dataclass(frozen=True)
class DriftReport:
    samples: int
    reference_top1: float  # percent
    top1: float  # percent
    delta_top1: float  # points, artifact − reference
    agreement: float  # percent of samples with the same top-1 class
    max_abs_diff: float
    mean_abs_diff: float
    cosine: float  # mean per-sample cosine similarity of the logit vectors

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def exceeds(self, max_drop: float) -> bool:
        """True when the artifact lost more than `max_drop` points of top-1."""
        return -self.delta_top1 > max_drop + 1e-9


def compare_logits(reference: np.ndarray, logits: np.ndarray, labels: np.ndarray) -> DriftReport:
    """Drift of `logits` against `reference` logits on samples with the given labels."""
    reference = np.asarray(reference, dtype=np.float64)
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels)
    if reference.shape != logits.shape or reference.ndim != 2 or labels.shape != (reference.shape[0],):
        raise VitcError(
            f"logit shapes differ: reference {reference.shape}, artifact {logits.shape}, labels {labels.shape}"
        )
    if reference.shape[0] == 0:
        raise VitcError("no samples to compare")
    if not np.isfinite(logits).all():
        raise VitcError("the artifact produced non-finite logits (NaN or Inf)")
    ref_pred, pred = reference.argmax(1), logits.argmax(1)
    diff = np.abs(reference - logits)
    norms = np.linalg.norm(reference, axis=1) * np.linalg.norm(logits, axis=1)
    cosine = np.sum(reference * logits, axis=1) / np.maximum(norms, 1e-12)
    ref_top1 = 100.0 * float(np.mean(ref_pred == labels))
    top1 = 100.0 * float(np.mean(pred == labels))
    return DriftReport(
        samples=int(labels.shape[0]),
        reference_top1=ref_top1,
        top1=top1,
        delta_top1=top1 - ref_top1,
        agreement=100.0 * float(np.mean(ref_pred == pred)),
        max_abs_diff=float(diff.max()),
        mean_abs_diff=float(diff.mean()),
        cosine=float(cosine.mean()),
    )
