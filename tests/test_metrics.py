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
    assert matrix[:, :4].tolist() == expected.tolist() and matrix[:, 4].tolist() == [0, 0, 0, 0]  # no NaN row
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


def test_the_reports_other_column_is_named_and_explained() -> None:
    """The JSON had `"other": true` and a column more than `true` with nothing saying what it counts: its columns
    are named now ("predicted") and "other_means" says it, in the file itself (a 4-class model on a folder of
    classes 0 and 1: predictions of 2 and 3 land there, as do NaN rows)."""
    logits = np.eye(4, dtype=np.float32)[[0, 1, 3, 1, 1, 2]]
    report = metrics.classification_report(logits, np.array([0, 0, 0, 1, 1, 1]), ["a", "b", "c", "d"])
    confusion = report["confusion"]
    assert confusion["true"] == ["a", "b"] and confusion["predicted"] == ["a", "b", "other"]
    assert confusion["counts"] == [[1, 1, 1], [0, 2, 1]] and confusion["other"] is True
    assert all(len(row) == len(confusion["predicted"]) for row in confusion["counts"])
    assert 'not in "true"' in confusion["other_means"] and "NaN" in confusion["other_means"]
    plain = metrics.classification_report(np.eye(2, dtype=np.float32)[[0, 1]], np.array([0, 1]), ["a", "b"])
    assert plain["confusion"]["predicted"] == ["a", "b"] and plain["confusion"]["other"] is False


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


def test_a_row_of_nan_logits_is_a_miss_everywhere() -> None:
    """NaN logits (an overflowing FP16 engine, a diverged run) predict nothing: each such image is wrong in
    top-1, top-5, recall and the confusion's other column, and counted; a NaN in the label's own logit
    made its rank 0 (both comparisons false), so an engine of NaN outputs scored 100%."""
    rng = np.random.default_rng(2)
    logits = rng.standard_normal((10, 7)).astype(np.float32)
    labels = logits.argmax(1)  # all right ...
    logits[:3] = np.nan  # ... but three rows of NaN
    logits[3, 0] = np.nan  # and one NaN beside the right answer
    scores = metrics.accuracy(logits, labels)
    assert scores["top1"] == scores["top5"] == 60.0 and np.isnan(scores["loss"])
    assert metrics.accuracy(np.full((4, 6), np.nan, np.float32), np.arange(4))["top1"] == 0.0
    report = metrics.classification_report(logits, labels, None)
    assert report["nan_images"] == 4 and report["top1"] == 60.0
    assert sum(row["recall"] * row["support"] for row in report["classes"]) == pytest.approx(100 * 6)
    assert report["confusion"]["other"] and sum(row[-1] for row in report["confusion"]["counts"]) == 4


def test_accuracy_in_row_chunks_is_the_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    """ROWS rows at a time (the memory of 50,000 × 1,000 logits stays bounded): the same figures."""
    rng = np.random.default_rng(4)
    logits = rng.standard_normal((101, 12)).astype(np.float32)
    labels = rng.integers(0, 12, 101)
    whole = metrics.accuracy(logits, labels)
    monkeypatch.setattr(metrics, "ROWS", 7)  # 15 chunks, the last of 3 rows
    chunked = metrics.accuracy(logits, labels)
    assert chunked["top1"] == whole["top1"] and chunked["top5"] == whole["top5"]
    assert chunked["loss"] == pytest.approx(whole["loss"], rel=1e-12)


def test_the_metrics_memory_benchmark_runs(capsys: pytest.CaptureFixture) -> None:
    """docs/metrics_memory.py's plumbing on a small set."""
    from tests.doc_scripts import load_doc_script

    load_doc_script("metrics_memory").main(["--rows", "100", "--classes", "10"])
    assert "100 x 10 logits" in capsys.readouterr().out
