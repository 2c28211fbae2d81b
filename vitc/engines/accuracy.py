"""A runner's accuracy: on an export's held-out set (the check `vitc build` and `vitc bench --data` share),
and its logits on a labelled folder of images or on CIFAR-10 batches (`vitc eval` on an engine)."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from vitc.artifacts import Heldout
from vitc.artifacts.drift import DriftReport, compare_logits
from vitc.artifacts.preprocess import Preprocess, normalized
from vitc.data.files import FileIndex, labelled_files
from vitc.data.images import prepare, to_channels
from vitc.engines.base import BaseRunner, chunk_of, infer_in_batches
from vitc.engines.classify import Classifier
from vitc.errors import VitcError
from vitc.metrics import classification_report

Prepared = Union[np.ndarray, str]  # a file's 1×C×H×W input, or why it could not be read
FOLDER_CHUNK = 64  # images decoded and held at once; the next chunk decodes while the engine runs this one
HELDOUT_CHUNK = 64  # held-out images normalised at once: 39 MB of float inputs at 3×224×224


def heldout_accuracy(runner: BaseRunner, heldout: Heldout, batch: int = 32) -> DriftReport:
    """Run the held-out images through an active runner and compare with the reference logits."""
    return compare_logits(heldout.reference_logits, heldout_logits(runner, heldout, batch), heldout.labels)


def heldout_logits(runner: BaseRunner, heldout: Heldout, batch: int = 32) -> np.ndarray:
    """The logits of the held-out images from an active runner, `batch` at a time (`infer_in_batches`: any
    held-out size through any profile), once their size is the one the runner takes. Pixels are normalised
    HELDOUT_CHUNK at a time, so the float inputs of the whole set are never held at once."""
    meta = runner.get_input_metadata()[0]
    sample = heldout.sample_shape
    takes = meta.shape[1:]
    if len(takes) != len(sample) or any(d is not None and d != sample[i] for i, d in enumerate(takes)):
        wanted = "×".join("?" if d is None else str(d) for d in takes)
        raise VitcError(
            f"{runner.name}: the held-out images are {'×'.join(map(str, sample))} and the model takes {wanted}: "
            "they come from another export"
        )
    chunk = chunk_of(runner, max(batch, HELDOUT_CHUNK))
    return np.concatenate([infer_in_batches(runner, heldout.inputs(start, start + chunk), batch)
                           for start in range(0, len(heldout), chunk)])  # fmt: skip


def pixel_logits(classifier: Classifier, pixels: np.ndarray) -> np.ndarray:
    """The logits of uint8 N×C×H×W pixels already at the model's size (CIFAR-10's 32×32, which training
    and `vitc eval` on a checkpoint feed unresized), given the model's channels and normalised as its
    card says, HELDOUT_CHUNK images at a time."""
    prep = classifier.card.preprocess
    if tuple(pixels.shape[2:]) != tuple(prep.input_size[1:]):
        raise VitcError(
            f"{classifier.path} takes {prep.input_size[1]}×{prep.input_size[2]} images and these are "
            f"{pixels.shape[2]}×{pixels.shape[3]}"
        )
    chunks, chunk = [], chunk_of(classifier.runner, HELDOUT_CHUNK)
    for start in range(0, len(pixels), chunk):
        part = to_channels(pixels[start : start + chunk], prep.input_size[0])
        chunks.append(classifier.logits(normalized(part, prep.mean, prep.std)))
    return np.concatenate(chunks)


def folder_logits(
    classifier: Classifier,
    index: FileIndex,
    threads: int = 0,
    skipped: Optional[Callable[[str], None]] = None,
) -> Tuple[np.ndarray, np.ndarray, List[str]]:
    """(logits, labels, why each unreadable file was left out) of a labelled folder through an active
    classifier. Files are decoded FOLDER_CHUNK at a time as `vitc eval` on a checkpoint decodes them
    (vitc.data.images), by `threads` threads (Pillow decodes and resizes outside the GIL) while the engine
    runs the chunk before: a folder of any size fits in memory."""
    prep = classifier.card.preprocess
    files = [index.root / name for name in index.files]
    logits: List[np.ndarray] = []
    kept: List[int] = []
    bad: List[str] = []
    chunk = chunk_of(classifier.runner, FOLDER_CHUNK)
    for start, inputs in _decoded_chunks(files, prep, threads, chunk):
        readable = [i for i, x in enumerate(inputs) if not isinstance(x, str)]
        for why in (x for x in inputs if isinstance(x, str)):
            bad.append(why)
            if skipped is not None:
                skipped(why)
        if readable:
            logits.append(classifier.logits(np.concatenate([inputs[i] for i in readable])))  # type: ignore[misc]
            kept += [start + i for i in readable]
    if not kept:
        raise VitcError(f"none of the {len(files)} images in {index.root} could be read")
    return np.concatenate(logits), np.asarray(index.labels)[kept], bad


def evaluate_folder(
    classifier: Classifier, folder: Union[str, Path], split: str = "test", threads: int = 0
) -> Dict[str, Any]:
    """`vitc eval ENGINE --data-dir FOLDER` in Python: the report of an active classifier on a labelled
    folder (class folders named as its classes, directly or under test/ or val/), with the files it
    could not read under "skipped"."""
    index, _ = folder_index(classifier, Path(folder), split)
    logits, labels, skipped = folder_logits(classifier, index, threads=threads)
    return {**classification_report(logits, labels, classifier.class_names), "skipped": skipped}


def folder_index(classifier: Classifier, folder: Path, split: str) -> Tuple[FileIndex, str]:
    """The labelled folder's files, labelled with the classifier's index of each class folder's name, and
    the split read ("all" for a plain folder of class folders)."""
    if not classifier.class_names:
        raise VitcError(f"{classifier.path} names no classes, so its labels cannot be matched to folder names")
    return labelled_files(folder, split, classifier.class_names)


def _decoded_chunks(
    files: Sequence[Path], prep: Preprocess, threads: int, chunk: int = FOLDER_CHUNK
) -> Iterator[Tuple[int, List[Prepared]]]:
    """(start, [the prepared 1×C×H×W input, or why the file is unreadable]) per chunk, in order; with
    threads, the next chunk is decoding while the caller runs this one."""
    starts = range(0, len(files), chunk)
    if threads < 1:
        for start in starts:
            yield start, [_prepared(f, prep) for f in files[start : start + chunk]]
        return
    with ThreadPoolExecutor(max_workers=threads) as pool:
        pending: Optional[Tuple[int, List[Future[Prepared]]]] = None
        for start in starts:
            submitted = (start, [pool.submit(_prepared, f, prep) for f in files[start : start + chunk]])
            if pending is not None:
                yield pending[0], [f.result() for f in pending[1]]
            pending = submitted
        if pending is not None:
            yield pending[0], [f.result() for f in pending[1]]


def _prepared(file: Path, prep: Preprocess) -> Prepared:
    try:
        return prepare([file], prep)
    except VitcError as exc:
        return str(exc)
