"""The numpy the runtime declares (numpy>=1.17.3: JetPack 5's python3-numpy is 1.17.4).

`make test-runtime` runs this file, test_cuda.py and test_timing_report.py on Python 3.8 with numpy
1.17.4 in front (VITC_NUMPY_OLDEST=1.17.4): onnx and onnxruntime need a newer numpy, so this selection
uses neither. Here: the held-out set written and read back, drift, `vitc eval`'s figures, latency statistics, pinned
buffers.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from vitc import metrics
from vitc.artifacts import load_heldout
from vitc.artifacts.drift import compare_logits
from vitc.artifacts.heldout import encode_heldout, heldout_name
from vitc.bench.timing import LatencyStats


def test_this_is_the_numpy_asked_for() -> None:
    wanted = os.environ.get("VITC_NUMPY_OLDEST")
    if not wanted:
        pytest.skip("VITC_NUMPY_OLDEST is not set (make test-runtime sets it for the numpy 1.17.4 run)")
    assert np.__version__ == wanted


def test_heldout_drift_and_latency_on_this_numpy(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (6, 3, 8, 8), dtype=np.uint8)
    logits = rng.standard_normal((6, 10)).astype(np.float32)
    labels = logits.argmax(1)
    data, sha = encode_heldout(pixels, (0.5, 0.25, 0.125), (0.5,), labels, logits)
    path = tmp_path / heldout_name(sha)
    path.write_bytes(data)
    held = load_heldout(path)
    np.testing.assert_array_equal(held.images, pixels)
    expected = (pixels[1:3].astype(np.float32) / 255 - np.float32([0.5, 0.25, 0.125]).reshape(3, 1, 1)) / 0.5
    np.testing.assert_allclose(held.inputs(1, 3), expected, rtol=1e-6)
    np.testing.assert_array_equal(held.labels, labels)
    noisy = logits.copy()
    noisy[0] = -noisy[0]  # the first sample changes its top-1 class
    report = compare_logits(held.reference_logits, noisy, held.labels)
    assert report.agreement == pytest.approx(100 * 5 / 6) and report.top1 == pytest.approx(100 * 5 / 6)
    stats = LatencyStats.from_seconds([0.001, 0.002, 0.003, 0.004], batch=2)
    assert stats.p50 == pytest.approx(2.5) and stats.throughput == pytest.approx(800.0)
    assert stats.spread == pytest.approx((3.25 - 1.75) / 2.5)  # the quartiles of numpy 1.17's percentile
    scores = metrics.accuracy(noisy, held.labels)
    assert scores["top1"] == pytest.approx(100 * 5 / 6) and scores["top5"] >= scores["top1"]
    matrix = metrics.confusion_matrix(noisy, held.labels, 10)
    assert int(matrix.sum()) == 6 and int(np.trace(matrix)) == 5
    counts, _ = metrics.shown_confusion(matrix, sorted(set(held.labels.tolist())))
    assert sum(map(sum, counts)) == 6
