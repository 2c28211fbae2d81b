"""`vitc inspect`: locality figures and a JSON summary of a checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from typing_extensions import Annotated

from vitc._io import ReportKind, json_report
from vitc.cli._console import console as plain_console
from vitc.cli._console import warn
from vitc.cli._options import ForceOpt

SUMMARY = ReportKind("vitc inspect summary", ".json", json_report("model", "mean_attention_distance_px"))


def inspect(
    checkpoint: Annotated[Path, typer.Argument(help="A vitc checkpoint (.safetensors) or run folder (its best).")],
    data: Annotated[
        Optional[str], typer.Option(help="Data for the attention statistics (default: the training data).")
    ] = None,
    data_dir: Annotated[Optional[Path], typer.Option(help="Folder of cifar10 or imagefolder data.")] = None,
    images: Annotated[int, typer.Option(min=1, help="Validation images to average over.")] = 64,
    out: Annotated[Optional[Path], typer.Option(help="Output folder (default: <checkpoint>.inspect/).")] = None,
    tensorboard: Annotated[
        Optional[Path],
        typer.Option(help="Also log the figures as images to this TensorBoard folder (RUN/tensorboard)."),
    ] = None,
    force: ForceOpt = False,
) -> None:
    """Per layer and head: attention distance, GPSA gates σ(λ), positional attention and spatial priors."""
    from vitc._io import report_path, write_json
    from vitc.analysis import figures
    from vitc.analysis.locality import analyse
    from vitc.checkpoint import read_checkpoint, resolve_checkpoint, training_data
    from vitc.data.datasets import load_dataset
    from vitc.data.transforms import eval_transform
    from vitc.models import get_model_cfg

    checkpoint = resolve_checkpoint(checkpoint)
    out = out or checkpoint.with_suffix(".inspect")
    summary = report_path(out / "summary.json", SUMMARY, "--out", force)  # not a run's summary.json: --out RUN
    model, meta = read_checkpoint(checkpoint)
    cfg = get_model_cfg(model)
    name, folder = training_data(checkpoint, meta, data, None if data_dir is None else str(data_dir))
    dataset = load_dataset(  # `images` of the split, spread over its classes (`capped`): only those decoded
        name, _split_read(name, folder), data_dir=folder, image_size=cfg.input_size[1], crop_pct=cfg.crop_pct,
        in_chans=cfg.input_size[0], on_bad_image="skip", crop_mode=cfg.crop_mode, recorded=meta.class_names,
        most=images, measured=True,
    )  # fmt: skip
    for why in dataset.skipped:  # as training left them out
        warn(why, "skipped:")
    batch = eval_transform(dataset.images, cfg.mean, cfg.std)
    report = analyse(model, batch)

    written = figures.write_all(report, out)
    if tensorboard is not None:
        from vitc.train.report import TensorBoardLog

        board = TensorBoardLog(tensorboard)
        epoch = meta.provenance.get("epoch")
        board.images(written, epoch if isinstance(epoch, int) else 0, prefix="inspect/")
        board.close()
    write_json(summary, report.summary() | {"data": name, "images": len(batch)})
    console = plain_console()
    for layer, row in zip(report.layers, report.distance):
        gate = report.gates.get(layer)
        extra = f"  σ(λ) {' '.join(f'{g:.2f}' for g in gate)}" if gate else ""
        console.print(f"{layer:<28} distance {sum(row) / len(row):6.2f} px{extra}", highlight=False)
    console.print(f"wrote {', '.join(p.name for p in written)} and summary.json to {out}")


def _split_read(name: str, folder: str | None) -> str:
    """val, or test for a folder copied without train/ that holds test/ alone: inspect has no --split to ask."""
    from vitc.data.files import held_out_only

    if name != "imagefolder" or folder is None or not held_out_only(Path(folder)):
        return "val"
    return "test" if (Path(folder) / "test").is_dir() and not (Path(folder) / "val").is_dir() else "val"
