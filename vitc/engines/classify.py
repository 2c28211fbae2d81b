"""Classify images with an exported ONNX file or a built TensorRT plan, without torch.

An export's manifest and a plan's sidecar record the evaluation transform the model was measured
with (`preprocess`: resize, crop, mean, std) and its class names, so the file is all a device needs:
a Jetson with numpy, Pillow, TensorRT and cuda-python reads a photo as `vitc eval` reads it and
gets the classes it was trained on. As in Polygraphy, the runner (vitc.engines) runs; this module
only prepares the images it is fed and reads the probabilities it returns.

    with Classifier("engines/convit_tiny.fp16.plan") as classify:
        print(classify("cat.jpg"))                # [("cat", 0.93), ("fox", 0.04), ...]: one image, as vitc.predict
        print(classify(["cat.jpg", "dog.jpg"]))   # [[("cat", 0.93), ...], [...]]: a list (or an (N, H, W, C) array)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, List, Optional, Sequence, Tuple, Union

import numpy as np

from vitc.artifacts import ExportManifest, load_sidecar, manifest_for
from vitc.artifacts.given import FILE, not_taken, path_kind
from vitc.artifacts.preprocess import Preprocess
from vitc.data.images import is_one_image, prepare
from vitc.engines import SUFFIXES, backend_for_path, runner_for_path
from vitc.engines.base import BaseRunner, infer_in_batches
from vitc.errors import VitcError

Prediction = List[Tuple[str, float]]  # (class name, probability), most likely first: as vitc.predict
ENGINE_FILE = "an .onnx or .plan file"  # what a Classifier runs


@dataclass(frozen=True)
class ModelCard:
    """What a file says about the images its model takes and the classes it gives."""

    preprocess: Preprocess
    class_names: Optional[List[str]]
    source: str  # where it was read: the manifest or the sidecar
    model: Optional[str] = None  # the zoo name the export recorded
    manifest: Optional[ExportManifest] = None  # the export's, when it was read (an ONNX file; an old sidecar)
    built_from: Optional[Path] = None  # a plan: the ONNX file its sidecar says it was built from
    built_from_sha256: Optional[str] = None  # and that file's sha256 when the plan was built


def model_card(path: str | os.PathLike[str]) -> ModelCard:
    """From an ONNX file's export manifest, or a plan's sidecar: its own `preprocess` record (vitc
    build writes it), else the manifest of the ONNX file it was built from, when that is still there."""
    path = Path(path)
    if path_kind(path) != FILE:  # an export folder names its files, as `vitc predict` does
        raise not_taken(path, ENGINE_FILE, tuple(SUFFIXES))
    if backend_for_path(path) == "onnxrt":
        manifest = manifest_for(path)
        if manifest is None or manifest.preprocess is None:
            raise VitcError(f"{path}: no export manifest beside it says how its images are prepared (vitc export)")
        prep = Preprocess.from_record(manifest.preprocess, str(manifest.path))
        return ModelCard(prep, manifest.class_names, str(manifest.path), manifest.model, manifest)
    sidecar = load_sidecar(path)
    if sidecar is None:
        raise VitcError(f"{path}: no sidecar ({path.name}.json) says how its images are prepared (vitc build)")
    onnx = Path((sidecar.onnx or {}).get("path", ""))
    if sidecar.preprocess is not None:
        prep = Preprocess.from_record(sidecar.preprocess, f"{path}.json")
        return ModelCard(prep, sidecar.class_names, f"{path}.json", sidecar.model, None, onnx, sidecar.onnx_sha256)
    manifest = manifest_for(onnx) if onnx.suffix == ".onnx" and onnx.is_file() else None
    if manifest is None or manifest.preprocess is None:
        raise VitcError(
            f"{path}: its sidecar (an older vitc build's) has no preprocess record and the export it was built "
            f"from ({onnx}) is not there: copy that export folder back, or build the plan again"
        )
    prep = Preprocess.from_record(manifest.preprocess, str(manifest.path))
    model = sidecar.model or manifest.model
    return ModelCard(prep, sidecar.class_names, str(onnx), model, manifest, onnx, sidecar.onnx_sha256)


def top_classes(logits: np.ndarray, class_names: Optional[Sequence[str]], top_k: int) -> List[Prediction]:
    """The `top_k` (name, probability) pairs of each row of logits, most likely first."""
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    probs = np.exp(shifted)
    probs /= probs.sum(axis=1, keepdims=True)
    names = list(class_names) if class_names and len(class_names) == probs.shape[1] else None
    order = np.argsort(-probs, axis=1, kind="stable")[:, : max(1, top_k)]
    return [[(names[i] if names else str(i), float(row[i])) for i in best] for row, best in zip(probs, order)]


class Classifier:
    """An ONNX file or a TensorRT plan with the images prepared for it: `classify(images)` gives the
    top classes of each. Use it in a `with` block (the runner holds the GPU or session while open)."""

    def __init__(self, path: str | os.PathLike[str], *, device: str = "auto", batch: int = 8, **options: Any):
        self.path = Path(path)
        self.card = model_card(self.path)
        onnx = backend_for_path(self.path) == "onnxrt"
        if not onnx and device == "cpu":
            raise VitcError(f"{self.path} is a TensorRT plan, which runs on the GPU: --device cpu is for .onnx files")
        if onnx:
            options.setdefault("device", device)
        self.runner: BaseRunner = runner_for_path(self.path, **options)
        self.batch = batch

    @property
    def class_names(self) -> Optional[List[str]]:
        return self.card.class_names

    def __enter__(self) -> Classifier:
        self.runner.activate()
        takes = self.runner.get_input_metadata()[0].shape[1:]
        wanted = self.card.preprocess.input_size
        if any(d is not None and d != w for d, w in zip(takes, wanted)) or len(takes) != len(wanted):
            shape = "×".join("?" if d is None else str(d) for d in takes)
            self.runner.deactivate()
            raise VitcError(
                f"{self.path} takes {shape} inputs but {self.card.source} prepares "
                f"{'×'.join(map(str, wanted))}: they are not from the same export"
            )
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.runner.deactivate()

    def __call__(self, images: Any, top_k: int = 5) -> Union[Prediction, List[Prediction]]:
        """The `top_k` classes of one image (a path, a PIL image, a uint8 RGB (H, W, C) or grey (H, W) array;
        an OpenCV frame is BGR: pass `frame[..., ::-1]`), or a list of them for a list, a tuple or a uint8
        (N, H, W, C) array: what `vitc.predict` takes and gives (`vitc.data.images.image_list`)."""
        rows = top_classes(self.logits(prepare(images, self.card.preprocess)), self.class_names, top_k)
        return rows[0] if is_one_image(images) else rows

    def logits(self, inputs: np.ndarray) -> np.ndarray:
        """float32 logits of prepared inputs (`vitc.data.images.prepare`), `batch` images per call."""
        return infer_in_batches(self.runner, inputs, self.batch)
