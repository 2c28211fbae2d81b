"""A runner's accuracy on an export's held-out set: the check `vitc build` and `vitc bench --data` share."""

from __future__ import annotations

import numpy as np

from vitc.artifacts import Heldout
from vitc.artifacts.drift import DriftReport, compare_logits
from vitc.engines.base import BaseRunner


def heldout_accuracy(runner: BaseRunner, heldout: Heldout, batch: int = 32) -> DriftReport:
    """Run the held-out images through an active runner and compare with the reference logits."""
    meta = runner.get_input_metadata()[0]
    output = runner.get_output_metadata()[0].name
    step = meta.static_batch or min(batch, runner.max_batch() or batch)  # a profile may stop below `batch`
    images = heldout.images.astype(meta.dtype)
    chunks = []
    for start in range(0, len(heldout), step):
        part = images[start : start + step]
        real = part.shape[0]
        if meta.static_batch and real < step:  # pad the last chunk of a static-batch engine
            pad = np.zeros((step - real, *part.shape[1:]), dtype=part.dtype)
            part = np.concatenate([part, pad])
        chunks.append(np.asarray(runner.infer({meta.name: part})[output], dtype=np.float32)[:real])
    return compare_logits(heldout.reference_logits, np.concatenate(chunks), heldout.labels)
