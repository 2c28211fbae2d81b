"""The resume file's header record, read without torch.

`vitc train` writes `resume.safetensors` (vitc.train.state: tensors plus this JSON record under
RESUME_KEY in the safetensors metadata); `vitc info` summarises it here, on machines without torch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict, Optional

from vitc._io import parse_json, read_safetensors_metadata
from vitc.errors import VitcError

RESUME_KEY = "vitc.resume"  # the safetensors metadata key of the record


@dataclass(frozen=True)
class ResumeSummary:
    """Where a run stopped, as `vitc info` shows it."""

    model: str
    args: Dict[str, Any]
    classes: int
    processes: Optional[int]
    next_epoch: int
    of_epochs: Optional[int]
    global_step: int
    best_top1: Optional[float]
    epochs_done: int
    step_in_epoch: int = 0  # steps of next_epoch already trained (a stop within it)
    stopped_early: bool = False  # its last epoch ended the run (optim.patience)

    @property
    def unfinished(self) -> bool:
        """Whether `vitc train --resume` has epochs left to train at the settings the file records."""
        left = self.of_epochs is not None and self.next_epoch <= self.of_epochs and not self.stopped_early
        return self.step_in_epoch > 0 or left

    def next_step(self, run: str) -> str:
        """What `vitc train --resume run` does with this file: where it goes on, or, for a run with nothing
        left to train ("continues it at epoch 4 of 3" before), that it finished and how to train it longer."""
        if self.unfinished:
            return f"`vitc train --resume {run}` continues it at {self.where()}"
        done = self.next_epoch - 1
        if self.stopped_early and self.of_epochs is not None and done < self.of_epochs:
            return (
                f"the run stopped early after epoch {done} of {self.of_epochs} (optim.patience): `vitc train "
                f"--resume {run} --set optim.patience=0` trains its other {self.of_epochs - done}"
            )
        epochs = f"{done} epoch{'s' if done != 1 else ''}"
        return f"the run finished its {epochs}: `vitc train --resume {run} --epochs N` (N > {done}) trains it longer"

    def where(self) -> str:
        """Where --resume goes on: `epoch 2 of 3, from its step 4` (a stop within it), or `epoch 2 of 3`."""
        of = f" of {self.of_epochs}" if self.of_epochs else ""
        within = f", from its step {self.step_in_epoch + 1}" if self.step_in_epoch else ""
        return f"epoch {self.next_epoch}{of}{within}"


def resume_summary(path: str | os.PathLike[str]) -> Optional[ResumeSummary]:
    """The summary of a resume file, None for a safetensors file without the record (a checkpoint);
    a damaged record is a one-line VitcError."""
    metadata = read_safetensors_metadata(path)
    if RESUME_KEY not in metadata:
        return None
    record = parse_json(metadata[RESUME_KEY], f"{path}: the resume record")
    try:
        state, info = record["state"], record["info"]
        config = info.get("config") or {}
        return ResumeSummary(
            model=info["model"],
            args=info.get("args", {}),
            classes=len(info.get("classes") or []),
            processes=info.get("processes"),
            next_epoch=state["epoch"] + 1,
            of_epochs=(config.get("optim") or {}).get("epochs"),
            global_step=state["global_step"],
            best_top1=state["best_top1"] if state["best_top1"] >= 0 else None,
            epochs_done=len(state.get("history") or []),
            step_in_epoch=int(state.get("step_in_epoch") or 0),
            stopped_early=bool((state.get("history") or [{}])[-1].get("stopped_early")),
        )
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise VitcError(f"{path}: a damaged vitc resume file ({type(exc).__name__}: {exc})") from exc


def refuse_resume_state(path: str | os.PathLike[str], metadata: Dict[str, str]) -> None:
    """A VitcError where a resume file is given as weights to load: it holds the optimiser's state beside the
    weights, and its checkpoints lie beside it (the errors before told the user to import or name it)."""
    if RESUME_KEY in metadata:
        raise VitcError(
            f"{path} is a run's resume state (weights, optimiser and step, for vitc train --resume), not a "
            "checkpoint: load best.safetensors or last.safetensors beside it"
        )
