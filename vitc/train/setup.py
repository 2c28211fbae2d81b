"""A training run set up: pretrained weights, data, model, optimiser, EMA, augmentation, the resumed
state and the schedule, held in one `Run` that vitc.train.loop advances epoch by epoch; and the random
streams each epoch and each DDP process draws from."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vitc._io import write_json
from vitc._run_layout import RunLayout
from vitc._terminal import PlainConsole
from vitc.artifacts.model_cfg import ModelCfg
from vitc.artifacts.preprocess import resolve_preprocess
from vitc.checkpoint import require_pooled
from vitc.data.feed import eval_fingerprint, open_feed
from vitc.data.sampling import make_generator, samples_per_epoch
from vitc.data.transforms import TrainAugment
from vitc.errors import VitcError
from vitc.models import create_model, get_model_cfg, model_cfg
from vitc.models.layers import checkpoints_batchnorm
from vitc.pretrained import inherited_preprocess, load_pretrained, read_pretrained
from vitc.train import report
from vitc.train.agree import Agreement, NothingToResume, run_fingerprint
from vitc.train.config import PREPROCESS_KEYS, TrainConfig, parse_auto_augment
from vitc.train.defaults import repeats_note, resolve_for_data
from vitc.train.device import choose_attention, pick_workers, precision_name
from vitc.train.distributed import broadcast_from_main, init_distributed, sync_batchnorm
from vitc.train.finished import out_of_patience
from vitc.train.interrupt import CtrlC
from vitc.train.meter import StepMeter
from vitc.train.optim import ModelEma, backbone_eval, freeze_backbone, param_groups
from vitc.train.progress import EpochProgress
from vitc.train.records import changed_settings, check_resumable, recorded_classes, recorded_model_args, resume_record
from vitc.train.run_folder import RunFolder
from vitc.train.state import RankState, TrainState, load_state

_AUG_STREAM = 1 << 20  # augmentation seeds come from (seed, 2**20 + epoch), the permutation from (seed, epoch)
_TORCH_STREAM = 1 << 22  # a DDP process's torch RNG (drop-path) from (seed, 2**22 + epoch, rank, step), rank > 0
# AdamW as one multi-tensor kernel (torch's `fused`) where the step waits on launches; with fp16's
# GradScaler it also skips the inf check's read-back (the kernel takes found_inf on the device)
FUSED_ADAMW_ON = ("cuda",)


# what a quiet run (show_progress=False) still has to say: logged, not printed (`vitc train -q` prints it)
_log = logging.getLogger(__name__)


@dataclass
class Run:
    """What a run holds from one step to the next: built by `setup_run`, advanced by `_train_epoch` and
    `_end_epoch`, saved by `_interrupted`, scored by `_finish`."""

    cfg: TrainConfig
    started: float
    device: torch.device
    dist: Any
    amp_dtype: torch.dtype | None
    folder: RunFolder
    feed: Any
    model: torch.nn.Module
    net: Any  # the model as trained: DDP-wrapped and/or torch.compiled
    sync_bn: bool  # its BatchNorms gather every process's batch statistics (run.sync_bn under DDP)
    optimizer: torch.optim.Optimizer
    ema: ModelEma | None
    scaler: Any
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
    schedule: Any
    cast: Any
    board: Any
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

    @property
    def run_dir(self) -> Path:
        return self.folder.final


def setup_run(
    cfg: TrainConfig,
    resume: bool,
    show_progress: bool,
    started: float,
    device: torch.device,
    dist: Any,
    amp_dtype: torch.dtype | None,
    folder: RunFolder,
    cleanup: ExitStack,
    agreement: Agreement | None = None,
) -> Run:
    """Pretrained weights, data, model, optimiser, EMA, augmentation, the resumed state, the schedule; under DDP
    the processes compare what they found (`agreement`) before they join the process group."""
    run_dir = folder.final

    # -- pretrained weights: read before anything is sized (a file can imply arguments: its depth, HF's act)
    shown = (
        PlainConsole(markup=False, highlight=False, soft_wrap=True).print if show_progress and dist.is_main else None
    )
    pretrained = (
        read_pretrained(cfg.model.pretrained, cfg.model.name, shown) if cfg.model.pretrained and not resume else None
    )
    if pretrained is not None:
        cfg.model.args = {**pretrained.args, **cfg.model.args}  # recorded in config.json: a resume rebuilds it
        trained_at = pretrained.args.get("img_size")
        if trained_at is not None and not cfg.data.image_size and show_progress and dist.is_main:
            PlainConsole(markup=False, highlight=False, soft_wrap=True).print(
                f"default: images at {trained_at}×{trained_at}, the size the weights were trained at "
                "(--set data.image_size=N resamples them to another)"
            )

    require_pooled(cfg.model.args, "model.args")
    resume_file = RunLayout(run_dir).resume
    if resume and not resume_file.is_file():
        raise NothingToResume(f"nothing to resume: {resume_file} does not exist")
    # -- data: uint8 batches at the model's input size, held in memory or streamed (vitc.data.feed)
    base_cfg = model_cfg(cfg.model.name, **cfg.model.args)
    size = cfg.data.image_size or base_cfg.input_size[1]
    if pretrained is not None:  # recorded in config.json: a resume, its checkpoints and exports keep it
        taken = inherited_preprocess(pretrained, cfg.model.name, cfg.model.args, size, vars(cfg.model))
        for key, value in taken.items():
            setattr(cfg.model, key, value)
        if taken and shown:
            settings = ", ".join(f"{key}={value}" for key, value in taken.items())
            source = pretrained.path.name if pretrained.source_format == "vitc checkpoint" else "its folder's records"
            uses = "mean and std normalise training and evaluation, crop_pct and crop_mode set the evaluation's crop"
            shown(
                f"pretrained: {settings}, as {source} evaluated the weights ({uses}, as timm's train.py takes a "
                f"model's pretrained_cfg; --set model.{next(iter(taken))}=… overrides)"
            )
    base_cfg = run_preprocess(base_cfg, cfg)
    if "drop_path_rate" in cfg.model.args and not resume:  # the run's own setting would replace it, silently
        raise VitcError(
            f"model.args.drop_path_rate={cfg.model.args['drop_path_rate']!r} is not read: training sets the model's "
            "stochastic depth from model.drop_path_rate (--set model.drop_path_rate=RATE)"
        )
    # arguments that build no working model (depth 0, a dropout of 1, an image size off the patch grid) stop
    # before the data is read, with the model's one-line error
    with torch.device("meta"):
        create_model(cfg.model.name, **model_args(cfg, size, num_classes=2))
    say = PlainConsole(markup=False, highlight=False, soft_wrap=True).print
    # a warning on stderr, as every command's; from Python: the vitc logger (stderr where logging is unconfigured)
    warn = PlainConsole(stderr=True, markup=False, highlight=False, soft_wrap=True).print
    warn = warn if show_progress else _log.warning
    feed, data_note = open_feed(
        cfg.data,
        size=size,
        crop_pct=base_cfg.crop_pct,
        crop_mode=base_cfg.crop_mode,
        in_chans=base_cfg.input_size[0],
        seed=cfg.run.seed,
        crop_scale=tuple(cfg.aug.crop_scale),  # type: ignore[arg-type]
        flip_prob=0.5 if cfg.aug.flip else 0.0,
        train_interpolation=cfg.aug.train_interpolation,
        workers=pick_workers(cfg.run.workers, device, dist.on_this_machine),  # the cores are per machine
        pin_memory=device.type == "cuda",
        index_cache=folder.path / "index.json" if dist.is_main else None,
        report=warn,
        main=dist.is_main,
        recorded=recorded_classes(resume_file) if resume else None,  # its head's rows, in the order it ran
    )
    cleanup.callback(feed.close)  # worker processes end with the run, however it ends
    if show_progress and dist.is_main and feed.streaming:
        PlainConsole().print(data_note, highlight=False, markup=False)
    fitted, warnings = resolve_for_data(cfg, len(feed), dist.world_size)  # batch and lr fit to the data size
    if dist.is_main:
        for note in fitted if show_progress else ():
            say(f"default: {note}")
        for warning in warnings if not resume else ():
            warn(f"warning: {warning}")
        if cfg.aug.repeats and show_progress:
            say(repeats_note(len(feed), dist.world_size, cfg.aug.repeats))

    # -- model, optimiser, EMA; the classifier is sized by the data
    if feed.num_classes < 2:
        raise VitcError(f"{cfg.data.name} has {feed.num_classes} class; a classifier needs at least 2")
    asked = cfg.model.args.get("num_classes")
    recorded = recorded_model_args(resume_file).get("num_classes") if resume else None  # a run from before this check
    if asked is not None and (type(asked) is not int or asked != feed.num_classes) and asked != recorded:
        raise VitcError(
            f"model.args.num_classes={asked!r}, but {cfg.data.name} has {feed.num_classes} classes: the classifier "
            "is sized by the data (drop the setting)"
        )
    torch.manual_seed(cfg.run.seed)
    args = model_args(cfg, size, feed.num_classes)
    model = create_model(cfg.model.name, **args).to(device)
    model.vitc_cfg = run_preprocess(get_model_cfg(model), cfg)  # what its checkpoints record, and exports read
    model.set_grad_checkpointing(cfg.run.grad_checkpointing)
    if pretrained is not None:
        note = load_pretrained(model, pretrained, feed.class_names)
        if show_progress and dist.is_main:
            PlainConsole(markup=False, highlight=False, soft_wrap=True).print(note)
    frozen = cfg.optim.freeze == "backbone"
    if frozen:
        freeze_backbone(model)
    synced, note = sync_batchnorm(model, dist, frozen, device.type) if cfg.run.sync_bn else (False, "")
    if note and show_progress and dist.is_main:
        say(note)
    mean, std = get_model_cfg(model).mean, get_model_cfg(model).std
    groups = param_groups(model, cfg.optim.weight_decay, cfg.optim.layer_decay)
    optimizer = torch.optim.AdamW(groups, lr=cfg.optim.lr, fused=device.type in FUSED_ADAMW_ON or None)
    ema = ModelEma(model, cfg.optim.ema_decay) if cfg.optim.ema_decay > 0 else None
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    augment = TrainAugment(
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
    aug_gen = torch.Generator()
    run_info = {
        "model": cfg.model.name,
        "args": args,
        "config": cfg.to_dict(),
        "classes": feed.class_names,
        "processes": dist.world_size,
        "val_precision": precision_name(amp_dtype),  # the checkpoints' val_top1 was scored under it
        "train_images": len(feed),  # a resume within an epoch finds its place in that set's order
        "pretrained": pretrained.provenance if pretrained else None,
    }

    # -- resume: weights, moments, EMA, RNG streams, position in the epoch
    epoch_samples = samples_per_epoch(len(feed), dist.world_size, cfg.aug.repeats)
    steps_per_epoch = max(1, epoch_samples // cfg.optim.batch_size)
    state = TrainState()
    saved: dict[str, Any] = {}  # the run info of a resumed run's first session
    if resume:
        path = resume_file
        check_resumable(path, run_info)
        state, saved = load_state(path, model, optimizer, ema.module if ema else None, {"aug": aug_gen}, scaler)
        run_info["pretrained"] = saved.get("pretrained")  # the weights came from the resume file, not from there
        changed = changed_settings(saved.get("config") or {}, run_info["config"])
        run_info["resumes"] = [*saved.get("resumes", []), resume_record(state.epoch, state.step_in_epoch, changed)]
        # a run that stopped early continues when --resume changes its patience or length
        state.stopped_early = out_of_patience(state.history, cfg.optim.patience, cfg.optim.epochs)
        processes = saved.get("processes")
        if not dist.is_main and not _resume_own_part(path, state, dist, aug_gen, processes, steps_per_epoch):
            state.partial = {key: 0.0 for key in state.partial}  # rank 0's: summed over every rank they count N times
            if state.step_in_epoch:  # and its random streams, which this process must not replay
                seed_streams(aug_gen, cfg.run.seed, state.epoch, dist.rank, state.step_in_epoch)
    if agreement is not None:  # the settings, the data and the resumed place alike in every process, or a stop
        position = [state.epoch, state.step_in_epoch]
        eval_sets = eval_fingerprint(cfg.data, feed) if agreement.enabled else {}  # one process: nothing to compare
        agreement.settle(run_fingerprint(cfg.to_dict(), feed.class_names, len(feed), position, eval_sets))
    init_distributed(dist, device.type)
    ddp = torch.nn.parallel.DistributedDataParallel(model) if dist.enabled else None
    net: Any = model if ddp is None else ddp
    recomputed_bn = cfg.run.grad_checkpointing and not frozen and checkpoints_batchnorm(model)  # frozen: eval mode
    if cfg.run.compile == "eager" and recomputed_bn:
        raise VitcError(  # dynamo's eager backend recomputes the block's BatchNorm update in place: autograd refuses
            f"run.compile=eager cannot recompute {cfg.model.name}'s BatchNorm blocks under run.grad_checkpointing "
            "(an in-place update of their statistics): use run.compile=aot_eager, the debugging backend that can"
        )
    if cfg.run.compile != "off":  # the training forward only: evaluation and checkpoints use `model` as it is
        mode = {} if cfg.run.compile_mode == "default" else {"mode": cfg.run.compile_mode}
        net = torch.compile(net, backend=cfg.run.compile, **mode)

    per_rank_batch = cfg.optim.batch_size // dist.world_size
    total_steps = cfg.optim.epochs * steps_per_epoch
    warmup_steps = cfg.optim.warmup_epochs * steps_per_epoch
    schedule = report.lr_schedule(
        total_steps, warmup_steps, cfg.optim.lr, cfg.optim.min_lr, steps_per_epoch, warmup_lr=cfg.optim.warmup_lr
    )
    cast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else nullcontext()
    tell = say if show_progress and dist.is_main else lambda _: None
    pinned, chosen = "attn_impl" in cfg.model.args, saved.get("attention")  # a resume keeps the kernels it had
    run_info["attention"] = choose_attention(model, pinned, per_rank_batch, cast, tell, dist, chosen)
    if ddp is not None:  # after the attention's formulation is set: its backward orders the buckets
        lay_out_buckets(ddp, model, cfg.optim.freeze, cast, device)
    if dist.is_main:
        folder.path.mkdir(parents=True, exist_ok=True)
        for stale in folder.path.glob(".*.tmp"):  # left by a run that was killed while writing
            stale.unlink()
        write_json(RunLayout(folder.path).config, cfg.to_dict())
        if state.history:  # resumed: the logs of exactly the epochs it is past (vitc.train.loop._record_epoch)
            report.write_history(state.history, folder.path, cfg, schedule)
    in_place = broadcast_from_main(dist, folder.path == folder.final)  # the other processes write beside it
    board = None
    if cfg.log.tensorboard and dist.is_main:  # resumed: records past the resume point are hidden (purged)
        purge = tensorboard_purge_step(state) if resume else None
        board = report.TensorBoardLog(RunLayout(folder.path).tensorboard, purge)
    progress = EpochProgress(  # a quiet run's rank 0 logs its epoch lines (`vitc train -q` prints them)
        enabled=show_progress and dist.is_main,
        show_top5=feed.num_classes > 5,
        every_s=cfg.log.interval_s,
        logged=dist.is_main,
    )
    return Run(
        cfg=cfg,
        started=started,
        device=device,
        dist=dist,
        amp_dtype=amp_dtype,
        folder=folder,
        feed=feed,
        model=model,
        net=net,
        sync_bn=synced,
        optimizer=optimizer,
        ema=ema,
        scaler=scaler,
        augment=augment,
        aug_gen=aug_gen,
        run_info=run_info,
        state=state,
        mean=mean,
        std=std,
        per_rank_batch=per_rank_batch,
        epoch_samples=epoch_samples,
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        warmup_steps=warmup_steps,
        schedule=schedule,
        cast=cast,
        board=board,
        progress=progress,
        earlier=state.seconds,
        counts_skipped=feed.streaming or cfg.data.name == "imagefolder",
        meter=StepMeter(device),
        in_place=in_place,
    )


def model_args(cfg: TrainConfig, size: int, num_classes: int) -> dict[str, Any]:
    """The constructor arguments a run builds its model with: model.args, a head for the data's classes, the
    run's drop-path rate (model.drop_path_rate) and its image size where data.image_size sets one."""
    args = {**cfg.model.args, "num_classes": num_classes, "drop_path_rate": cfg.model.drop_path_rate}
    if cfg.data.image_size:
        args["img_size"] = size
    return args


def run_preprocess(model_cfg: ModelCfg, cfg: TrainConfig) -> ModelCfg:
    """`model_cfg` with the evaluation transform the run sets (model.mean, model.std, model.crop_pct,
    model.crop_mode), checked against its channels; as it is where the run sets none."""
    given = {key: getattr(cfg.model, key) for key in PREPROCESS_KEYS if getattr(cfg.model, key) is not None}
    if not given:
        return model_cfg
    return model_cfg.evaluated_by(resolve_preprocess(given, None, model_cfg.to_record(), source="config key model"))


def _resume_own_part(
    path: Path, state: TrainState, dist: Any, aug_gen: torch.Generator, processes: Any, steps_per_epoch: int
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


@contextmanager
def stand_in_loss(
    net: Any, model: torch.nn.Module, freeze: str, cast: Any, device: torch.device
) -> Iterator[torch.Tensor]:
    """A zero loss that reaches every trained parameter, from blank images through `net` in eval mode (no
    BatchNorm statistics from a stand-in, no random draws); train mode again once its backward has run.
    Two images: from one, the class token's gradient is a strided view of the tokens', and DDP warns that
    it does not match its bucket's layout."""
    net.eval()
    try:
        with cast:
            stand_in = torch.zeros(2, *get_model_cfg(model).input_size, device=device)
            loss = net(stand_in).float().sum() * 0.0
        yield loss
    finally:
        net.train()
        if freeze == "backbone":
            backbone_eval(model)


def lay_out_buckets(ddp: Any, model: torch.nn.Module, freeze: str, cast: Any, device: torch.device) -> None:
    """Run DDP's first backward on a stand-in, so that every session trains on the buckets it lays out.

    DDP sums its first backward's gradients in one bucket in the parameters' order, then rebuilds its
    buckets in the order the gradients became ready. Over 3 or more processes a gradient's place in its
    bucket decides its chunk of the ring all-reduce, and so the order the processes' values are added in:
    a resumed session's first step, on the first layout, summed otherwise than the uninterrupted run's
    step there (weights about 1e-6 apart at the end). Each session now starts from this same backward:
    one forward and backward of two images; the steps keep DDP's rebuilt buckets and their sizes, so the
    all-reduce overlaps the backward as before."""
    with stand_in_loss(ddp, model, freeze, cast, device) as loss:
        loss.backward()
    model.zero_grad(set_to_none=True)


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
