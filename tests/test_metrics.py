"""vitc.metrics (numpy, also on a Jetson) gives the figures torch's own operations give."""

from __future__ import annotations

import numpy as np
import pytest

from vitc import metrics

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("classes", [3, 10])
def test_accuracy_is_torch_topk_and_cross_entropy(classes: int) -> None:
    rng = np.random.default_rng(classes)
    logits = rng.standard_normal((257, classes)).astype(np.float32)
    logits[:20, :2] = 10.0  # ties for the top: the lower class ranks first, as argmax picks it
    labels = rng.integers(0, classes, 257)
    got = metrics.accuracy(logits, labels)
    t, y = torch.from_numpy(logits), torch.from_numpy(labels)
    hits = t.topk(min(5, classes), dim=1).indices == y[:, None]
    assert got["top1"] == pytest.approx(100 * float((t.argmax(1) == y).float().mean()))
    assert got["top5"] == pytest.approx(100 * float(hits.any(1).float().mean()))
    assert got["loss"] == pytest.approx(float(torch.nn.functional.cross_entropy(t, y)), rel=1e-6)
    tied = logits[:20]
    assert metrics.accuracy(tied, np.zeros(20))["top1"] == 100.0 and metrics.accuracy(tied, np.ones(20))["top1"] == 0


def test_confusion_counts_per_class_and_the_other_column() -> None:
    logits = np.eye(4, dtype=np.float32)[[0, 1, 3, 1, 1, 2]]  # predicted 0 1 3 1 1 2
    labels = np.array([0, 0, 0, 1, 1, 1])  # a 4-class model on a folder of classes 0 and 1
    matrix = metrics.confusion_matrix(logits, labels, 4)
    expected = torch.bincount(torch.tensor(labels * 4 + logits.argmax(1)), minlength=16).reshape(4, 4)
    assert matrix.tolist() == expected.tolist()
    counts, other = metrics.shown_confusion(matrix, [0, 1])
    assert counts == [[1, 1, 1], [0, 2, 1]] and other
    rows = metrics.per_class(matrix, [0, 1], ["a", "b", "c", "d"])
    assert rows[0] == {"class": "a", "precision": 100.0, "recall": pytest.approx(100 / 3), "support": 3}
    assert rows[1] == {
        "class": "b",
        "precision": pytest.approx(200 / 3),
        "recall": pytest.approx(200 / 3),
        "support": 3,
    }
    assert metrics.shown_confusion(matrix[:2, :2], [0, 1]) == ([[1, 1], [0, 2]], False)


def test_ranks_with_ties_are_the_stable_order() -> None:
    """Many equal logits: a label counts as top-k exactly when a stable sort (lower class first among
    equals, as argmax picks) puts it among the first k."""
    rng = np.random.default_rng(1)
    logits = rng.integers(0, 3, (500, 10)).astype(np.float32)
    labels = rng.integers(0, 10, 500)
    order = np.argsort(-logits, axis=1, kind="stable")
    got = metrics.accuracy(logits, labels)
    assert got["top1"] == pytest.approx(100 * float((order[:, 0] == labels).mean()))
    assert got["top5"] == pytest.approx(100 * float((order[:, :5] == labels[:, None]).any(1).mean()))
    assert order[:, 0].tolist() == logits.argmax(1).tolist()
