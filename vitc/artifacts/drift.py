"""Accuracy drift between a reference and an artifact, from logits alone (numpy, no torch).

The same report is produced after `vitc export` (PyTorch FP32 vs ONNX Runtime), after `vitc build`
(reference logits stored with the export vs the TensorRT engine) and by `vitc bench --data`, so
the numbers are comparable across every step and can be computed on a Jetson.

Without labels (an export measured on generated inputs: a model whose classes no local data has)
the report is agreement-only, as Polygraphy compares runners on random inputs: top-1 agreement,
max |Δ| and cosine, and no top-1 (None).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from vitc.errors import VitcError


@dataclass(frozen=True)
class DriftReport:
    samples: int
    reference_top1: float | None  # percent; None without labels
    top1: float | None  # percent; None without labels
    delta_top1: float | None  # points, artifact − reference; None without labels
    agreement: float  # percent of samples with the same top-1 class
    max_abs_diff: float
    mean_abs_diff: float
    cosine: float  # mean per-sample cosine similarity of the logit vectors

    @property
    def labelled(self) -> bool:
        return self.top1 is not None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "labels": self.labelled}

    def exceeds(self, max_drop: float) -> bool:
        """True when the artifact lost more than `max_drop` points of top-1 (never without labels)."""
        return self.delta_top1 is not None and -self.delta_top1 > max_drop + 1e-9


def compare_logits(reference: np.ndarray, logits: np.ndarray, labels: np.ndarray | None) -> DriftReport:
    """Drift of `logits` against `reference` logits on samples with the given labels (None: agreement only)."""
    reference = np.asarray(reference, dtype=np.float64)
    logits = np.asarray(logits, dtype=np.float64)
    count = (reference.shape[0],) if reference.ndim else ()
    if reference.shape != logits.shape or reference.ndim != 2 or (labels is not None and np.shape(labels) != count):
        raise VitcError(
            f"logit shapes differ: reference {reference.shape}, artifact {logits.shape}, "
            f"labels {None if labels is None else np.shape(labels)}"
        )
    if reference.shape[0] == 0:
        raise VitcError("no samples to compare")
    if not np.isfinite(logits).all():
        raise VitcError("the artifact produced non-finite logits (NaN or Inf)")
    ref_pred, pred = reference.argmax(1), logits.argmax(1)
    diff = np.abs(reference - logits)
    norms = np.linalg.norm(reference, axis=1) * np.linalg.norm(logits, axis=1)
    cosine = np.sum(reference * logits, axis=1) / np.maximum(norms, 1e-12)
    ref_top1 = None if labels is None else 100.0 * float(np.mean(ref_pred == np.asarray(labels)))
    top1 = None if labels is None else 100.0 * float(np.mean(pred == np.asarray(labels)))
    return DriftReport(
        samples=int(reference.shape[0]),
        reference_top1=ref_top1,
        top1=top1,
        delta_top1=None if top1 is None or ref_top1 is None else top1 - ref_top1,
        agreement=100.0 * float(np.mean(ref_pred == pred)),
        max_abs_diff=float(diff.max()),
        mean_abs_diff=float(diff.mean()),
        cosine=float(cosine.mean()),
    )
