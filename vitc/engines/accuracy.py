"""A runner's accuracy on an export's held-out set: the check `vitc build` and `vitc bench --data` share."""

from __future__ import annotations

import numpy as np

from vitc.artifacts import Heldout
from vitc.artifacts.drift import DriftReport, compare_logits
from vitc.engines.base import BaseRunner
from vitc.errors import VitcError


def heldout_accuracy(runner: BaseRunner, heldout: Heldout, batch: int = 32) -> DriftReport:
    """Run the held-out images through an active runner and compare with the reference logits.

    Chunks are `batch` images, clamped into the batch range the runner takes (a static batch, or a
    TensorRT profile's min..max); a last chunk below the minimum is padded with zeros and the padded
    rows are dropped, so any held-out size runs through any profile.
    """
    meta = runner.get_input_metadata()[0]
    output = runner.get_output_metadata()[0].name
    sample = tuple(heldout.images.shape[1:])
    takes = meta.shape[1:]
    if len(takes) != len(sample) or any(d is not None and d != sample[i] for i, d in enumerate(takes)):
        wanted = "×".join("?" if d is None else str(d) for d in takes)
        raise VitcError(
            f"{runner.name}: the held-out images are {'×'.join(map(str, sample))} and the model takes {wanted}: "
            "they come from another export"
        )
    low = runner.min_batch()
    step = max(low, min(batch, runner.max_batch() or batch))
    images = heldout.images.astype(meta.dtype)
    chunks = []
    for start in range(0, len(heldout), step):
        part = images[start : start + step]
        real = part.shape[0]
        if real < low:
            pad = np.zeros((low - real, *part.shape[1:]), dtype=part.dtype)
            part = np.concatenate([part, pad])
        chunks.append(np.asarray(runner.infer({meta.name: part})[output], dtype=np.float32)[:real])
    return compare_logits(heldout.reference_logits, np.concatenate(chunks), heldout.labels)
