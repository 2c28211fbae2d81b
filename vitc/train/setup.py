"""A training run set up: pretrained weights, data, model, optimiser, EMA, augmentation, the resumed
state and the schedule, held in one `Run` that vitc.train.loop advances epoch by epoch; and the random
streams each epoch and each DDP process draws from.

`setup_run` reads top to bottom as its steps, each a function below it in the same order: the pretrained
weights, the model's input, the data, the model, the optimiser, the resumed state, the processes' agreement,
the trained network (DDP, torch.compile), the schedule, the attention's formulation, the run folder's records.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from vitc._io import remove_leftover_temporaries, write_json
from vitc._run_layout import RunLayout, is_run_folder
from vitc._terminal import PlainConsole
from vitc.artifacts.model_cfg import ModelCfg
from vitc.checkpoint import require_pooled
from vitc.data.feed import MemoryFeed, StreamFeed, eval_fingerprint, open_feed
from vitc.data.sampling import make_generator, samples_per_epoch
from vitc.data.transforms import TrainAugment
from vitc.errors import VitcError
from vitc.models import create_model, get_model_cfg, model_cfg
from vitc.pretrained import Pretrained, inherited_preprocess, read_pretrained
from vitc.train import report
from vitc.train.agree import Agreement, NothingToResume, run_fingerprint
from vitc.train.config import TrainConfig, parse_auto_augment
from vitc.train.defaults import repeats_note, resolve_for_data
from vitc.train.device import pick_workers, precision_name
from vitc.train.distributed import DistInfo, broadcast_from_main, init_distributed
from vitc.train.finished import out_of_patience
from vitc.train.interrupt import CtrlC
from vitc.train.meter import StepMeter
from vitc.train.network import build_model, model_args, run_preprocess, settle_attention, train_network
from vitc.train.optim import ModelEma, param_groups
from vitc.train.progress import EpochProgress
from vitc.train.records import changed_settings, check_resumable, recorded_classes, resume_record
from vitc.train.run_folder import RunFolder, no_resume_state
from vitc.train.state import RankState, TrainState, load_state

_AUG_STREAM = 1 << 20  # augmentation seeds come from (seed, 2**20 + epoch), the permutation from (seed, epoch)
_TORCH_STREAM = 1 << 22  # a DDP process's torch RNG (drop-path) from (seed, 2**22 + epoch, rank, step), rank > 0
# AdamW as one multi-tensor kernel (torch's `fused`) where the step waits on launches; with fp16's
# GradScaler it also skips the inf check's read-back (the kernel takes found_inf on the device)
FUSED_ADAMW_ON = ("cuda",)


# what a quiet run (show_progress=False) still has to say: logged, not printed (`vitc train -q` prints it)
_log = logging.getLogger(__name__)

Feed = MemoryFeed | StreamFeed
Autocast = AbstractContextManager[None]  # torch.autocast at the run's precision, or nullcontext() in fp32


@dataclass
class Run:
    """What a run holds from one step to the next: built by `setup_run`, advanced by `_train_epoch` and
    `_end_epoch` (vitc.train.loop), saved by `interrupted` (vitc.train.interrupt), scored by `_finish`."""

    cfg: TrainConfig
    started: float
    device: torch.device
    dist: DistInfo
    amp_dtype: torch.dtype | None
    folder: RunFolder
    feed: Feed
    model: torch.nn.Module
    net: torch.nn.Module  # the model as trained: DDP-wrapped and/or torch.compiled
    sync_bn: bool  # its BatchNorms gather every process's batch statistics (run.sync_bn under DDP)
    optimizer: torch.optim.Optimizer
    ema: ModelEma | None
    scaler: torch.amp.GradScaler
    augment: TrainAugment
    aug_gen: torch.Generator
    run_info: dict[str, Any]
    state: TrainState
    mean: tuple[float, ...]
    std: tuple[float, ...]
    per_rank_batch: int
    epoch_samples: int  # over every process: the train set, or what aug.repeats selects of its copies
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    schedule: list[tuple[float, float]]  # the planned learning rate as (epoch, lr), for the curves figure
    cast: Autocast
    board: report.TensorBoardLog | None
    progress: EpochProgress
    earlier: float  # a resumed run's time counts the sessions before this one
    counts_skipped: bool
    meter: StepMeter
    tick: float | None = None  # when this epoch's training started, until it ends
    unfinished: tuple[torch.Tensor, dict[str, torch.Tensor]] | None = None  # RNG states before a step still running
    stats_before: list[torch.Tensor] | None = None  # BatchNorm's running statistics before a step still running
    doing: str = "before the first step"  # said by a CUDA failure
    ending: int | None = None  # an epoch's steps while its end runs, until its resume state is saved: a stop re-runs it
    in_place: bool = True  # rank 0 writes the run folder itself, not a --force run's copy that Ctrl-C may drop
    ctrl_c: CtrlC = field(default_factory=CtrlC)  # held from a step's gradient exchange until it is recorded
    curves: report.CurvesClock = field(default_factory=report.CurvesClock)  # when rank 0 redraws curves.png

    @property
    def run_dir(self) -> Path:
        return self.folder.final


@dataclass(frozen=True)
class _Steps:
    """How long the run is, in optimiser steps, and its learning rate over them."""

    per_rank_batch: int
    epoch_samples: int  # over every process: the train set, or what aug.repeats selects of its copies
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    schedule: list[tuple[float, float]]


@dataclass(frozen=True)
class _Voice:
    """Where setup's lines go: `shown` prints what rank 0 of a run that shows progress says (None elsewhere),
    `say` prints where its caller decided to, `warn` writes a warning on stderr as every command's does (a
    quiet run, or from Python: the vitc logger, stderr where logging is unconfigured)."""

    say: Callable[[str], None]
    warn: Callable[[str], None]
    shown: Callable[[str], None] | None


def setup_run(
    cfg: TrainConfig,
    resume: bool,
    show_progress: bool,
    started: float,
    device: torch.device,
    dist: DistInfo,
    amp_dtype: torch.dtype | None,
    folder: RunFolder,
    cleanup: ExitStack,
    agreement: Agreement | None = None,
) -> Run:
    """Pretrained weights, data, model, optimiser, EMA, augmentation, the resumed state, the schedule; under DDP
    the processes compare what they found (`agreement`) before they join the process group."""
    voice = _voice(show_progress, dist)
    pretrained = _read_pretrained(cfg, resume, voice)
    require_pooled(cfg.model.args, "model.args")
    resumed = _resume_file(folder, resume)
    size, preprocess = _model_input(cfg, pretrained, resume, voice)
    feed = _open_data(cfg, size, preprocess, device, dist, folder, resumed, voice, cleanup)
    args = model_args(cfg, size, feed.num_classes)
    model, synced = build_model(cfg, args, feed, pretrained, device, dist, resumed, voice.shown)
    mean, std = get_model_cfg(model).mean, get_model_cfg(model).std
    optimizer, ema, scaler = _optimiser(cfg, model, device, amp_dtype)
    augment = _train_augment(cfg, feed, size, mean, std)
    aug_gen = torch.Generator()
    run_info = _run_info(cfg, args, feed, dist, amp_dtype, pretrained)
    steps = _plan_steps(cfg, len(feed), dist.world_size)
    state, saved = _resume(cfg, resumed, model, optimizer, ema, scaler, aug_gen, run_info, dist, steps)
    if agreement is not None:  # the settings, the data and the resumed place alike in every process, or a stop
        _agree(agreement, cfg, feed, state)
    init_distributed(dist, device.type)
    ddp = DistributedDataParallel(model) if dist.enabled else None
    net = train_network(cfg, model, ddp)
    autocast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else nullcontext()
    tell, chosen = voice.shown or (lambda _: None), saved.get("attention")  # a resume keeps the kernels it had
    attention = settle_attention(cfg, model, ddp, steps.per_rank_batch, autocast, device, dist, tell, chosen)
    run_info["attention"] = attention
    in_place, board = _open_records(cfg, folder, dist, state, steps, resumed)
    if board is not None:  # closed as the run ends however it ends (a failure too: its thread and file)
        cleanup.callback(board.close)
    progress = EpochProgress(  # a quiet run's rank 0 logs its epoch lines (`vitc train -q` prints them)
        enabled=show_progress and dist.is_main,
        show_top5=feed.num_classes > 5,
        every_s=cfg.log.interval_s,
        logged=dist.is_main,
    )
    return Run(
        cfg=cfg, started=started, device=device, dist=dist, amp_dtype=amp_dtype, folder=folder, feed=feed,
        model=model, net=net, sync_bn=synced, optimizer=optimizer, ema=ema, scaler=scaler, augment=augment,
        aug_gen=aug_gen, run_info=run_info, state=state, mean=mean, std=std,
        per_rank_batch=steps.per_rank_batch, epoch_samples=steps.epoch_samples, steps_per_epoch=steps.steps_per_epoch,
        total_steps=steps.total_steps, warmup_steps=steps.warmup_steps, schedule=steps.schedule,
        cast=autocast, board=board, progress=progress, earlier=state.seconds,
        counts_skipped=feed.streaming or cfg.data.name == "imagefolder", meter=StepMeter(device), in_place=in_place,
        curves=report.CurvesClock(rows=len(state.history)),  # a resume drew them (_open_records)
    )  # fmt: skip


def _voice(show_progress: bool, dist: DistInfo) -> _Voice:
    """Setup's consoles: progress lines from rank 0 of a run that shows them, warnings from every process."""
    say = PlainConsole(markup=False, highlight=False, soft_wrap=True).print
    warn = PlainConsole(stderr=True, markup=False, highlight=False, soft_wrap=True).print
    return _Voice(
        say=say,
        warn=warn if show_progress else _log.warning,
        shown=say if show_progress and dist.is_main else None,
    )


def _read_pretrained(cfg: TrainConfig, resume: bool, voice: _Voice) -> Pretrained | None:
    """--pretrained's weights, read before anything is sized: a file can imply arguments (its depth, HF's act),
    which the run's own model.args override (recorded in config.json: a resume rebuilds it, from its own state)."""
    if not cfg.model.pretrained or resume:
        return None
    assert cfg.model.name is not None  # resolved by vitc.train.defaults.resolve_defaults, as every model.name below
    pretrained = read_pretrained(cfg.model.pretrained, cfg.model.name, voice.shown)
    cfg.model.args = {**pretrained.args, **cfg.model.args}
    trained_at = pretrained.args.get("img_size")
    if trained_at is not None and not cfg.data.image_size and voice.shown:
        voice.shown(
            f"default: images at {trained_at}×{trained_at}, the size the weights were trained at "
            "(--set data.image_size=N resamples them to another)"
        )
    return pretrained


def _resume_file(folder: RunFolder, resume: bool) -> Path | None:
    """The resume state a --resume continues from (None: a new run); a run folder without one stops here."""
    resume_file = RunLayout(folder.final).resume
    if resume and not resume_file.is_file():
        if is_run_folder(folder.final):
            raise NothingToResume(f"nothing to resume: {no_resume_state(folder.final)}")
        raise NothingToResume(f"nothing to resume: {resume_file} does not exist")
    return resume_file if resume else None


def _model_input(cfg: TrainConfig, pretrained: Pretrained | None, resume: bool, voice: _Voice) -> tuple[int, ModelCfg]:
    """The images' size and the evaluation transform the data is prepared with: the model's, a pretrained file's
    over it, the run's own settings over both. Arguments that build no working model (depth 0, a dropout of 1,
    an image size off the patch grid) stop here, before the data is read, with the model's one-line error."""
    assert cfg.model.name is not None
    base_cfg = model_cfg(cfg.model.name, **cfg.model.args)
    size = cfg.data.image_size or base_cfg.input_size[1]
    if pretrained is not None:  # recorded in config.json: a resume, its checkpoints and exports keep it
        taken = inherited_preprocess(pretrained, cfg.model.name, cfg.model.args, size, vars(cfg.model))
        for key, value in taken.items():
            setattr(cfg.model, key, value)
        if taken and voice.shown:
            settings = ", ".join(f"{key}={value}" for key, value in taken.items())
            source = pretrained.path.name if pretrained.source_format == "vitc checkpoint" else "its folder's records"
            uses = "mean and std normalise training and evaluation, crop_pct and crop_mode set the evaluation's crop"
            voice.shown(
                f"pretrained: {settings}, as {source} evaluated the weights ({uses}, as timm's train.py takes a "
                f"model's pretrained_cfg; --set model.{next(iter(taken))}=… overrides)"
            )
    base_cfg = run_preprocess(base_cfg, cfg)
    if "drop_path_rate" in cfg.model.args and not resume:  # the run's own setting would replace it, silently
        raise VitcError(
            f"model.args.drop_path_rate={cfg.model.args['drop_path_rate']!r} is not read: training sets the model's "
            "stochastic depth from model.drop_path_rate (--set model.drop_path_rate=RATE)"
        )
    with torch.device("meta"):
        create_model(cfg.model.name, **model_args(cfg, size, num_classes=2))
    return size, base_cfg


def _open_data(
    cfg: TrainConfig,
    size: int,
    preprocess: ModelCfg,
    device: torch.device,
    dist: DistInfo,
    folder: RunFolder,
    resumed: Path | None,
    voice: _Voice,
    cleanup: ExitStack,
) -> Feed:
    """uint8 batches at the model's input size, held in memory or streamed (vitc.data.feed); the batch size
    and learning rate then fit to the data's size (vitc.train.defaults), and said so."""
    feed, data_note = open_feed(
        cfg.data,
        size=size,
        crop_pct=preprocess.crop_pct,
        crop_mode=preprocess.crop_mode,
        in_chans=preprocess.input_size[0],
        seed=cfg.run.seed,
        crop_scale=tuple(cfg.aug.crop_scale),  # type: ignore[arg-type]
        flip_prob=0.5 if cfg.aug.flip else 0.0,
        train_interpolation=cfg.aug.train_interpolation,
        workers=pick_workers(cfg.run.workers, device, dist.on_this_machine),  # the cores are per machine
        pin_memory=device.type == "cuda",
        index_cache=RunLayout(folder.path).index if dist.is_main else None,
        report=voice.warn,
        main=dist.is_main,
        recorded=recorded_classes(resumed) if resumed is not None else None,  # its head's rows, in the order it ran
    )
    cleanup.callback(feed.close)  # worker processes end with the run, however it ends
    if voice.shown and feed.streaming:
        PlainConsole().print(data_note, highlight=False, markup=False)
    fitted, warnings = resolve_for_data(cfg, len(feed), dist.world_size)  # batch and lr fit to the data size
    if dist.is_main:
        for note in fitted if voice.shown else ():
            voice.say(f"default: {note}")
        for warning in warnings if resumed is None else ():
            voice.warn(f"warning: {warning}")
        if cfg.aug.repeats and voice.shown:
            voice.say(repeats_note(len(feed), dist.world_size, cfg.aug.repeats))
    return feed


def _optimiser(
    cfg: TrainConfig, model: torch.nn.Module, device: torch.device, amp_dtype: torch.dtype | None
) -> tuple[torch.optim.AdamW, ModelEma | None, torch.amp.GradScaler]:
    """AdamW over the model's parameter groups (weight decay, layer decay), its EMA, fp16's loss scaler."""
    assert cfg.optim.lr is not None and cfg.optim.layer_decay is not None  # resolved by vitc.train.defaults
    groups = param_groups(model, cfg.optim.weight_decay, cfg.optim.layer_decay)
    optimizer = torch.optim.AdamW(groups, lr=cfg.optim.lr, fused=device.type in FUSED_ADAMW_ON or None)
    ema = ModelEma(model, cfg.optim.ema_decay) if cfg.optim.ema_decay > 0 else None
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    return optimizer, ema, scaler


def _train_augment(
    cfg: TrainConfig, feed: Feed, size: int, mean: tuple[float, ...], std: tuple[float, ...]
) -> TrainAugment:
    """The batch's augmentation on the device: crops and flips of an in-memory set, mixup, cutmix, erasing."""
    return TrainAugment(
        num_classes=feed.num_classes,
        mean=mean,
        std=std,
        # a streamed sample was cropped and flipped from its full image in a worker already
        crop_scale=(1.0, 1.0) if feed.streaming else tuple(cfg.aug.crop_scale),  # type: ignore[arg-type]
        crop_ratio=(1.0, 1.0) if feed.streaming else (3 / 4, 4 / 3),
        flip_prob=0.5 if cfg.aug.flip and not feed.streaming else 0.0,
        mixup_alpha=cfg.aug.mixup,
        cutmix_alpha=cfg.aug.cutmix,
        label_smoothing=cfg.optim.label_smoothing,
        erase_prob=cfg.aug.erasing,
        color_jitter=cfg.aug.color_jitter,
        auto_augment=parse_auto_augment(cfg.aug.auto_augment) if cfg.aug.auto_augment else None,
        crop_size=size if feed.whole_images else None,  # an in-memory image folder's photos are kept whole
        train_interpolation=cfg.aug.train_interpolation,
    )


def _run_info(
    cfg: TrainConfig,
    args: dict[str, Any],
    feed: Feed,
    dist: DistInfo,
    amp_dtype: torch.dtype | None,
    pretrained: Pretrained | None,
) -> dict[str, Any]:
    """What the checkpoints and summary.json record of the run, and a resume checks it continues."""
    return {
        "model": cfg.model.name,
        "args": args,
        "config": cfg.to_dict(),
        "classes": feed.class_names,
        "processes": dist.world_size,
        "val_precision": precision_name(amp_dtype),  # the checkpoints' val_top1 was scored under it
        "train_images": len(feed),  # a resume within an epoch finds its place in that set's order
        "pretrained": pretrained.provenance if pretrained else None,
    }


def _plan_steps(cfg: TrainConfig, train_images: int, world_size: int) -> _Steps:
    """Steps per epoch, in all and of warm-up, from the batch size the data fitted, and the planned lr."""
    batch_size, warmup_epochs = cfg.optim.batch_size, cfg.optim.warmup_epochs
    assert batch_size is not None and warmup_epochs is not None and cfg.optim.lr is not None  # vitc.train.defaults
    epoch_samples = samples_per_epoch(train_images, world_size, cfg.aug.repeats)
    steps_per_epoch = max(1, epoch_samples // batch_size)
    total_steps = cfg.optim.epochs * steps_per_epoch
    warmup_steps = warmup_epochs * steps_per_epoch
    schedule = report.lr_schedule(
        total_steps, warmup_steps, cfg.optim.lr, cfg.optim.min_lr, steps_per_epoch, warmup_lr=cfg.optim.warmup_lr
    )
    return _Steps(batch_size // world_size, epoch_samples, steps_per_epoch, total_steps, warmup_steps, schedule)


def _resume(
    cfg: TrainConfig,
    resumed: Path | None,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    ema: ModelEma | None,
    scaler: torch.amp.GradScaler,
    aug_gen: torch.Generator,
    run_info: dict[str, Any],
    dist: DistInfo,
    steps: _Steps,
) -> tuple[TrainState, dict[str, Any]]:
    """Where the run stands, and the run info of its first session ({} for a new run): a resume loads the
    weights, moments, EMA, random streams and position in the epoch, and adds itself to `run_info`'s resumes."""
    if resumed is None:
        return TrainState(), {}
    check_resumable(resumed, run_info)
    state, saved = load_state(resumed, model, optimizer, ema.module if ema else None, {"aug": aug_gen}, scaler)
    run_info["pretrained"] = saved.get("pretrained")  # the weights came from the resume file, not from there
    changed = changed_settings(saved.get("config") or {}, run_info["config"])
    run_info["resumes"] = [*saved.get("resumes", []), resume_record(state.epoch, state.step_in_epoch, changed)]
    # a run that stopped early continues when --resume changes its patience or length
    state.stopped_early = out_of_patience(state.history, cfg.optim.patience, cfg.optim.epochs)
    processes = saved.get("processes")
    if not dist.is_main and not _resume_own_part(resumed, state, dist, aug_gen, processes, steps.steps_per_epoch):
        state.partial = {key: 0.0 for key in state.partial}  # rank 0's: summed over every rank they count N times
        if state.step_in_epoch:  # and its random streams, which this process must not replay
            seed_streams(aug_gen, cfg.run.seed, state.epoch, dist.rank, state.step_in_epoch)
    return state, saved


def _agree(agreement: Agreement, cfg: TrainConfig, feed: Feed, state: TrainState) -> None:
    """Every process compares its settings, data and resumed place with the others' (one: nothing to compare)."""
    position = [state.epoch, state.step_in_epoch]
    eval_sets = eval_fingerprint(cfg.data, feed) if agreement.enabled else {}
    agreement.settle(run_fingerprint(cfg.to_dict(), feed.class_names, len(feed), position, eval_sets))


def _open_records(
    cfg: TrainConfig, folder: RunFolder, dist: DistInfo, state: TrainState, steps: _Steps, resumed: Path | None
) -> tuple[bool, report.TensorBoardLog | None]:
    """Rank 0 writes config.json, and a resumed run's logs of exactly the epochs it is past
    (vitc.train.loop._record_epoch), into the run folder; whether it writes in place (the other processes
    are told), and its TensorBoard log (resumed: records past the resume point are hidden, purged)."""
    if dist.is_main:
        folder.path.mkdir(parents=True, exist_ok=True)
        remove_leftover_temporaries(folder.path)  # left by a run killed while writing (a live writer's are kept)
        write_json(RunLayout(folder.path).config, cfg.to_dict())
        if state.history:
            report.write_history(state.history, folder.path, cfg, steps.schedule)
    in_place = broadcast_from_main(dist, folder.path == folder.final)  # the other processes write beside it
    board = None
    if cfg.log.tensorboard and dist.is_main:
        purge = tensorboard_purge_step(state) if resumed is not None else None
        board = report.TensorBoardLog(RunLayout(folder.path).tensorboard, purge)
    return in_place, board


def _resume_own_part(
    path: Path, state: TrainState, dist: DistInfo, aug_gen: torch.Generator, processes: int | None, steps_per_epoch: int
) -> bool:
    """A DDP process other than rank 0 resumed within an epoch: its own random streams and running sums,
    saved beside rank 0's file (vitc.train.state). Under another number of processes than saved them it
    draws fresh streams from this step (the shares of the data differ anyway); under as many, one that
    has none saved at this step says so."""
    if not state.step_in_epoch or processes != dist.world_size:
        return False
    if RankState(path, dist.rank, dist.world_size).load(state, {"aug": aug_gen}):
        return True
    if state.step_in_epoch < steps_per_epoch:  # at an epoch's end its sums are in rank 0's already
        PlainConsole(stderr=True, markup=False, highlight=False, soft_wrap=True).print(
            f"warning: rank {dist.rank} of {dist.world_size} has no state saved at epoch {state.epoch + 1}, step "
            f"{state.step_in_epoch + 1} (it stopped elsewhere than rank 0): it draws fresh random streams from "
            "there and the epoch's train loss leaves out its earlier steps, so the run differs a little from an "
            "uninterrupted one"
        )
    return False


def seed_streams(aug_gen: torch.Generator, seed: int, epoch: int, rank: int, step: int = 0) -> None:
    """Seed the augmentation stream for an epoch (from its `step`), and on DDP ranks above 0 torch's RNG,
    which drop-path draws from: every process draws its own, as timm seeds each rank apart (seed + rank).
    Rank 0's streams are a one-process run's. Resumed within an epoch, each process continues the streams
    it saved (vitc.train.state); one that has none for that step draws fresh ones from it."""
    if rank == 0:
        aug_gen.manual_seed(make_generator(seed, _AUG_STREAM + epoch).initial_seed())
        return
    aug_gen.manual_seed(make_generator(seed, _AUG_STREAM + epoch, rank, step).initial_seed())
    torch.manual_seed(make_generator(seed, _TORCH_STREAM + epoch, rank, step).initial_seed())


def tensorboard_purge_step(state: TrainState) -> int:
    """The first step a resumed session logs (steps count from 1): TensorBoard hides the records at or past
    it, of every tag, that a stopped session wrote (its per-step scalars past the resume point were recorded
    twice, and out of order). One step for the folder's every tag: the epoch records are logged at their
    epoch's number, which an epoch's at least one step keeps at or below the resume state's step, so no
    epoch the state is past is hidden. Nor, where an epoch has several steps, is the one epoch a stop can
    have logged past the state: stopped after its logs and before its resume state (a SIGKILL, or a second
    Ctrl-C: the first waits, vitc.train.loop._record_epoch), its end runs again and records it twice."""
    return state.global_step + 1
