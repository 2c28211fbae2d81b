"""Resumable training state in one safetensors file: no pickle, one atomic write.

`resume.safetensors` holds the model, the optimiser moments, the EMA weights and the RNG states as
tensors, and the rest (epoch, step, history, optimiser hyper-parameters) as JSON in the header. A
resumed run continues bit-for-bit: same weights, same moments, same random draws.

Under DDP that file is rank 0's. Interrupted within an epoch, every other process writes its own part
beside it, `resume.rank<N>.safetensors`: its random streams and the epoch's running sums, which only it
holds. Each writes its own (a Ctrl-C'd process may be unable to join a collective: a peer can be
blocked in the step's gradient all-reduce), and a resume uses it only where it was saved at the step
rank 0's file stands at, by as many processes.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vitc._io import atomic_write
from vitc.artifacts.resume import RESUME_KEY as _META  # its torch-free reader (vitc info) lives beside it
from vitc.checkpoint import load_state_dict
from vitc.errors import VitcError, joined_lines


@dataclass
class TrainState:
    """Where a run is: the next epoch and step within it, the history so far and the best score."""

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    best_top1: float = -1.0
    history: list[dict[str, Any]] = field(default_factory=list)
    partial: dict[str, float] = field(default_factory=dict)  # running sums of an interrupted epoch
    seconds: float = 0.0  # wall time of the run so far, over every session (a resume adds to it)
    train_seconds: float = 0.0  # of which in training steps, for the images/s figure
    images_seen: int = 0
    stopped_early: bool = False  # optim.patience ran out: a resume has nothing left to train


def save_state(
    path: str | os.PathLike[str],
    state: TrainState,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    ema: nn.Module | None,
    generators: dict[str, torch.Generator],
    info: dict[str, Any],
    scaler: torch.amp.GradScaler | None = None,
) -> None:
    """Write everything a resumed run needs to continue exactly: weights, EMA, optimiser moments, every
    random stream, and fp16's loss scale (a resume from 65536 would overflow and skip steps again)."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if ema is not None:
        tensors.update({f"ema.{k}": v.detach().cpu().contiguous() for k, v in ema.state_dict().items()})
    opt = optimizer.state_dict()
    for index, slots in opt["state"].items():
        for slot, value in slots.items():
            tensors[f"opt.{index}.{slot}"] = torch.as_tensor(value).detach().cpu().contiguous()
    tensors.update(_rng_tensors(generators))
    groups = [{k: v for k, v in g.items() if k != "params"} | {"params": g["params"]} for g in opt["param_groups"]]
    record = {"state": state.__dict__, "param_groups": groups, "info": info}
    if scaler is not None and scaler.is_enabled():
        record["scaler"] = scaler.state_dict()
    from safetensors.torch import save_file

    with atomic_write(path) as tmp:
        save_file(tensors, str(tmp), metadata={_META: json.dumps(record)})


def load_state(
    path: str | os.PathLike[str],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    ema: nn.Module | None,
    generators: dict[str, torch.Generator],
    scaler: torch.amp.GradScaler | None = None,
) -> tuple[TrainState, dict[str, Any]]:
    """Restore everything `save_state` wrote; returns the state and the run info saved with it."""
    from vitc._io import parse_json, read_safetensors_metadata

    text = read_safetensors_metadata(path).get(_META)
    if text is None:
        raise VitcError(f"{path}: not a vitc resume file")
    record = parse_json(text, f"{path}: the resume metadata")
    sections = record if isinstance(record, dict) else {}
    if not (isinstance(sections.get("state"), dict) and isinstance(sections.get("info"), dict)):
        raise VitcError(f"{path}: not a resume state written by vitc train")
    try:
        return _restore(path, record, model, optimizer, ema, generators, scaler)
    except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as exc:
        raise VitcError(f"{path}: not a resume state written by vitc train ({joined_lines(exc, 200)})") from exc


def _restore(
    path: str | os.PathLike[str],
    record: dict[str, Any],
    model: Any,
    optimizer: Any,
    ema: Any,
    generators: dict[str, torch.Generator],
    scaler: torch.amp.GradScaler | None,
) -> tuple[TrainState, dict[str, Any]]:
    from vitc.models.loading import load_strict

    tensors = load_state_dict(path)
    load_strict(model, _section(tensors, "model."), source=str(path))
    if ema is not None:
        load_strict(ema, _section(tensors, "ema."), source=f"{path} (EMA)")
    slots: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in _section(tensors, "opt.").items():
        index, slot = key.split(".", 1)
        # copied: the optimiser keeps a tensor of its dtype and device as it is, and safetensors' tensors are views
        # of the file mapped in memory, which Windows then refuses to replace (the next epoch's resume state:
        # "a file with a user-mapped section open")
        slots.setdefault(int(index), {})[slot] = value.clone()
    # which kernel steps (fused on a GPU: vitc.train.setup) is this session's device's, not the saved session's:
    # load_state_dict takes every setting of a group from the file, and places the `step` counts by its `fused`
    groups = record["param_groups"]
    if (
        isinstance(groups, list)
        and len(groups) == len(optimizer.param_groups)
        and all(isinstance(g, dict) for g in groups)
    ):
        groups = [{**saved, **_kernel(fresh)} for saved, fresh in zip(groups, optimizer.param_groups, strict=True)]
    try:
        optimizer.load_state_dict({"state": slots, "param_groups": groups})
    except (ValueError, KeyError) as exc:
        raise VitcError(f"{path}: the optimiser state does not fit this model ({exc})") from exc
    _restore_rngs(tensors, generators)
    if scaler is not None and scaler.is_enabled() and record.get("scaler"):
        scaler.load_state_dict(record["scaler"])
    return TrainState(**record["state"]), record["info"]


KERNEL_SETTINGS = ("fused", "foreach", "capturable")  # how an optimiser steps, which the device decides


def _kernel(group: dict[str, Any]) -> dict[str, Any]:
    return {name: group[name] for name in KERNEL_SETTINGS if name in group}


_RANK_META = "vitc.resume.rank"  # a DDP process's own part: where it stood, how many processes, its sums


@dataclass(frozen=True)
class RankState:
    """DDP process `rank` (> 0) of `world_size`: its own part of the resume state, beside rank 0's file."""

    resume_path: Path
    rank: int
    world_size: int

    @property
    def path(self) -> Path:
        return self.resume_path.with_name(f"{self.resume_path.stem}.rank{self.rank}{self.resume_path.suffix}")

    def save(self, state: TrainState, generators: dict[str, torch.Generator]) -> None:
        """This process's random streams and running sums, at the step `state` stands at (within an epoch)."""
        record = {"position": _position(state), "world_size": self.world_size, "partial": state.partial}
        from safetensors.torch import save_file

        with atomic_write(self.path) as tmp:
            save_file(_rng_tensors(generators), str(tmp), metadata={_RANK_META: json.dumps(record)})

    def load(self, state: TrainState, generators: dict[str, torch.Generator]) -> bool:
        """Restore what `save` wrote, into `state` and the generators, where it was saved at the step `state`
        stands at by as many processes; False, with nothing changed, otherwise (no file, or one from another
        step: the process stopped elsewhere than rank 0, or in an earlier session)."""
        from vitc._io import parse_json, read_safetensors_metadata

        if not self.path.is_file():
            return False
        record = parse_json(read_safetensors_metadata(self.path).get(_RANK_META, "{}"), str(self.path))
        if not isinstance(record, dict) or record.get("position") != _position(state):
            return False
        if record.get("world_size") != self.world_size or not isinstance(record.get("partial"), dict):
            return False
        _restore_rngs(load_state_dict(self.path), generators)
        state.partial = {key: float(value) for key, value in record["partial"].items()}
        return True


def remove_rank_states(resume_path: str | os.PathLike[str]) -> None:
    """The other processes' parts are past once rank 0's file moves on (an epoch's end)."""
    path = Path(resume_path)
    for stale in path.parent.glob(f"{path.stem}.rank*{path.suffix}"):
        stale.unlink(missing_ok=True)


def _position(state: TrainState) -> list[int]:
    return [state.epoch, state.step_in_epoch, state.global_step]


def _rng_tensors(generators: dict[str, torch.Generator]) -> dict[str, torch.Tensor]:
    tensors = {f"rng.{name}": value for name, value in rng_states().items()}
    tensors.update({f"rng.{name}": gen.get_state() for name, gen in generators.items()})
    return tensors


def _restore_rngs(tensors: dict[str, torch.Tensor], generators: dict[str, torch.Generator]) -> None:
    set_rng_states(_section(tensors, "rng."))
    for name, gen in generators.items():
        gen.set_state(tensors[f"rng.{name}"])


def rng_states() -> dict[str, torch.Tensor]:
    """torch's default generators: the CPU's and, once CUDA is in use, the current GPU's (drop-path draws
    its masks there on a GPU, so a resumed run continues them rather than replaying the first session's)."""
    states = {"torch": torch.get_rng_state()}
    if torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state()
    return states


def set_rng_states(states: dict[str, torch.Tensor]) -> None:
    """Restore what rng_states() gave (a CUDA state only where there is a GPU: a run resumed on a CPU
    draws nothing on one)."""
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state(states["cuda"])


def _section(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
