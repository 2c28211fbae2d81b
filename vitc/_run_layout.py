"""The files of a `vitc train` run folder (`train/runs/NAME/`), named once for the run that writes them and for
every command that reads them, and the one answer to "is this a run folder, and which checkpoint does it mean".

Training, `--resume`, `eval`, `export`, `compile`, `bench --ckpt`, `import`, `--pretrained`, `vitc.load_model`
and `info` each answered that on their own (best.safetensors, config.json or resume.safetensors present), so a
run stopped in its first epoch was a run folder to `vitc train` and "not a vitc train run folder" to `export`.
No torch and no numpy: `vitc info` reads run folders on a Jetson, and `vitc._io` keeps reports off a run's files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from vitc.errors import VitcError

BEST = "best.safetensors"  # the checkpoint a run folder stands for: its best validation top-1
LAST = "last.safetensors"  # the newest finished epoch's checkpoint
RESUME = "resume.safetensors"  # weights, optimiser and step: what `vitc train --resume` continues
CONFIG = "config.json"  # the run's resolved configuration, which --resume reads
SUMMARY = "summary.json"  # the finished run's test figures
METRICS = "metrics.jsonl"  # one line per epoch
CURVES = "curves.png"  # loss and accuracy per epoch
TENSORBOARD = "tensorboard"  # the event files of log.tensorboard
INDEX = "index.json"  # the image folder's listing (vitc.data.folder_index): a resume does not list the folder again
CHECKPOINTS = (BEST, LAST, RESUME)  # names only vitc train writes: a folder holding one is a run folder
# the run's records beside its config.json: never a report's place (a report over index.json was replaced by the
# next run's listing, silently)
RECORDS = (CONFIG, SUMMARY, METRICS, CURVES, INDEX)


@dataclass(frozen=True)
class RunLayout:
    """Where each file of the run folder `folder` is."""

    folder: Path

    @property
    def best(self) -> Path:
        return self.folder / BEST

    @property
    def last(self) -> Path:
        return self.folder / LAST

    @property
    def resume(self) -> Path:
        return self.folder / RESUME

    @property
    def config(self) -> Path:
        return self.folder / CONFIG

    @property
    def summary(self) -> Path:
        return self.folder / SUMMARY

    @property
    def metrics(self) -> Path:
        return self.folder / METRICS

    @property
    def curves(self) -> Path:
        return self.folder / CURVES

    @property
    def tensorboard(self) -> Path:
        return self.folder / TENSORBOARD

    @property
    def index(self) -> Path:
        return self.folder / INDEX


def is_run_folder(path: str | os.PathLike[str]) -> bool:
    """Whether `path` is a folder `vitc train` wrote a checkpoint or resume state in (a Hugging Face or timm
    folder holds model.safetensors, an export folder manifests: neither holds these names)."""
    folder = Path(path)
    return folder.is_dir() and any((folder / name).is_file() for name in CHECKPOINTS)


def run_record(path: str | os.PathLike[str]) -> str | None:
    """Which of a run's records (config.json, summary.json, metrics.jsonl, curves.png, index.json) `path` is, by its
    name beside the run's config.json, or None: what no report may replace and what `vitc info` describes as a run's."""
    file = Path(path)
    return file.name if file.name in RECORDS and (file.parent / CONFIG).is_file() else None


def is_resume_state(path: str | os.PathLike[str]) -> bool:
    """Whether `path` is a run's resume state (rank 0's resume.safetensors or a DDP rank's resume.rank1...):
    what `--resume` of its folder continues, not weights another command takes."""
    file = Path(path)
    return (
        file.suffix == Path(RESUME).suffix
        and file.name.startswith(Path(RESUME).stem + ".")
        and is_run_folder(file.parent)
    )


def run_checkpoint(path: str | os.PathLike[str]) -> Path:
    """The checkpoint run folder `path` stands for, its best.safetensors; a run folder without one (stopped in
    its first epoch, or no epoch's validation top-1 was a number) is one line saying what it holds instead."""
    layout = RunLayout(Path(path))
    if layout.best.is_file():
        return layout.best
    if layout.last.is_file():
        raise VitcError(
            f"{path} is a vitc train run folder without {BEST}: name {layout.last}, its last epoch's checkpoint"
        )
    if layout.resume.is_file():
        raise VitcError(
            f"{path} is a vitc train run folder holding no checkpoint, only its resume state (a run stopped in its "
            f"first epoch has no other): `vitc train --resume {path}` continues it"
        )
    raise VitcError(f"{path} is a vitc train run folder holding no checkpoint (no {BEST}, {LAST} or {RESUME})")
