"""`vitc train` and `vitc eval`: thin wrappers over vitc.train."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer
from rich.table import Table
from typing_extensions import Annotated

from vitc.cli._console import console
from vitc.cli._options import SetOpt, parse_assignments
from vitc.errors import VitcError, unknown_model

if TYPE_CHECKING:
    import torch
    from rich.console import Console

    from vitc.artifacts.model_cfg import ModelCfg
    from vitc.data.feed import StreamFeed
    from vitc.train.config import TrainConfig
    from vitc.train.loop import RunResult


def train(
    recipe: Annotated[
        Optional[Path], typer.Argument(help="A recipe TOML, e.g. train/convit_micro_digits.toml.")
    ] = None,
    model: Annotated[
        Optional[str],
        typer.Option("--model", "-m", help="model.name (default: what --pretrained holds, else convit_micro)."),
    ] = None,
    data: Annotated[
        Optional[str], typer.Option(help="digits, cifar10 or imagefolder (data.name; default: what --data-dir holds).")
    ] = None,
    data_dir: Annotated[
        Optional[Path], typer.Option(help="Class folders (DIR/train/<class>/, DIR/val/<class>/) or CIFAR-10 batches.")
    ] = None,
    epochs: Annotated[Optional[int], typer.Option(help="optim.epochs")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto, cpu or cuda (run.device).")] = None,
    name: Annotated[Optional[str], typer.Option(help="Run name: the folder under train/runs (run.name).")] = None,
    pretrained: Annotated[
        Optional[Path],
        typer.Option(
            help="Start from these weights (model.pretrained): a vitc checkpoint or run folder, or any file "
            "`vitc import` reads."
        ),
    ] = None,
    set_: SetOpt = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run of this name exactly.")] = False,
    nproc: Annotated[int, typer.Option(help="DDP processes to launch on this machine; 1 runs in-process.")] = 1,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Start over; the old run is replaced once the new one has a checkpoint.")
    ] = False,
) -> None:
    """Train a zoo model. With no arguments: convit_micro on the bundled digits, in a few minutes on CPU."""
    from vitc.train.config import load_config, resolve_defaults, resume_config
    from vitc.train.run_folder import RunFolder

    # everything the command line and the recipe say is checked before torch is imported (seconds)
    flags = {"model.name": model, "data.name": data, "data.dir": str(data_dir) if data_dir else None}
    flags.update({"optim.epochs": epochs, "run.device": device, "run.name": name})
    flags.update({"model.pretrained": str(pretrained) if pretrained else None})
    overrides = {k: v for k, v in flags.items() if v is not None} | parse_assignments(set_)
    cfg = load_config(recipe, overrides)
    if resume:
        cfg = resume_config(cfg, overrides)
    named = cfg.model.name is not None  # checked now; a model the weights name is checked once resolved
    _check_before_torch(cfg, resume)
    notes = resolve_defaults(cfg)
    if not named:
        _check_model(cfg.model.name)
    if nproc > 1:
        RunFolder(cfg.run.out_dir, cfg.run_name).start(force=force, resume=resume)  # fail before launching
        _launch_torchrun(nproc)
        return
    if not quiet and os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks for all
        for note in notes:
            console().print(f"default: {note}", markup=False, highlight=False)
    from vitc.train.loop import train as run_training

    result = run_training(cfg, resume=resume, show_progress=not quiet, force=force)
    if result.test:
        _summary(cfg.model.name, result)
        say = console().print
        if result.stopped_early:
            say(result.stopped_early, markup=False, highlight=False, soft_wrap=True)
        if result.skipped_images:
            say(
                f"{result.skipped_images} unreadable images skipped (data.on_bad_image=skip; named above, "
                "counted per epoch in metrics.jsonl)",
                markup=False, highlight=False, soft_wrap=True,
            )  # fmt: skip
        run = Path(cfg.run.out_dir) / cfg.run_name
        say(f"next: vitc export {run} -p fp32 -p fp16 -p int8", markup=False, highlight=False, soft_wrap=True)


def _check_before_torch(cfg: TrainConfig, resume: bool) -> None:
    """The model is one of the zoo's, the data folder holds data of its kind, the starting weights exist."""
    from vitc.data.files import check_data_dir, detect_kind

    if cfg.model.name is not None:
        _check_model(cfg.model.name)
    if cfg.data.name is not None or cfg.data.dir:
        check_data_dir(cfg.data.name or detect_kind(Path(cfg.data.dir)), cfg.data.dir)
    if cfg.model.pretrained and not resume and not Path(cfg.model.pretrained).exists():
        raise VitcError(f"no such file or folder: {cfg.model.pretrained} (--pretrained / model.pretrained)")


def _check_model(name: str) -> None:
    from vitc._zoo import registered_names

    names = registered_names()
    if name not in names:
        raise unknown_model(name, names)


def _launch_torchrun(nproc: int) -> None:
    """Re-run this very command as `nproc` ranks on this machine, in torchrun's environment; a rank
    that dies stops the others and is named in one line (vitc.train.distributed.launch)."""
    from vitc.train.distributed import launch

    argv, skip = [], False
    for arg in sys.argv[1:]:
        if skip or arg.startswith("--nproc"):
            skip = arg == "--nproc"  # its value follows
            continue
        argv.append(arg)
    launch(argv, nproc)


def _summary(model: str, result: RunResult) -> None:

    table = Table(title=f"{model}: run summary")
    final = result.test_split  # "val" for an image folder without test/: the figure is not a test score
    top5 = "top5" in result.test  # not reported with 5 classes or fewer: 100% by construction
    columns = ("epochs", "best val top-1", f"{final} top-1", f"{final} top-5", "train img/s", "time")
    cells = (
        str(len(result.history)),
        f"{result.best_val_top1:.2f}%",
        f"{result.test['top1']:.2f}%",
        f"{result.test.get('top5', 0.0):.2f}%",
        f"{result.train_images_per_s:.0f}",
        f"{result.seconds:.0f} s",
    )
    keep = [i for i in range(len(columns)) if top5 or i != 3]
    for i in keep:
        table.add_column(columns[i], justify="right")
    table.add_row(*(cells[i] for i in keep))
    terminal = console()
    terminal.print(table)
    if final != "test":
        terminal.print(f"no test split: the final figures are on {final}, the split that picked the best epoch")
    terminal.print(f"checkpoints in {result.run_dir}  (best.safetensors, last.safetensors; summary.json)")


def evaluate(
    checkpoint: Annotated[Path, typer.Argument(help="A vitc checkpoint (.safetensors) or a run folder (its best).")],
    data: Annotated[
        Optional[str], typer.Option(help="digits, cifar10 or imagefolder (default: what it was trained on).")
    ] = None,
    data_dir: Annotated[
        Optional[Path],
        typer.Option(help="CIFAR batches, or any labelled folder: <class>/ folders, directly or under test/ or val/."),
    ] = None,
    split: Annotated[str, typer.Option(help="train, val or test.")] = "test",
    out: Annotated[Optional[Path], typer.Option(help="Confusion-matrix PNG (default: next to the checkpoint).")] = None,
    device: Annotated[str, typer.Option(help="auto (a GPU when torch sees one), cpu or cuda.")] = "auto",
    workers: Annotated[
        Optional[int],
        typer.Option(help="Processes decoding a folder's images (default: up to 8 on a GPU, none on a CPU)."),
    ] = None,
) -> None:
    """Top-1 (top-5 above 5 classes), precision/recall per class and a confusion-matrix PNG with a JSON beside it."""
    from vitc._io import write_json
    from vitc.checkpoint import load_model, resolve_checkpoint, training_data
    from vitc.data.datasets import load_dataset
    from vitc.data.feed import set_batches
    from vitc.models import get_model_cfg
    from vitc.train.device import pick_device
    from vitc.train.evaluate import accuracy, confusion_matrix, per_class, predict_labelled, shown_confusion
    from vitc.train.report import plot_confusion

    if workers is not None and workers < 0:
        raise VitcError(f"--workers must be 0 or more, got {workers}")
    on = pick_device(device)
    checkpoint = resolve_checkpoint(checkpoint)
    model, meta = load_model(checkpoint)
    cfg = get_model_cfg(model)
    trained = ((meta.extra.get("train_config") or {}).get("data") or {}).get("name")
    if data is None and data_dir is not None and trained != "cifar10":
        data = "imagefolder"  # a folder of images names its kind; CIFAR batches only for a CIFAR model
    data, folder = training_data(checkpoint, meta, data, None if data_dir is None else str(data_dir))
    terminal = console()
    skipped: list[str] = []
    if data == "imagefolder" and folder is not None:
        if not meta.class_names:
            raise VitcError(f"{checkpoint} names no classes, so its labels cannot be matched to folder names")
        feed, root = _folder_feed(Path(folder), split, meta.class_names, cfg, on, workers, terminal)
        batches, where, known = feed.eval_batches(split), str(root), meta.class_names
    else:
        dataset = load_dataset(data, split, data_dir=folder, image_size=cfg.input_size[1], crop_pct=cfg.crop_pct,
                               in_chans=cfg.input_size[0])  # fmt: skip
        if meta.class_names and dataset.class_names != meta.class_names:
            raise VitcError(
                f"{data}/{split} has classes {', '.join(dataset.class_names[:5])}…, the checkpoint "
                f"{', '.join(meta.class_names[:5])}…: name its data with --data and --data-dir"
            )
        feed, batches, where, known = None, set_batches(dataset), f"{data}/{split}", dataset.class_names
    try:
        logits, labels = predict_labelled(model.to(on), batches, cfg.mean, cfg.std, on)
    finally:
        if feed is not None:
            skipped = sorted(feed.bad)
            feed.close()
    scores = accuracy(logits, labels)
    num_classes = logits.shape[1]
    names = known or [str(i) for i in range(num_classes)]
    matrix = confusion_matrix(logits, labels, num_classes)
    present = sorted(set(labels.tolist()))
    counts, other = shown_confusion(matrix, present)
    classes = per_class(matrix, present, names)
    png = out or checkpoint.with_name(f"{checkpoint.stem}.confusion.{split}.png")
    plot_confusion(counts, [names[c] for c in present], png, title=f"{meta.model} on {where}", other_column=other)
    top5 = num_classes > 5  # with 5 classes or fewer top-5 is 100% by construction
    report = {
        "model": meta.model, "checkpoint": str(checkpoint), "data": data, "folder": where, "images": len(labels),
        "skipped": skipped, "device": str(on),
        "top1": scores["top1"], **({"top5": scores["top5"]} if top5 else {}), "loss": scores["loss"],
        "classes": classes, "confusion": {"true": [names[c] for c in present], "counts": counts, "other": other},
    }  # fmt: skip
    write_json(png.with_suffix(".json"), report)
    terminal.print(_per_class_table(classes))
    of = f", {len(present)} of the model's {num_classes} classes" if len(present) < num_classes else ""
    unread = f", {len(skipped)} unreadable skipped" if skipped else ""
    terminal.print(
        f"{meta.model} on {where} ({len(labels)} images{of}{unread}): top-1 {scores['top1']:.2f}%"
        + (f"  top-5 {scores['top5']:.2f}%" if top5 else "")
        + f"  → {png} and {png.with_suffix('.json').name}",
        soft_wrap=True,
    )


def _folder_feed(
    folder: Path,
    split: str,
    class_names: list[str],
    cfg: ModelCfg,
    device: torch.device,
    workers: Optional[int],
    terminal: Console,
) -> tuple[StreamFeed, Path]:
    """A labelled folder streamed in file order (vitc.data.feed.StreamFeed), and the folder of class folders
    read: decoded per batch, by worker processes on a GPU, so `vitc eval` on a validation set of any size
    keeps a GPU fed and fits in memory; unreadable files are named and skipped, as training does by default."""
    from vitc.data.feed import EVAL_BATCH, StreamFeed
    from vitc.data.stream import FolderSource, SampleTransform
    from vitc.train.device import pick_workers
    from vitc.train.evaluate import labelled_files

    index, root = labelled_files(folder, split, class_names)
    if workers is None:  # as training's default (a GPU's share of the cores), none for a batch or two
        workers = pick_workers(None, device) if len(index.files) >= 2 * EVAL_BATCH else 0
    by = f"{workers} worker process{'es' if workers != 1 else ''}" if workers else "this process"
    terminal.print(f"{len(index.files)} images in {root}, decoded by {by}, evaluated on {device}", soft_wrap=True)
    feed = StreamFeed(
        {split: FolderSource(index)},
        SampleTransform(cfg.input_size[1], cfg.crop_pct),
        workers=workers,
        pin_memory=device.type == "cuda",
        in_chans=cfg.input_size[0],
        report=lambda line: terminal.print(line, soft_wrap=True),
    )
    return feed, root


def _per_class_table(classes: list[dict]) -> Table:
    table = Table(title="per class")
    for column in ("class", "precision", "recall", "support"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for row in classes:
        cells = ["-" if row[k] is None else f"{row[k]:.1f}%" for k in ("precision", "recall")]
        table.add_row(row["class"], *cells, str(row["support"]))
    return table
