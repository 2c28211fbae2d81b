"""Whether a run has anything left to train, read from its files without torch.

`vitc train --resume` of a run that has trained its epochs (or stopped early on optim.patience) and written
its summary says so and leaves the run folder untouched: a job scheduler's requeue script that always runs
--resume (SLURM's --requeue) finds the finished run as it was, as timm's train.py trains zero epochs and exits,
rather than scoring the test split again and adding its seconds to summary.json's time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vitc._io import parse_json, read_safetensors_metadata
from vitc._run_layout import RunLayout
from vitc.artifacts.resume import RESUME_KEY
from vitc.errors import VitcError


def out_of_patience(history: list[dict[str, Any]], patience: int, epochs: int) -> bool:
    """val top-1 has not improved on its best for `patience` epochs (0: never), before the last epoch."""
    if not patience or not history or history[-1]["epoch"] >= epochs:
        return False
    best = max(history, key=lambda row: row["val_top1"])  # the first epoch that reached the best
    return history[-1]["epoch"] - best["epoch"] >= patience


@dataclass(frozen=True)
class FinishedRun:
    """A run with nothing left to train under the settings it is resumed with, and what its summary recorded."""

    folder: Path
    epochs: int  # trained
    of_epochs: int  # optim.epochs
    patience: int
    summary: dict[str, Any]

    def line(self, resume: str) -> str:
        """What `resume` (the command that continues the run) finds: the result, where it is, how to go on."""
        split = self.summary.get("test_split") or "test"
        figures = f"{split} top-1 {_percent(self.summary.get('test_top1'))}"
        figures += f" (best val top-1 {_percent(self.summary.get('best_val_top1'))})"
        where = f"{figures} in {RunLayout(self.folder).summary}; nothing to do"
        if self.epochs < self.of_epochs:
            return (
                f"run {self.folder.name!r} stopped early after epoch {self.epochs} of {self.of_epochs} "
                f"(optim.patience {self.patience}): {where} (`{resume} --set optim.patience=0` trains its other "
                f"{self.of_epochs - self.epochs})"
            )
        plural = "s" if self.epochs != 1 else ""
        return (
            f"run {self.folder.name!r} has finished its {self.epochs} epoch{plural}: {where} "
            f"(`{resume} --epochs N` with N > {self.epochs} trains it longer)"
        )


def finished_run(folder: Path, epochs: int, patience: int) -> FinishedRun | None:
    """The run in `folder` when it has trained `epochs` epochs (or stopped early under `patience`) and written
    summary.json of them; None when anything is left (a run stopped in its final test has no summary of its
    epochs yet: --resume scores it), or when its files cannot say, which the resume itself then reports."""
    summary_path, state_path = RunLayout(folder).summary, RunLayout(folder).resume
    if not summary_path.is_file() or not state_path.is_file():
        return None
    try:
        summary = parse_json(summary_path.read_bytes(), str(summary_path))
        record = parse_json(read_safetensors_metadata(state_path).get(RESUME_KEY, "{}"), str(state_path))
        state = record["state"]
        history, within = state["history"], state["step_in_epoch"]
        if not isinstance(summary, dict) or not isinstance(history, list) or within or not history:
            return None
        if summary.get("epochs") != len(history):  # the summary of an earlier length (--epochs raised since)
            return None
        if len(history) < epochs and not out_of_patience(history, patience, epochs):
            return None
    except (OSError, VitcError, KeyError, TypeError, ValueError, AttributeError):
        return None
    return FinishedRun(folder, len(history), epochs, patience, summary)


def _percent(value: Any) -> str:
    return f"{value:.2f}%" if isinstance(value, (int, float)) and not isinstance(value, bool) else "?"
