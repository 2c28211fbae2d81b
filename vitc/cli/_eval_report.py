"""vitc eval's report files: what they are, where they go, writing one, and removing those a new file outdates.

A report is a JSON of the figures (vitc.metrics) with a confusion-matrix PNG beside it, named by default beside
the checkpoint or engine measured and after the data read. `vitc eval` writes them; `vitc info` recognises the
JSON; `vitc export`, `vitc build` and `vitc train` remove those of a file they replace (`drop_stale_reports`).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Tuple

from rich.table import Table

from vitc._io import ReportKind, json_record, json_report, report_path
from vitc._terminal import Fitted
from vitc.cli._console import console, warn
from vitc.errors import VitcError

if TYPE_CHECKING:
    import numpy as np

EVAL_JSON = ReportKind("vitc eval report", ".json", json_report("top1", "confusion", "classes"))
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _is_eval_figure(path: Path) -> bool:
    """A PNG with eval's report beside it, or named as eval names its own (`*.confusion*.png`, whose JSON a
    full disk may have kept from being written): a run's curves.png or a photo is neither."""
    try:
        with open(path, "rb") as handle:
            signature = handle.read(len(PNG_SIGNATURE))
    except OSError:
        return False
    ours = ".confusion" in path.stem or EVAL_JSON.recognise(path.with_suffix(".json"))
    return signature == PNG_SIGNATURE and ours


EVAL_FIGURE = ReportKind("vitc eval confusion matrix", ".png", _is_eval_figure)


def report_files(png: Path, force: bool) -> Tuple[Path, Path]:
    """The confusion-matrix PNG and the JSON beside it, each free or an earlier eval report (or --force)."""
    json_path = report_path(png.with_suffix(".json"), EVAL_JSON, "--out", force)  # first: it names the PNG
    return report_path(png, EVAL_FIGURE, "--out", force), json_path


def default_png(source: Path, data_dir: Optional[Path], read: str) -> Path:
    """Beside the checkpoint or engine, named by the data measured: the folder given and the split read
    ("all" for a plain folder of class folders), so a report on another folder does not replace the one on
    the training data and says what it measured (best.confusion.test.png, best.confusion.more-photos.all.png,
    best.confusion.photos2.val.png for --data-dir photos2 without test/; a plain folder named val is
    best.confusion.val.all.png, not the training data's best.confusion.val.png)."""
    folder = "" if data_dir is None else f".{data_dir.resolve().name}"
    return source.with_name(f"{source.stem}.confusion{folder}.{read}.png")


def stale_reports(source: Path) -> List[Path]:
    """Eval's reports of `source` under its default names (`default_png`: every folder and split measured):
    the JSONs that say they measured this file, and their PNGs. Replacing `source` (export or build with
    --force, a resumed run) makes them describe a model that is gone. A report named with --out, or of
    another file that is still there, is not one of them."""
    import glob

    found: List[Path] = []
    prefix = f"{source.stem}.confusion."
    for json_path in sorted(source.parent.glob(f"{glob.escape(prefix)}*.json")):
        record = json_record(json_path) if EVAL_JSON.recognise(json_path) else None
        measured = record and (record.get("engine") or record.get("checkpoint"))
        if not isinstance(measured, str) or Path(measured).name != source.name:
            continue
        if not json_path.name.endswith(f".{record.get('split')}.json"):  # not a default name: --out named it
            continue
        with contextlib.suppress(OSError):  # recorded relative to where eval ran: it may not resolve here
            if Path(measured).exists() and not os.path.samefile(measured, source):
                continue  # another file of that name, still there
        png = json_path.with_suffix(".png")
        found += [json_path] + ([png] if _is_eval_figure(png) else [])
    return found


def drop_stale_reports(replaced: Iterable[Path]) -> None:
    """Remove eval's reports of the files just replaced, and say so (their figures are of the old file);
    one that cannot be removed is a warning: the replacement itself has succeeded."""
    terminal = console()
    for source in replaced:
        removed = []
        for path in stale_reports(source):
            try:
                path.unlink(missing_ok=True)
                removed.append(path.name)
            except OSError as exc:
                warn(f"cannot remove {path} ({exc.strerror})")
        if removed:
            terminal.print(
                f"removed {', '.join(removed)}: vitc eval's reports of the replaced {source.name}", soft_wrap=True
            )


def write_report(
    logits: np.ndarray,
    labels: np.ndarray,
    known: Optional[List[str]],
    head: Dict[str, Any],
    shown: str,
    *,
    skipped: List[str],
    device: str,
    png: Path,
    force: bool,
) -> None:
    """The per-class table and summary line on the terminal, the figures as JSON, the confusion matrix as a
    PNG (when matplotlib is there: a Jetson's runtime install may lack it) and the JSON beside it, unless
    another file is in their place (checked here for the default names, known once the data was read)."""
    from vitc._io import write_json
    from vitc._lazy import has_module
    from vitc.metrics import classification_report

    figures = classification_report(logits, labels, known)
    report = {**head, "images": figures.pop("images"), "skipped": skipped, "device": device, **figures}
    confusion, num_classes = report["confusion"], logits.shape[1]
    terminal = console()
    written: List[Path] = []
    unwritten: Optional[VitcError] = None
    try:  # the JSON and the table first: drawing (the slow part, and matplotlib's) then loses nothing
        png, json_path = report_files(png, force)
        write_json(json_path, report)
        written.append(json_path)
    except VitcError as exc:  # a read-only folder, a full disk: said after the result, not instead of it
        unwritten = exc
    terminal.print(_per_class_table(report["classes"]))
    if unwritten is None and not has_module("matplotlib"):
        terminal.print(f"no confusion PNG: matplotlib is not installed (the counts are in {json_path.name})")
    elif unwritten is None:
        from vitc.train.report import plot_confusion

        try:
            plot_confusion(confusion["counts"], confusion["true"], png, shown, confusion["other"], data=head["folder"])
            written.insert(0, png)
        except VitcError as exc:
            unwritten = exc
    if report["nan_images"]:
        warn(
            f"{report['nan_images']} images gave NaN logits, each counted as wrong (the confusion's other column): "
            "the model's numbers overflow, or its weights hold NaN"
        )
    present = len(confusion["true"])
    of = f", {present} of the model's {num_classes} classes" if present < num_classes else ""
    unread = f", {len(skipped)} unreadable skipped" if skipped else ""
    terminal.print(
        f"{shown} on {head['folder']} ({report['images']} images{of}{unread}): top-1 {report['top1']:.2f}%"
        + (f"  top-5 {report['top5']:.2f}%" if "top5" in report else "")
        + (f"  → {' and '.join(str(p) if i == 0 else p.name for i, p in enumerate(written))}" if written else ""),
        soft_wrap=True,
    )
    if unwritten is not None:  # the evaluation (minutes on a Jetson) is not lost to a folder it cannot write in
        raise VitcError(f"{unwritten}; the report above is not saved: --out DIR/{png.name} writes it elsewhere")


def _per_class_table(classes: List[Dict[str, Any]]) -> Fitted:
    """Class names fold, the figures stay whole at any width."""
    table = Table(title="per class")
    table.add_column("class", overflow="fold")
    for column in ("precision", "recall", "support"):
        table.add_column(column, justify="right", no_wrap=True)
    for row in classes:
        cells = ["-" if row[k] is None else f"{row[k]:.1f}%" for k in ("precision", "recall")]
        table.add_row(row["class"], *cells, str(row["support"]))
    return Fitted(table)
