"""`vitc eval`: top-1, per-class precision and recall and a confusion matrix, of a checkpoint or an engine.

A checkpoint or run folder is measured in PyTorch (vitc.train.evaluate). A .plan or .onnx file is
measured through its runner with no torch (vitc.engines.accuracy), so a Jetson gets its engine's
accuracy on a folder of its own photos, decoded as `vitc eval` decodes them for the checkpoint; with
no folder, on the held-out set its export kept. Both write the same report (vitc.metrics), through
vitc.cli._eval_report, which names, writes and later removes its files.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator, List, Optional, Tuple

import typer
from typing_extensions import Annotated

from vitc._text import few_names
from vitc.cli._console import console, warn
from vitc.cli._eval_report import default_png, report_files, write_report
from vitc.cli._options import ForceOpt
from vitc.errors import DEVICES, ON_GPU_HINT, VitcError, gpu_errors, unknown_device

if TYPE_CHECKING:
    import numpy as np
    import torch
    from rich.console import Console

    from vitc.artifacts.model_cfg import ModelCfg
    from vitc.data.feed import Batch, StreamFeed
    from vitc.engines.classify import Classifier

ENGINE_THREADS = 8  # decoding threads at most for an engine (a Jetson Orin has 6 to 12 cores)


def evaluate(
    source: Annotated[
        Path,
        typer.Argument(
            help="A vitc checkpoint (.safetensors) or run folder (its best), or a .plan or .onnx file (no torch)."
        ),
    ],
    data: Annotated[
        Optional[str], typer.Option(help="digits, cifar10 or imagefolder (default: what it was trained on).")
    ] = None,
    data_dir: Annotated[
        Optional[Path],
        typer.Option(
            help="CIFAR batches, or any labelled folder: <class>/ folders, directly or under test/ or val/. "
            "An engine without it: its export's held-out set."
        ),
    ] = None,
    split: Annotated[str, typer.Option(help="train, val or test.")] = "test",
    out: Annotated[
        Optional[Path], typer.Option(help="Confusion-matrix PNG (default: next to the checkpoint or engine).")
    ] = None,
    device: Annotated[
        str, typer.Option(help="auto (a GPU when there is one), cpu or cuda; a .plan runs on the GPU.")
    ] = "auto",
    workers: Annotated[
        Optional[int],
        typer.Option(
            help="Processes decoding a folder's images (default: up to 8 on a GPU, none on a CPU); "
            "for an engine, threads (default: up to 8)."
        ),
    ] = None,
    force: ForceOpt = False,
) -> None:
    """Top-1 (top-5 above 5 classes), precision/recall per class and a confusion-matrix PNG with a JSON beside it."""
    from vitc.artifacts.given import EXPORT, FOLDER, WEIGHTS_OR_ENGINE, not_taken, path_kind
    from vitc.engines import SUFFIXES

    if workers is not None and workers < 0:
        raise VitcError(f"--workers must be 0 or more, got {workers}")
    if device not in DEVICES:
        raise unknown_device(device, DEVICES)
    if path_kind(source) in (EXPORT, FOLDER):  # before torch is needed: an engine's folder on a Jetson
        raise not_taken(source, WEIGHTS_OR_ENGINE, tuple(SUFFIXES))
    if out is not None:  # before the evaluation; the default, named by what is read, is checked when known
        report_files(out, force)
    if source.suffix.lower() in SUFFIXES:
        _evaluate_engine(source, data, data_dir, split, out, device, workers, force)
    else:
        _evaluate_checkpoint(source, data, data_dir, split, out, device, workers, force)


def _evaluate_checkpoint(
    source: Path,
    data: Optional[str],
    data_dir: Optional[Path],
    split: str,
    out: Optional[Path],
    device: str,
    workers: Optional[int],
    force: bool,
) -> None:
    from vitc._lazy import require_training

    require_training("vitc eval on a checkpoint (an engine, .plan or .onnx, needs no torch)")
    from vitc._device import pick_device
    from vitc.checkpoint import read_checkpoint, resolve_checkpoint, training_data
    from vitc.data.cifar import check_cifar_classes, cifar_class_names
    from vitc.data.datasets import load_dataset
    from vitc.data.feed import EVAL_BATCH, set_batches
    from vitc.data.files import cifar_root
    from vitc.models import get_model_cfg
    from vitc.train.evaluate import predict_labelled

    on = pick_device(device)
    checkpoint = resolve_checkpoint(source)
    model, meta = read_checkpoint(checkpoint)
    cfg = get_model_cfg(model)
    trained = ((meta.extra.get("train_config") or {}).get("data") or {}).get("name")
    if data is None and data_dir is not None and trained != "cifar10" and cifar_root(data_dir) is None:
        data = "imagefolder"  # a folder of images names its kind (CIFAR batches say they are CIFAR)
    data, folder = training_data(checkpoint, meta, data, None if data_dir is None else str(data_dir))
    if data == "cifar10" and folder is not None:  # another model's classes: said before the batches are resized
        check_cifar_classes(split, cifar_class_names(Path(folder)), meta.class_names, "the checkpoint")
    terminal = console()
    skipped: List[str] = []
    if data == "imagefolder" and folder is not None:
        if not meta.class_names:
            raise VitcError(f"{checkpoint} names no classes, so its labels cannot be matched to folder names")
        feed, root, read = _folder_feed(Path(folder), split, meta.class_names, cfg, on, workers, terminal)
        batches, where, known = feed.eval_batches(split), str(root), meta.class_names
    else:
        dataset = load_dataset(data, split, data_dir=folder, image_size=cfg.input_size[1], crop_pct=cfg.crop_pct,
                               crop_mode=cfg.crop_mode, in_chans=cfg.input_size[0])  # fmt: skip
        if meta.class_names and dataset.class_names != meta.class_names:
            raise VitcError(
                f"{data}/{split} has classes {few_names(dataset.class_names)}, the checkpoint "
                f"{few_names(meta.class_names)}: name its data with --data and --data-dir"
            )
        feed, batches, where, known = None, set_batches(dataset), f"{data}/{split}", dataset.class_names
        read = split
    waited = [0.0]
    started = time.perf_counter()
    try:
        with gpu_errors(f"evaluating at batch size {EVAL_BATCH}", ON_GPU_HINT):
            logits, labels = predict_labelled(model.to(on), _timed(batches, waited), cfg.mean, cfg.std, on)
    finally:
        if feed is not None:
            skipped = sorted(feed.bad)
            feed.close()
    seconds = time.perf_counter() - started
    _say_speed(terminal, len(labels), seconds - waited[0], waited[0], f"the model on {on}", EVAL_BATCH)
    head = {"model": meta.model, "checkpoint": str(checkpoint), "data": data, "split": read, "folder": where}
    png = out or default_png(checkpoint, data_dir, read)
    write_report(logits.numpy(), labels.numpy(), known, head, meta.model, skipped=skipped, device=str(on), png=png,
            force=force)  # fmt: skip


def _folder_feed(
    folder: Path,
    split: str,
    class_names: List[str],
    cfg: ModelCfg,
    device: torch.device,
    workers: Optional[int],
    terminal: Console,
) -> Tuple[StreamFeed, Path, str]:
    """A labelled folder streamed in file order (vitc.data.feed.StreamFeed), the folder of class folders
    read and its split ("all" for a plain folder of class folders): decoded per batch, by worker processes
    on a GPU, so `vitc eval` on a validation set of any size keeps a GPU fed and fits in memory; unreadable
    files are named and skipped, as training does by default."""
    from vitc.data.feed import EVAL_BATCH, StreamFeed
    from vitc.data.files import labelled_files
    from vitc.data.stream import FolderSource, SampleTransform
    from vitc.train.device import pick_workers

    index, read = labelled_files(folder, split, class_names)
    root = index.root
    if workers is None:  # as training's default (a GPU's share of the cores), none for a batch or two
        workers = pick_workers(None, device) if len(index.files) >= 2 * EVAL_BATCH else 0
    by = f"{workers} worker process{'es' if workers != 1 else ''}" if workers else "this process"
    terminal.print(f"{len(index.files)} images in {root}, decoded by {by}, evaluated on {device}", soft_wrap=True)
    feed = StreamFeed(
        {split: FolderSource(index)},
        SampleTransform(cfg.input_size[1], cfg.crop_pct, crop_mode=cfg.crop_mode),
        workers=workers,
        pin_memory=device.type == "cuda",
        in_chans=cfg.input_size[0],
        report=lambda line: terminal.print(line, soft_wrap=True),
    )
    return feed, root, read


def _evaluate_engine(
    source: Path,
    data: Optional[str],
    data_dir: Optional[Path],
    split: str,
    out: Optional[Path],
    device: str,
    workers: Optional[int],
    force: bool,
) -> None:
    """An engine on a labelled folder (decoded here, by threads), on CIFAR-10 batches (a 32×32 model), or on
    its export's held-out set."""
    from vitc.engines.base import batch_step
    from vitc.engines.classify import Classifier

    cifar = data_dir is not None and _engine_data(data, data_dir) == "cifar10"
    terminal = console()
    classifier = Classifier(source, device=device, batch=32)
    names = classifier.class_names
    with classifier:
        ran_on = _engine_device(classifier)
        started = time.perf_counter()
        if data_dir is None:
            logits, labels, data, read, where = _on_heldout(classifier, source, data, split)
            skipped = []
        elif cifar:
            logits, labels, where = _on_cifar(classifier, data_dir, split)
            data, skipped, read = "cifar10", [], split
        else:
            logits, labels, skipped, read, where = _on_folder(classifier, data_dir, split, workers, ran_on, terminal)
            data = "imagefolder"
        seconds, engine = time.perf_counter() - started, classifier.runner.total_inference_time
        step = batch_step(classifier.runner, classifier.batch)
        _say_speed(terminal, len(labels), engine, max(seconds - engine, 0.0), "the engine", step)
    model = classifier.card.model
    head = {"model": model, "engine": str(source), "data": data, "split": read, "folder": where}
    png = out or default_png(source, data_dir, read)
    shown = f"{model or 'the model'} ({source.name})"
    write_report(logits, labels, names, head, shown, skipped=skipped, device=ran_on, png=png, force=force)


def _say_speed(terminal: Console, images: int, inside: float, outside: float, what: str, batch: int) -> None:
    """Per image, as Ultralytics' val prints it: the model's or engine's time and the rest (reading, decoding
    and normalising the images, which threads or worker processes overlap with the model)."""
    per = 1000.0 / max(images, 1)
    terminal.print(
        f"per image: {inside * per:.1f} ms in {what} (batches of up to {batch}), "
        f"{outside * per:.1f} ms more reading and preparing the images",
        soft_wrap=True,
    )


def _timed(batches: Iterable[Batch], waited: List[float]) -> Iterator[Batch]:
    """The batches, adding to waited[0] the seconds spent waiting for each: what is left of the loop's time
    is the model's (on a GPU, its queued work is waited for when the logits come back, inside the loop)."""
    it = iter(batches)
    while True:
        start = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            return
        finally:
            waited[0] += time.perf_counter() - start
        yield batch


def _engine_data(data: Optional[str], data_dir: Path) -> str:
    """imagefolder or cifar10: what --data names, else what the folder holds."""
    from vitc.data.files import cifar_root

    kind = data or ("cifar10" if cifar_root(data_dir) is not None else "imagefolder")
    if kind not in ("imagefolder", "cifar10"):
        raise VitcError(f"an engine is measured on class folders of images or CIFAR-10 batches, not --data {kind}")
    return kind


def _on_cifar(classifier: Classifier, data_dir: Path, split: str) -> Tuple[np.ndarray, np.ndarray, str]:
    """CIFAR-10 batches at their own 32×32, as training and `vitc eval` on the checkpoint feed them; another
    input size would need their resize, which is torch's (vitc.data.datasets.resize_images)."""
    from vitc.data.cifar import check_cifar_classes, cifar_class_names, cifar_raw
    from vitc.engines.accuracy import pixel_logits

    check_cifar_classes(split, cifar_class_names(data_dir), classifier.class_names, "the engine")
    pixels, labels, names = cifar_raw(data_dir, split)
    size = classifier.card.preprocess.input_size[1:]
    if tuple(size) != (32, 32):
        raise VitcError(
            f"{classifier.path} takes {size[0]}×{size[1]} images and CIFAR-10's are resized to that with torch: "
            "measure the engine on the CIFAR test images its export kept (vitc eval ENGINE, without "
            f"--data-dir) and the checkpoint on all of them (vitc eval CHECKPOINT --data-dir {data_dir})"
        )
    logits = pixel_logits(classifier, pixels)
    if logits.shape[1] != len(names):
        raise VitcError(f"{classifier.path} gives {logits.shape[1]} classes and CIFAR-10 has {len(names)}")
    return logits, labels, f"cifar10/{split}"


def _on_folder(
    classifier: Classifier, data_dir: Path, split: str, workers: Optional[int], ran_on: str, terminal: Console
) -> Tuple[np.ndarray, np.ndarray, List[str], str, str]:
    """(logits, labels, unreadable files, the split read ("all" for a plain folder), the folder read)."""
    from vitc._device import cpu_cores
    from vitc.engines.accuracy import FOLDER_CHUNK, folder_index, folder_logits

    index, read = folder_index(classifier, data_dir, split)
    root = index.root
    if workers is None:
        workers = min(ENGINE_THREADS, cpu_cores()) if len(index.files) > FOLDER_CHUNK else 0
    by = f"{workers} thread{'s' if workers != 1 else ''}" if workers else "this thread"
    terminal.print(f"{len(index.files)} images in {root}, decoded by {by}, evaluated by {ran_on}", soft_wrap=True)

    def skipped(why: str) -> None:
        warn(why, "skipped:")

    logits, labels, bad = folder_logits(classifier, index, threads=workers, skipped=skipped)
    return logits, labels, bad, read, str(root)


def _on_heldout(
    classifier: Classifier, source: Path, data: Optional[str], split: str
) -> Tuple[np.ndarray, np.ndarray, str, str, str]:
    """The logits, labels, data name, split and description of the held-out set the engine's export kept
    (at most 2,000 images of its data's test split, or val's for an image folder without test/, spread over
    its classes), found through the manifest beside the ONNX file, or the one a plan's sidecar names."""
    from vitc.artifacts import load_heldout, manifest_for
    from vitc.data.files import WHOLE
    from vitc.engines.accuracy import heldout_logits

    manifest, built_from = classifier.card.manifest, classifier.card.built_from  # the card read them once
    if manifest is None and built_from is not None and built_from.suffix == ".onnx" and built_from.is_file():
        manifest = manifest_for(built_from)
    if manifest is None or not manifest.heldout:
        raise VitcError(
            f"{source}: no export beside it keeps a held-out set to measure on; give a labelled folder with "
            "--data-dir (<class>/ folders of images)"
        )
    built = classifier.card.built_from_sha256
    if built is not None and manifest.onnx_sha256 is not None and built != manifest.onnx_sha256:
        raise VitcError(
            f"{source} was built from another {manifest.onnx_path.name} than the one in {manifest.path.parent} now "
            "(its sha256 differs: exported again since), so that held-out set is not this engine's: build the "
            "plan again, or give --data-dir"
        )
    kept = str((manifest.drift or {}).get("data") or "its data")
    held = str((manifest.drift or {}).get("split") or "test")  # val for an image folder without test/, or WHOLE
    if data is not None and data != kept:
        raise VitcError(f"{source}'s export kept {kept} images, not {data}: give --data-dir to measure on others")
    if split not in ("test", held):  # test names the held-out set, whichever split it was read from
        what = f"{kept}'s {held} split" if held != WHOLE else "a whole folder of class folders (no splits)"
        raise VitcError(f"the export kept {what}, not a {split} split: give --data-dir to measure on one")
    heldout = load_heldout(manifest)
    if heldout.labels is None:
        raise VitcError(
            f"{source}'s export was measured on generated inputs, which have no labels: give --data-dir "
            "(<class>/ folders of images) to measure its accuracy"
        )
    logits = heldout_logits(classifier.runner, heldout, classifier.batch)
    return logits, heldout.labels, kept, held, f"{kept}/{held}, the held-out set of {manifest.path.parent}"


def _engine_device(classifier: Classifier) -> str:
    """What ran the engine: TensorRT on the GPU, or ONNX Runtime's provider."""
    providers = getattr(classifier.runner, "providers", None)
    return f"onnxruntime ({providers[0]})" if providers else "tensorrt"
