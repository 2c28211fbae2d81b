"""Classification figures from logits and labels, in numpy: one definition for training's validation,
`vitc eval` on a checkpoint and `vitc eval` on an engine (a Jetson has no torch)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

ROWS = 4096  # logits scored at once: 4,096 rows of 1,000 classes are 33 MB in float64


def accuracy(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Top-1 and top-5 (top-k capped at the number of classes) in percent, and the mean cross-entropy."""
    return rates(accuracy_sums(logits, labels))


def accuracy_sums(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Top-1 and top-5 hits, the summed cross-entropy and the image count: sums, so that the shares of one
    set (DDP's processes) add up to the whole set's, which `rates` turns into `accuracy`'s figures.

    Each label's rank is the count of classes ranked above it: higher logits, and equal logits of lower
    classes (as `argmax` picks the first of equals); one pass over the logits, however many classes, ROWS
    rows at a time. A row holding NaN is a miss (no class is ranked by it), and makes the loss NaN."""
    logits = np.asarray(logits, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    k = min(5, logits.shape[1])
    top1 = top5 = 0
    loss = 0.0
    for start in range(0, len(labels), ROWS):
        part, own_labels = logits[start : start + ROWS], labels[start : start + ROWS]
        rows = np.arange(len(own_labels))
        own = part[rows, own_labels][:, None]
        lower = np.arange(part.shape[1])[None, :] < own_labels[:, None]
        rank = (part > own).sum(axis=1) + ((part == own) & lower).sum(axis=1)
        rank[np.isnan(part).any(axis=1)] = part.shape[1]
        top1 += int((rank == 0).sum())
        top5 += int((rank < k).sum())
        wide = part.astype(np.float64)
        peak = wide.max(axis=1, keepdims=True)
        log_total = np.log(np.exp(wide - peak).sum(axis=1)) + peak[:, 0]
        loss += float((log_total - wide[rows, own_labels]).sum())
    return {"top1": float(top1), "top5": float(top5), "loss": loss, "count": float(len(labels))}


def rates(sums: dict[str, float]) -> dict[str, float]:
    """`accuracy_sums`' hits in percent and its cross-entropy per image."""
    count = max(sums["count"], 1.0)
    return {"top1": 100.0 * sums["top1"] / count, "top5": 100.0 * sums["top5"] / count, "loss": sums["loss"] / count}


def confusion_matrix(logits: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(true, predicted) counts, int64 num_classes × (num_classes + 1): the last column counts the images
    whose logits hold NaN, which predict no class (argmax would name the first NaN's)."""
    logits = np.asarray(logits)
    predicted = np.argmax(logits, axis=1).astype(np.int64)
    predicted[np.isnan(logits).any(axis=1)] = num_classes
    flat = np.asarray(labels, dtype=np.int64) * (num_classes + 1) + predicted
    return np.bincount(flat, minlength=num_classes * (num_classes + 1)).reshape(num_classes, num_classes + 1)


def per_class(matrix: np.ndarray, classes: Sequence[int], class_names: Sequence[str]) -> list[dict[str, Any]]:
    """Precision, recall and support of each class in `classes` (model indices), from (true, predicted)
    counts over all the model's classes: precision counts every image predicted as the class."""
    rows = []
    for c in classes:
        hits, support, predicted = int(matrix[c, c]), int(matrix[c].sum()), int(matrix[:, c].sum())
        rows.append({
            "class": class_names[c],
            "precision": 100.0 * hits / predicted if predicted else None,
            "recall": 100.0 * hits / support if support else None,
            "support": support,
        })  # fmt: skip
    return rows


OTHER_MEANS = (
    'the last column of "counts" when "other" is true (named "other" in "predicted"): images of the row\'s class '
    "predicted as one of the model's classes that are not in \"true\" (none of this data's images are of them), "
    'or as no class (NaN logits, counted in "nan_images"); every one is a miss. Not a top-k cut: each class in '
    '"true" has its column'
)  # written into each report, where a reader of the JSON meets the column


def shown_confusion(matrix: np.ndarray, classes: Sequence[int]) -> tuple[list[list[int]], bool]:
    """The rows and columns of `classes`, plus an "other" column for predictions of any class outside
    them (a 1000-class model on a 5-class folder) or of none (NaN logits); (counts, whether the column
    was added)."""
    idx = np.asarray(list(classes), dtype=np.int64)
    kept = matrix[idx][:, idx]
    other = matrix[idx].sum(axis=1) - kept.sum(axis=1)
    if int(other.sum()) == 0:
        return kept.tolist(), False
    return np.concatenate([kept, other[:, None]], axis=1).tolist(), True


def classification_report(logits: np.ndarray, labels: np.ndarray, class_names: Sequence[str] | None) -> dict[str, Any]:
    """What `vitc eval` reports, as one record: images, top-1 (top-5 above 5 classes: with fewer it is 100%
    by construction), loss, precision and recall of each class present, and the confusion counts of those
    classes (an "other" column when some images were predicted as a class outside them, or as none:
    `nan_images` counts those whose logits hold NaN, each a miss)."""
    scores = accuracy(logits, labels)
    num_classes = logits.shape[1]
    names = list(class_names) if class_names else [str(i) for i in range(num_classes)]
    matrix = confusion_matrix(logits, labels, num_classes)
    present = sorted(set(np.asarray(labels).tolist()))
    counts, other = shown_confusion(matrix, present)
    true = [names[c] for c in present]
    return {
        "images": len(labels),
        "nan_images": int(matrix[:, -1].sum()),
        "top1": scores["top1"],
        **({"top5": scores["top5"]} if num_classes > 5 else {}),
        "loss": scores["loss"],
        "classes": per_class(matrix, present, names),
        "confusion": {
            "true": true,
            "predicted": [*true, "other"] if other else true,
            "counts": counts,
            "other": other,
            "other_means": OTHER_MEANS,
        },
    }
