"""What a training run writes about itself: checkpoint metadata, summary.json, and the resume check.

Kept beside the loop rather than in it: these are the run's records (read back by `vitc info`,
`vitc eval` and `--resume`), not steps of training.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vitc._run_layout import RunLayout
from vitc.checkpoint import CheckpointMeta, meta_for
from vitc.errors import VitcError
from vitc.train.config import flatten, from_dict

if TYPE_CHECKING:
    import torch

    from vitc.train.config import TrainConfig
    from vitc.train.loop import RunResult


def checkpoint_meta(model: torch.nn.Module, run_info: dict[str, Any], row: dict[str, Any]) -> CheckpointMeta:
    """A checkpoint's description: classes, where it came from in this run, and the recipe that made it."""
    return meta_for(
        model,
        class_names=run_info["classes"],
        provenance={
            "trained_by": "vitc train",
            "epoch": row["epoch"],
            "val_top1": row["val_top1"],
            "val_precision": run_info.get("val_precision", "fp32"),  # the run's autocast: as its training
            "processes": run_info["processes"],
            **_pretrained_fields(run_info.get("pretrained")),
            **({"resumed": resumes_text(run_info["resumes"])} if run_info.get("resumes") else {}),
        },
        extra={"train_config": run_info["config"]},
    )


_SAME_RUN = ("run.name", "run.out_dir")  # they find the run (its folder); a run named by its model records ''


def changed_settings(before: dict[str, Any], after: dict[str, Any]) -> dict[str, list[Any]]:
    """The settings a resume changed, `{dotted key: [old, new]}`, between two config.json records (sorted)."""
    was, now = flatten(before), flatten(after)
    return {key: [was.get(key), now[key]] for key in sorted(now) if now[key] != was.get(key) and key not in _SAME_RUN}


def resume_record(state_epoch: int, step_in_epoch: int, changed: dict[str, list[Any]]) -> dict[str, Any]:
    """One resume of a run, as summary.json lists them: where it went on (1-based epoch, steps of it already
    trained) and what settings it changed. config.json holds only the newest values: this keeps which epochs
    were trained with the older ones."""
    return {"epoch": state_epoch + 1, "step": step_in_epoch, "changed": changed}


def resumes_text(resumes: list[dict[str, Any]]) -> str:
    """A checkpoint's provenance row: `at epoch 2, step 4 (optim.lr 0.001 → 0.0001); at epoch 3`."""
    parts = []
    for r in resumes:
        step = f", step {r['step'] + 1}" if r.get("step") else ""
        changes = ", ".join(f"{key} {old!r} → {new!r}" for key, (old, new) in r.get("changed", {}).items())
        parts.append(f"at epoch {r['epoch']}{step}" + (f" ({changes})" if changes else ""))
    return "; ".join(parts)


def _pretrained_fields(record: dict[str, Any] | None) -> dict[str, Any]:
    """The starting weights in a checkpoint's provenance, flat so that `vitc info` shows one row each."""
    if not record:
        return {}
    return {
        "pretrained": record["file"],
        "pretrained_sha256": record["sha256"],
        "pretrained_format": record["source_format"],
    }


def summary_record(cfg: TrainConfig, result: RunResult) -> dict[str, Any]:
    """summary.json: what the run achieved, machine-readable (the CLI prints the same as a table)."""
    best = max(result.history, key=lambda row: row["val_top1"], default=None)
    return {
        "model": cfg.model.name,
        "data": cfg.data.name,
        "test_split": result.test_split,  # "val": an image folder without test/ is scored on val
        "test_top1": result.test.get("top1"),
        "test_top5": result.test.get("top5"),
        "best_val_top1": result.best_val_top1,
        "val_precision": result.val_precision,  # validation ran under the run's autocast, as its training did
        "test_precision": "fp32",  # the final test: as `vitc eval` and the exports' FP32 row
        "best_epoch": best["epoch"] if best else None,
        "epochs": len(result.history),
        "stopped_early": bool(result.stopped_early),
        "patience": cfg.optim.patience,
        "skipped_images": result.skipped_images,
        "seconds": result.seconds,
        "train_images_per_s": result.train_images_per_s,  # over the epochs' training time, warm-up and waits included
        **result.timing,  # this session's steps, waits, warm-up, evaluation (vitc.train.meter.StepMeter.summary)
        "compile": cfg.run.compile,
        "compile_seconds": result.compile_seconds,
        "attention": result.attention,  # per GPSA/SP-SA kind: the formulation chosen, and each one's time
        "sync_bn": result.sync_bn,  # run.sync_bn in effect: BatchNorm normalised over every process's batch
        "processes": result.processes,  # as the checkpoint's provenance: DDP's world size
        "checkpoint": str(RunLayout(result.run_dir).best),
        "pretrained": cfg.model.pretrained,
        "resumes": result.resumes,  # each --resume: where it went on and the settings it changed
    }


def _resume_record(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the resume file's record, its run info), or a one-line error for a file vitc train did not write."""
    from vitc._io import parse_json, read_safetensors_metadata
    from vitc.artifacts.resume import RESUME_KEY

    saved = parse_json(read_safetensors_metadata(path).get(RESUME_KEY, "{}"), str(path))
    info = saved.get("info") if isinstance(saved, dict) else None
    if not isinstance(info, dict):
        raise VitcError(f"{path} is not a resume state written by vitc train")
    return saved, info


def recorded_classes(path: Path) -> list[str] | None:
    """The class order a run recorded (its head's rows): a resumed run reads its image folder in it, though
    runs before timm's natural order sorted the names plainly."""
    classes = _resume_record(path)[1].get("classes")
    return classes if isinstance(classes, list) and all(isinstance(c, str) for c in classes) else None


def recorded_model_args(path: Path) -> dict[str, Any]:
    """model.args as the run's configuration recorded them when its resume state was saved."""
    config = _resume_record(path)[1].get("config")
    model = config.get("model") if isinstance(config, dict) else None
    args = model.get("args") if isinstance(model, dict) else None
    return args if isinstance(args, dict) else {}


def check_resumable(path: Path, run_info: dict[str, Any]) -> None:
    """A resume must continue the same model on the same data: anything else is a clear error."""
    saved, info = _resume_record(path)
    if info.get("model") != run_info["model"]:
        raise VitcError(f"{path} was written by {info.get('model')} {info.get('args')}, not {run_info['model']}")
    theirs, ours = info.get("args") or {}, run_info["args"]
    if theirs != ours:  # named, key by key (img_size: a resume with another data.image_size)
        changed = ", ".join(
            f"{key} {ours.get(key, 'at its default')} (was {theirs.get(key, 'its default')})"
            for key in sorted(set(theirs) | set(ours), key=str)
            if theirs.get(key) != ours.get(key)
        )
        raise VitcError(f"{path} was written by {info.get('model')} with other arguments than this run's: {changed}")
    if info.get("classes") != run_info["classes"]:
        raise VitcError(f"{path} was trained on other classes than this data set's")
    state = saved.get("state") if isinstance(saved.get("state"), dict) else {}
    epoch, step = state.get("epoch"), state.get("step_in_epoch")
    if isinstance(epoch, int) and isinstance(step, int) and step > 0:
        _check_epoch_order(path, epoch, step, info, run_info)


# What a run stopped within an epoch finds its place in that epoch's order by (vitc.train.loop._train_epoch):
# the seeded permutation, the repeated order, the samples a step takes, the share of the training set. Another
# number of processes, epochs or anything else may change: a step covers the same samples under any.
EPOCH_ORDER = ("run.seed", "aug.repeats", "optim.batch_size", "data.fraction")


def _check_epoch_order(path: Path, epoch: int, step: int, saved: dict[str, Any], run_info: dict[str, Any]) -> None:
    """A run resumed within an epoch must draw the rest of that epoch as it would have gone on: a changed
    setting of its order would train some samples twice and others not at all, silently."""
    where = f"{path} stopped within epoch {epoch + 1}, after step {step},"
    was, now = from_dict(saved.get("config") or {}), from_dict(run_info["config"])  # an older file: defaults
    for key in EPOCH_ORDER:
        section, name = key.split(".")
        old, new = (json.dumps(getattr(getattr(cfg, section), name)) for cfg in (was, now))
        if old != new:
            raise VitcError(
                f"{where} with {key}={old}, which the rest of that epoch's order depends on: resume with "
                f"{key}={old} (not {new}), or start a new run with {key}={new}"
            )
    if saved.get("train_images") not in (None, run_info["train_images"]):
        raise VitcError(
            f"{where} on {saved['train_images']} training images, where this data has {run_info['train_images']}: "
            "resume on the images it trained on, or start a new run on these"
        )
