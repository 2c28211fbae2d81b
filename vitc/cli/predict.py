"""`vitc predict`: the top classes of images, from an engine (no torch) or a checkpoint.

A .plan or .onnx file runs through its runner with the images prepared as its sidecar or manifest
records (vitc.engines.classify): on a Jetson this is the step after `vitc build` and `vitc bench`.
A checkpoint or run folder runs in PyTorch (vitc.api), with the same decoding and the same output.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, List, Optional, Sequence, Tuple

import typer
from typing_extensions import Annotated

from vitc._io import ReportKind, json_report, report_path
from vitc.cli._console import console, warn
from vitc.cli._options import ForceOpt
from vitc.errors import DEVICES, ON_GPU_HINT, VitcError, gpu_errors, unknown_device

if TYPE_CHECKING:
    from rich.console import Console

    from vitc.artifacts.preprocess import Preprocess
    from vitc.engines.classify import Prediction

    Classify = Callable[[Sequence[Any], int], List[Prediction]]

PREDICT_JSON = ReportKind("vitc predict report", ".json", json_report("source", "backend", "top_k", "images"))


def predict(
    source: Annotated[
        Path, typer.Argument(help="A .plan or .onnx file (no torch needed), or a vitc checkpoint or run folder.")
    ],
    images: Annotated[List[Path], typer.Argument(help="Image files, or folders of them (subfolders too).")],
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="Classes shown per image.")] = 5,
    batch: Annotated[int, typer.Option("--batch", "-b", help="Images per inference call.")] = 8,
    device: Annotated[
        str, typer.Option(help="auto, cpu or cuda: ONNX Runtime's provider or PyTorch's device (plans: the GPU).")
    ] = "auto",
    json_out: Annotated[
        Optional[Path], typer.Option("--json", help="Also write every image's classes as JSON (- for stdout).")
    ] = None,
    force: ForceOpt = False,
) -> None:
    """The top classes of each image, prepared as the model was evaluated; one line per image."""
    from vitc._io import json_text, to_stdout, write_report
    from vitc.artifacts.given import EXPORT, FOLDER, WEIGHTS_OR_ENGINE, not_taken, path_kind
    from vitc.engines import SUFFIXES

    if device not in DEVICES:
        raise unknown_device(device, DEVICES)
    if path_kind(source) in (EXPORT, FOLDER):  # before torch is needed: an engine's folder on a Jetson
        raise not_taken(source, WEIGHTS_OR_ENGINE, tuple(SUFFIXES))
    if top_k < 1 or batch < 1:
        raise VitcError(f"--top-k and --batch must be at least 1, got {top_k} and {batch}")
    if json_out is not None:
        report_path(json_out, PREDICT_JSON, "--json", force, stdout=True)
    files = list(_image_files(images))
    if not files:
        raise VitcError(f"no images in {', '.join(map(str, images))} (extensions: .jpg, .png, .webp, ...)")
    terminal = console(stderr=to_stdout(json_out))  # `--json -`: stdout carries the JSON alone
    engine = source.suffix.lower() in SUFFIXES
    opened = _OnEngine(source, device, batch) if engine else _OnCheckpoint(source, device)
    seconds = {"decode": 0.0, "classify": 0.0}  # reading the files; preparing and running them
    with opened as (classify, prep, backend):
        rows, skipped = [], []
        for start in range(0, len(files), batch):
            began = time.perf_counter()
            readable, names = _decoded(files[start : start + batch], prep, skipped, terminal)
            decoding_done = time.perf_counter()
            tops = classify(readable, top_k) if readable else []
            seconds["decode"] += decoding_done - began
            seconds["classify"] += time.perf_counter() - decoding_done
            for name, top in zip(names, tops):
                shown = ", ".join(f"{label} {p:.1%}" for label, p in top)
                terminal.print(f"{name}: {shown}", soft_wrap=True)
                rows.append({"image": str(name), "top": [[label, p] for label, p in top]})
    if not rows:
        raise VitcError(f"none of the {len(files)} images could be read (named above)")
    skip_note = f"; {len(skipped)} unreadable skipped" if skipped else ""
    speed = {k: round(1000 * v / len(rows), 2) for k, v in seconds.items()}
    images = f"{len(rows)} image{'s' * (len(rows) != 1)}"
    terminal.print(f"{images} classified by {source} ({backend}){skip_note}", soft_wrap=True)
    terminal.print(
        f"per image: {speed['decode']:.1f} ms reading the file, {speed['classify']:.1f} ms preparing and "
        f"classifying it (batches of {getattr(opened, 'step', batch)})",
        soft_wrap=True,
    )
    if json_out is not None:
        record = {"source": str(source), "backend": backend, "top_k": top_k, "images": rows, "skipped": skipped}
        record["ms_per_image"] = speed
        write_report(json_out, json_text(record))
        if not to_stdout(json_out):
            terminal.print(f"wrote {json_out}", soft_wrap=True)


def _image_files(paths: Sequence[Path]) -> Iterator[Path]:
    """Each file given, and the image files under each folder given (sorted, subfolders included)."""
    from vitc.data.files import IMG_EXTENSIONS

    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMG_EXTENSIONS)
        elif path.is_file():
            yield path
        else:
            raise VitcError(f"{path}: no such image file or folder")


def _decoded(
    files: Sequence[Path], prep: Preprocess, skipped: List[str], terminal: Console
) -> Tuple[List[Any], List[Path]]:
    """The readable images of `files`, decoded upright; an unreadable one is named and skipped."""
    from vitc.data.images import decoded

    images: List[Any] = []
    names: List[Path] = []
    for file in files:
        try:
            images.append(decoded(file))
            names.append(file)
        except VitcError as exc:
            skipped.append(str(exc))
            warn(str(exc), "skipped:")
    return images, names


class _OnEngine:
    """An engine's classifier while its runner is active: (classify, preprocess, backend)."""

    def __init__(self, path: Path, device: str, batch: int) -> None:
        from vitc.engines import backend_for_path
        from vitc.engines.classify import Classifier

        self.classifier = Classifier(path, device=device, batch=batch)
        self.backend = backend_for_path(path)

    def __enter__(self) -> Tuple[Classify, Preprocess, str]:
        from vitc.engines.base import batch_step

        classifier = self.classifier.__enter__()
        self.step = batch_step(classifier.runner, classifier.batch)  # what the engine runs: a static batch
        return classifier, classifier.card.preprocess, self.backend

    def __exit__(self, *exc: Any) -> None:
        self.classifier.__exit__(*exc)


class _OnCheckpoint:
    """A checkpoint (or a run folder's best) in PyTorch: (classify, preprocess, "torch")."""

    def __init__(self, path: Path, device: str) -> None:
        from vitc._lazy import require_training

        if not path.is_dir() and path.suffix != ".safetensors":
            raise VitcError(f"{path}: vitc predict takes a .plan or .onnx file, or a vitc checkpoint or run folder")
        require_training("vitc predict on a checkpoint (an engine, .plan or .onnx, needs no torch)")
        import vitc
        from vitc._device import pick_device
        from vitc.checkpoint import resolve_checkpoint
        from vitc.models import get_model_cfg

        on = pick_device(device)
        model = vitc.load_model(resolve_checkpoint(path))
        with gpu_errors("loading the model", ON_GPU_HINT):
            self.model = model.to(on)
        self.prep = get_model_cfg(self.model).preprocess

    def __enter__(self) -> Tuple[Classify, Preprocess, str]:
        import vitc

        def classify(images: Sequence[Any], top_k: int) -> List[Prediction]:
            with gpu_errors(f"classifying {len(images)} image{'s' * (len(images) != 1)}", ON_GPU_HINT):
                return vitc.predict(self.model, list(images), top_k=top_k)  # type: ignore[return-value]

        return classify, self.prep, "torch"

    def __exit__(self, *exc: Any) -> None:
        return None
