"""vitc eval's report files: what they are, where they go, writing one, and removing those a new file outdates.

A report is a JSON of the figures (vitc.metrics) with a confusion-matrix PNG beside it, named by default beside
the checkpoint or engine measured and after the data read. `vitc eval` writes them; what they are
and which a replaced file outdates is vitc.artifacts.eval_report (below the stages: build_engine removes them
too); `vitc export`, `vitc build` and `vitc train` remove and name them here (`drop_stale_reports`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Tuple

from rich.table import Table

from vitc._io import report_path
from vitc._terminal import Fitted
from vitc.cli._console import console, warn
from vitc.errors import VitcError

if TYPE_CHECKING:
    import numpy as np

    from vitc.artifacts.eval_report import RemovedReports


def report_files(png: Path, force: bool) -> Tuple[Path, Path]:
    """The confusion-matrix PNG and the JSON beside it, each free or an earlier eval report (or --force)."""
    from vitc.artifacts.eval_report import EVAL_FIGURE, EVAL_JSON  # numpy with vitc.artifacts: not for --help

    json_path = report_path(png.with_suffix(".json"), EVAL_JSON, "--out", force)  # first: it names the PNG
    return report_path(png, EVAL_FIGURE, "--out", force), json_path


def default_png(source: Path, data_dir: Optional[Path], read: str) -> Path:
    """Where eval writes its report of `source` unless --out says (vitc.artifacts.eval_report.eval_report_path)."""
    from vitc.artifacts.eval_report import eval_report_path

    return eval_report_path(source, data_dir, read)


def drop_stale_reports(replaced: Iterable[Path]) -> None:
    """Remove eval's reports of the files just replaced (`remove_stale_reports`), and say so."""
    from vitc.artifacts.eval_report import remove_stale_reports

    for source in replaced:
        dropped = remove_stale_reports(source)
        for line in dropped.failed:
            warn(line)
        say_removed(dropped)


def say_removed(dropped: RemovedReports) -> None:
    """The line that names the reports a replacement removed (nothing when there were none)."""
    if dropped.removed:
        names = ", ".join(path.name for path in dropped.removed)
        console().print(f"removed {names}: vitc eval's reports of the replaced {dropped.source.name}", soft_wrap=True)


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
