"""A runner's accuracy on an export's held-out set: the check `vitc build` and `vitc bench --data` share."""

from __future__ import annotations

from vitc.artifacts import Heldout
from vitc.artifacts.drift import DriftReport, compare_logits
from vitc.engines.base import BaseRunner, infer_in_batches
from vitc.errors import VitcError


def heldout_accuracy(runner: BaseRunner, heldout: Heldout, batch: int = 32) -> DriftReport:
    """Run the held-out images through an active runner, `batch` at a time (`infer_in_batches`: any
    held-out size through any profile), and compare with the reference logits."""
    meta = runner.get_input_metadata()[0]
    sample = tuple(heldout.images.shape[1:])
    takes = meta.shape[1:]
    if len(takes) != len(sample) or any(d is not None and d != sample[i] for i, d in enumerate(takes)):
        wanted = "×".join("?" if d is None else str(d) for d in takes)
        raise VitcError(
            f"{runner.name}: the held-out images are {'×'.join(map(str, sample))} and the model takes {wanted}: "
            "they come from another export"
        )
    return compare_logits(heldout.reference_logits, infer_in_batches(runner, heldout.images, batch), heldout.labels)
