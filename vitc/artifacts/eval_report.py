"""`vitc eval`'s report files: how each is recognised, its default name beside the file it measured, and
which of them a replacement of that file leaves describing a model or engine that is gone.

Here, below the stages, because more than `vitc eval` needs them: whatever replaces a checkpoint, an ONNX
file or a plan (`vitc.build.tensorrt.build_engine` from Python as well as the CLI's export, build and
train --resume) removes eval's reports of the old one with `remove_stale_reports`. No torch.
"""

from __future__ import annotations

import contextlib
import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

from vitc._io import ReportKind, json_record, json_report

EVAL_JSON = ReportKind("vitc eval report", ".json", json_report("top1", "confusion", "classes"))
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def is_eval_figure(path: Path) -> bool:
    """A PNG with eval's report beside it, or named as eval names its own (`*.confusion*.png`, whose JSON a
    full disk may have kept from being written): a run's curves.png or a photo is neither."""
    try:
        with open(path, "rb") as handle:
            signature = handle.read(len(PNG_SIGNATURE))
    except OSError:
        return False
    ours = ".confusion" in path.stem or EVAL_JSON.recognise(path.with_suffix(".json"))
    return signature == PNG_SIGNATURE and ours


EVAL_FIGURE = ReportKind("vitc eval confusion matrix", ".png", is_eval_figure)


def eval_report_path(source: Path, data_dir: Optional[Path], read: str) -> Path:
    """Beside the checkpoint or engine, named by the data measured: the folder given and the split read
    ("all" for a plain folder of class folders), so a report on another folder does not replace the one on
    the training data and says what it measured (best.confusion.test.png, best.confusion.more-photos.all.png,
    best.confusion.photos2.val.png for --data-dir photos2 without test/; a plain folder named val is
    best.confusion.val.all.png, not the training data's best.confusion.val.png)."""
    folder = "" if data_dir is None else f".{data_dir.resolve().name}"
    return source.with_name(f"{source.stem}.confusion{folder}.{read}.png")


def stale_reports(source: Path) -> List[Path]:
    """Eval's reports of `source` under its default names (`eval_report_path`: every folder and split
    measured): the JSONs that say they measured this file, and their PNGs. Replacing `source` makes them
    describe a model that is gone. A report named with --out, or of another file that is still there, is
    not one of them."""
    found: List[Path] = []
    prefix = f"{source.stem}.confusion."
    for json_path in sorted(source.parent.glob(f"{glob.escape(prefix)}*.json")):
        record = json_record(json_path) if EVAL_JSON.recognise(json_path) else None
        if record is None:
            continue
        measured = record.get("engine") or record.get("checkpoint")
        if not isinstance(measured, str) or Path(measured).name != source.name:
            continue
        if not json_path.name.endswith(f".{record.get('split')}.json"):  # not a default name: --out named it
            continue
        with contextlib.suppress(OSError):  # recorded relative to where eval ran: it may not resolve here
            if Path(measured).exists() and not os.path.samefile(measured, source):
                continue  # another file of that name, still there
        png = json_path.with_suffix(".png")
        found += [json_path] + ([png] if is_eval_figure(png) else [])
    return found


@dataclass(frozen=True)
class RemovedReports:
    """What `remove_stale_reports` did: the reports it removed, and a warning line for each it could not
    (the replacement itself has succeeded: a report of another user's in a sticky folder does not fail it)."""

    source: Path
    removed: Tuple[Path, ...] = ()
    failed: Tuple[str, ...] = ()


def remove_stale_reports(source: Path) -> RemovedReports:
    """Remove eval's reports of `source`, which has just been replaced: their figures are of the old file."""
    removed: List[Path] = []
    failed: List[str] = []
    for path in stale_reports(source):
        try:
            path.unlink(missing_ok=True)
            removed.append(path)
        except OSError as exc:
            failed.append(f"cannot remove {path} ({exc.strerror})")
    return RemovedReports(source, tuple(removed), tuple(failed))
