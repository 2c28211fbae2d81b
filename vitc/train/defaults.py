"""The defaults a run resolves before training: those that depend on the starting weights, the data's kind
and size, the run's length and fine-tuning. Each choice is one line to print, and the resolved values are
what the run folder's config.json records (vitc.train.config holds the recipe and its validation).
"""

from __future__ import annotations

import math
from pathlib import Path

from vitc.train.config import DEFAULT_MODEL, TrainConfig, check_warmup_lr

BATCH_SIZE, LR = 64, 1e-3  # from scratch
WARMUP_EPOCHS = 3
WARMUP_SHARE = 0.2  # a default warm-up takes at most this share of the epochs
FINETUNE_WARMUP_SHARE = 0.1  # fine-tuning warms up over a tenth of the run (rounded up), at most WARMUP_SHARE
FINETUNE_LAYER_DECAY = 0.75
FINETUNE_BATCHES = (64, 32, 16, 8)
FINETUNE_STEPS_PER_EPOCH = 10
FINETUNE_BASE_LR, FINETUNE_BASE_BATCH = 2e-3, 1024  # MAE's fine-tuning rate (with layer decay) at its batch
FEW_STEPS = 100  # a run of fewer optimiser steps gets a warning
FLIP_DEFAULTS = {  # is a mirrored image still an image of its class?
    "digits": (False, "mirrored digits are other glyphs"),
    "cifar10": (True, "a mirrored photo shows the same class"),
    "imagefolder": (True, "a mirrored photo shows the same class; set aug.flip=false if not"),
}


def resolve_defaults(cfg: TrainConfig) -> list[str]:
    """Fill in the defaults that depend on the starting weights, the data's kind, the run length and
    fine-tuning; one line per choice, to print. Reads only the data folder's listing and the weights'
    header or config.json: the CLI calls it before importing torch.

    The resolved values are what the run folder's config.json records, so a resumed or repeated
    run uses them explicitly. Those that depend on the data's size follow in `resolve_for_data`.
    """
    from vitc.data.files import detect_kind

    notes = []
    if cfg.model.name is None:
        notes += _resolve_model(cfg)
    if cfg.data.dir:  # recorded whole: `vitc eval RUN` and --resume find it from any folder
        cfg.data.dir = str(Path(cfg.data.dir).absolute())  # `~` expanded as the config was checked
    if cfg.data.name is None:
        cfg.data.name = detect_kind(Path(cfg.data.dir)) if cfg.data.dir else "digits"
        if cfg.data.dir:
            notes.append(f"data.name = {cfg.data.name} (what {cfg.data.dir} holds; --data names it)")
    tuning = bool(cfg.model.pretrained)
    if cfg.aug.flip is None:
        cfg.aug.flip, why = FLIP_DEFAULTS[cfg.data.name]
        notes.append(f"aug.flip = {str(cfg.aug.flip).lower()} (default for {cfg.data.name}: {why})")
    if cfg.optim.warmup_epochs is None:
        most = WARMUP_EPOCHS if not tuning else math.ceil(cfg.optim.epochs * FINETUNE_WARMUP_SHARE)
        cfg.optim.warmup_epochs = min(most, int(cfg.optim.epochs * WARMUP_SHARE))
        why = f"default {WARMUP_EPOCHS}" if not tuning else f"fine-tuning: {FINETUNE_WARMUP_SHARE:.0%} of the run"
        share = f"at most {WARMUP_SHARE:.0%} of {cfg.optim.epochs} epoch{'s' * (cfg.optim.epochs != 1)}"
        notes.append(f"optim.warmup_epochs = {cfg.optim.warmup_epochs} ({why}, {share})")
        check_warmup_lr(cfg.optim)  # a warm-up now, or none: warmup_lr then has no effect
    if cfg.optim.layer_decay is None:
        cfg.optim.layer_decay = FINETUNE_LAYER_DECAY if tuning else 1.0
        if tuning:
            notes.append(
                f"optim.layer_decay = {cfg.optim.layer_decay} (fine-tuning: block i of d trains at "
                f"lr * {cfg.optim.layer_decay}^(d - i), so the early, general layers move least)"
            )
    return notes


def _resolve_model(cfg: TrainConfig) -> list[str]:
    """A run that names no model trains the one its --pretrained weights hold, as a weights file names
    the model in Ultralytics (`yolo train model=yolov8n.pt`); without weights, convit_micro."""
    from vitc.downloads import cvt_args_named_by, held_model

    held = held_model(cfg.model.pretrained) if cfg.model.pretrained else None
    cfg.model.name = held or DEFAULT_MODEL
    shape = cvt_args_named_by(cfg.model.pretrained) if held else None  # a Hugging Face CvT of its own shape
    if shape:
        stages = ", ".join(f"{key}={shape[key]}" for key in ("depths", "embed_dims", "num_heads"))
        return [
            f"model.name = {held} with {stages} (what {cfg.model.pretrained}'s config.json says; --model names another)"
        ]
    if held:
        return [f"model.name = {held} (what {cfg.model.pretrained} holds; --model names another)"]
    if cfg.model.pretrained:
        return [f"model.name = {DEFAULT_MODEL} ({cfg.model.pretrained} does not say which model it holds: --model)"]
    return []


def resolve_for_data(cfg: TrainConfig, n_train: int, world_size: int = 1) -> tuple[list[str], list[str]]:
    """The batch size and learning rate, which fine-tuning fits to the number of training images,
    and a warning when the run will take few optimiser steps: (default lines, warnings).

    From scratch: batch 64 at lr 1e-3. With --pretrained: the largest batch of 64, 32, 16, 8 that
    gives FINETUNE_STEPS_PER_EPOCH steps an epoch (120 photos: 8, not one step of 64), and MAE's
    fine-tuning rate, 2e-3 at batch 1024 (its base 5e-4 per 256), scaled by sqrt(batch / 1024):
    timm's rule for adaptive optimisers (linear scaling would give 1.6e-5 at batch 8, too little
    for a new classifier).
    """
    notes, warnings = [], []
    tuning = bool(cfg.model.pretrained)
    if cfg.optim.batch_size is None:
        if tuning:
            fits = [b for b in FINETUNE_BATCHES if n_train // b >= FINETUNE_STEPS_PER_EPOCH]
            batch = max(fits, default=min(FINETUNE_BATCHES))
            batch = math.ceil(batch / world_size) * world_size  # every process gets the same share
            notes.append(
                f"optim.batch_size = {batch} (fine-tuning {n_train} images: the largest of "
                f"{', '.join(map(str, FINETUNE_BATCHES))} giving {n_train // batch} >= {FINETUNE_STEPS_PER_EPOCH} "
                "steps per epoch)"
                if fits
                else f"optim.batch_size = {batch} (fine-tuning only {n_train} images)"
            )
        else:
            batch = BATCH_SIZE
            if batch % world_size:  # every process the same share: 63 for 3 (64 split as 21 each, recorded as 64)
                batch = batch // world_size * world_size
                notes.append(f"optim.batch_size = {batch} (the default {BATCH_SIZE}, split evenly over {world_size})")
        cfg.optim.batch_size = batch
    if cfg.optim.lr is None:
        if tuning:
            cfg.optim.lr = float(f"{FINETUNE_BASE_LR * math.sqrt(cfg.optim.batch_size / FINETUNE_BASE_BATCH):.2g}")
            notes.append(
                f"optim.lr = {cfg.optim.lr:g} (fine-tuning: {FINETUNE_BASE_LR:g} at batch {FINETUNE_BASE_BATCH} "
                f"scaled by sqrt({cfg.optim.batch_size}/{FINETUNE_BASE_BATCH}), timm's rule for AdamW)"
            )
        else:
            cfg.optim.lr = LR
        check_warmup_lr(cfg.optim)
    from vitc.data.sampling import samples_per_epoch

    used = samples_per_epoch(n_train, world_size, cfg.aug.repeats)
    per_epoch = max(1, used // cfg.optim.batch_size)
    steps = cfg.optim.epochs * per_epoch
    if steps < FEW_STEPS:
        epochs = f"{cfg.optim.epochs} epoch{'s' * (cfg.optim.epochs > 1)}"
        on = f"{n_train} images" if used == n_train else f"{used} samples an epoch of {n_train} images"
        warnings.append(
            f"this run takes {steps} optimiser step{'s' * (steps > 1)} ({epochs} of {per_epoch} "
            f"at batch {cfg.optim.batch_size} on {on}), fewer than {FEW_STEPS}: it may stop short of "
            "what the model can learn; raise --epochs or lower optim.batch_size"
        )
    return notes, warnings


def repeats_note(n_train: int, world_size: int, repeats: int) -> str:
    """The start-up line of a run under aug.repeats: the copies, where they go, how many samples an epoch."""
    from vitc.data.sampling import REPEAT_ROUND, samples_per_epoch

    used = samples_per_epoch(n_train, world_size, repeats)
    where = (
        "one after another in this process's batches"
        if world_size == 1
        else f"dealt to the {world_size} processes in turn"
    )
    if n_train >= REPEAT_ROUND:
        count = f"the {n_train} training images rounded down to a multiple of {REPEAT_ROUND}"
    else:
        count = f"as many as the {n_train} training images, unrounded under {REPEAT_ROUND}"
    return (
        f"repeated augmentation (aug.repeats={repeats}): {repeats} cop{'ies' if repeats > 1 else 'y'} of each image, "
        f"each augmented apart, {where}; {used} samples an epoch, about {used / repeats:.0f} images "
        f"({count}, as timm's RepeatAugSampler)"
    )
