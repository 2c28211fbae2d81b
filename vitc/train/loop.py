"""The training loop: set up (vitc.train.setup), then one epoch and its end at a time, then the final test.

Batches are index tensors drawn from a permutation seeded by (seed, epoch), which the feed turns into
uint8 images, from memory or streamed from files (vitc.data.feed, data.stream); augmentation draws from
an explicit generator. Together with the optimiser and RNG states saved in `resume.safetensors`, that
makes `--resume` reproduce the uninterrupted run exactly, including after an interruption in the middle
of an epoch (under DDP each other process saves its own streams and running sums beside it:
vitc.train.state).
"""

from __future__ import annotations

import copy
import gc
import time
import traceback
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch._dynamo  # before any process group: vitc's own, or a library user's made after importing this module
import torch.nn.functional as F

from vitc._device import pick_device
from vitc._io import write_json
from vitc._lazy import lazy_import
from vitc._run_layout import RunLayout
from vitc._signals import stop_signals_ignored
from vitc._terminal import PlainConsole
from vitc.checkpoint import load_state_dict, write_checkpoint
from vitc.data.feed import EVAL_BATCH, final_split
from vitc.data.prefetch import Prefetcher
from vitc.data.sampling import epoch_share, make_generator, split_batches
from vitc.data.transforms import eval_transform
from vitc.errors import VitcError
from vitc.models import get_model_cfg
from vitc.train import report
from vitc.train.agree import Agreement
from vitc.train.config import TrainConfig, validate
from vitc.train.defaults import resolve_defaults
from vitc.train.device import gpu_advice, pick_amp, reraise_gpu
from vitc.train.distributed import (
    all_reduce_sum,
    barrier,
    process_info,
    shutdown,
    union_over_processes,
)
from vitc.train.evaluate import broadcast_state, evaluate_batches
from vitc.train.finished import out_of_patience
from vitc.train.interrupt import interrupted, interruption, left_untested, running_stats
from vitc.train.network import stand_in_loss
from vitc.train.optim import backbone_eval, lr_at
from vitc.train.peers import raise_if_peer_ended, what_is_kept
from vitc.train.records import checkpoint_meta, summary_record
from vitc.train.run_folder import RunFolder
from vitc.train.setup import Run, seed_streams, setup_run
from vitc.train.state import remove_rank_states, rng_states, save_state

# torch._dynamo is imported above, with the training loop, before a process group exists: imported after a gloo
# group, as a torch optimiser's constructor imports it, a process aborts at its exit now and then ("terminate called
# without an active exception", SIGABRT; plain torch 2.13: 1 launch in 20 to 30, none in 30 with the import first).
# Every training process imports it anyway; `vitc eval` on a checkpoint (vitc.train.evaluate) does not.
FEED_AHEAD = {"cuda": 1}  # batches augmented ahead, by device type (vitc.data.prefetch); a CPU takes each in turn


@dataclass
class RunResult:
    run_dir: Path
    history: list[dict[str, Any]]
    best_val_top1: float
    test: dict[str, float]
    train_images_per_s: float
    seconds: float
    test_split: str = "test"  # "val" when the data has no test split (an image folder without test/)
    stopped_early: str = ""  # why the run stopped before its last epoch (optim.patience), else empty
    skipped_images: int = 0  # unreadable files left out (data.on_bad_image=skip), each counted once
    compile_seconds: float | None = None  # run.compile: the first step (the meter's warm-up), which compiles
    timing: dict[str, float | None] = field(default_factory=dict)  # this session's StepMeter.summary()
    attention: list[dict[str, Any]] | None = None  # the formulations measured on a GPU (vitc.models.formulation)
    sync_bn: bool = False  # BatchNorm normalised over every process's batch (run.sync_bn under DDP)
    processes: int = 1  # that trained it, in this session (DDP's world size), as the checkpoint's provenance says
    val_precision: str = "fp32"  # what validation ran in: the run's autocast ("bf16", "fp16"), else fp32
    resumes: list[dict[str, Any]] = field(default_factory=list)  # vitc.train.records.resume_record, each --resume


def train(cfg: TrainConfig, resume: bool = False, show_progress: bool = True, force: bool = False) -> RunResult:
    """Train `cfg.model.name` on `cfg.data`, writing checkpoints and metrics under the run folder.

    With `force`, an existing run of the same name is replaced once the new one has a checkpoint. `cfg` is
    checked as `load_config` checks it (a config built or edited in Python was not: epochs = -1 ran, then
    divided by zero).
    """
    started = time.perf_counter()
    # every process's start is compared once it is ready to train, before it joins the process group: a failure
    # or a difference in any stops them all with one line (vitc.train.agree); a no-op for one process
    with Agreement("setup") as agreement:
        validate(cfg)  # idempotent: the CLI's config, checked by load_config already, passes again unchanged
        defaults = resolve_defaults(cfg)  # before config.json is written: the run records explicit values
        device = pick_device(cfg.run.device)
        dist = process_info(device.type)
        for note in defaults if show_progress and dist.is_main else ():
            PlainConsole(markup=False, highlight=False).print(f"default: {note}")
        if cfg.log.tensorboard:
            lazy_import("tensorboard")  # missing: one clear error before any data is loaded
        # curves.png (rank 0, report.CurvesClock): missing, it failed at the first figure, maybe the last epoch
        if dist.is_main:
            lazy_import("matplotlib")
        if dist.enabled and device.type == "cuda":
            device = torch.device("cuda", dist.local_rank)
        amp_dtype = pick_amp(cfg.run.amp, device)
        if cfg.optim.batch_size is not None and cfg.optim.batch_size % dist.world_size:
            raise VitcError(f"batch size {cfg.optim.batch_size} does not split evenly over {dist.world_size} processes")
        folder = RunFolder(cfg.run.out_dir, cfg.run_name)
        if dist.is_main:  # before the data is loaded: a run that cannot be written fails at once
            folder.acquire()
            try:
                folder.start(force=force, resume=resume)
            except VitcError:
                folder.release()
                raise
        run: Run | None = None
        # a process of several ending with its line: torchrun stops the others as one ends, and its SIGTERM in the
        # teardown below would replace the line (or add "Exception ignored … KeyboardInterrupt" from a callback)
        quiet = ExitStack()
        try:
            with ExitStack() as cleanup:
                try:
                    run = setup_run(
                        cfg, resume, show_progress, started, device, dist, amp_dtype, folder, cleanup, agreement
                    )
                except RuntimeError as exc:  # the DDP wrap's and the attention choice's collectives, among others
                    raise_if_peer_ended(
                        exc, dist.enabled, "as the run started", lambda: what_is_kept(cfg, dist.world_size, resume)
                    )
                    raise
                return _train(run)
        except BaseException as exc:
            if dist.enabled and isinstance(exc, VitcError):
                quiet.enter_context(stop_signals_ignored())
            folder.discard()  # stopped before its first checkpoint: no half-made run folder is left behind
            if dist.enabled:  # the frames' locals (the Run, its DDP) are not kept alive past the process group
                traceback.clear_frames(exc.__traceback__)
            raise
        finally:
            with quiet:
                folder.release()
                if dist.enabled:  # DDP's reducer is dropped while the process group still holds gloo's backend:
                    run = None  # gloo's teardown deadlock (vitc.train.distributed.leave_process_group)
                    gc.collect()
                shutdown(dist)


def _train(run: Run) -> RunResult:
    """One epoch and its end at a time; Ctrl-C or SIGTERM saves a resumable state, a CUDA failure is one line."""
    cfg, state = run.cfg, run.state
    with run.ctrl_c.installed():  # through the final test too: SIGTERM there says what follows, as Ctrl-C does
        try:
            for epoch in range(state.epoch, state.epoch if state.stopped_early else cfg.optim.epochs):
                _train_epoch(run, epoch)
                if _end_epoch(run, epoch):
                    break
        except KeyboardInterrupt:
            with stop_signals_ignored():
                interrupted(run)
        except RuntimeError as exc:  # CUDA out of memory, or the GPU lost mid-run: one line, nothing deleted
            if run.ctrl_c.stopped():  # under DDP, a collective failed as a peer stopped for the same Ctrl-C
                with stop_signals_ignored():
                    interrupted(run)
            # a resume state to continue from: the one it resumed, or an epoch's end that rank 0 recorded (every
            # process counts its epochs; the history is rank 0's alone, so another said "start it again" after one)
            recorded = state.epoch - (1 if run.ending is not None else 0)
            saved = run.in_place and (recorded > 0 or run.earlier > 0)
            kept = None if run.in_place else str(run.folder.final)
            raise_if_peer_ended(
                exc, run.dist.enabled, "during training", lambda: what_is_kept(cfg, run.dist.world_size, saved, kept)
            )
            reraise_gpu(exc, run.doing, *gpu_advice(cfg, run.per_rank_batch, run.amp_dtype, run.run_dir, state.epoch))
        try:
            return _finish(run)
        except (KeyboardInterrupt, RuntimeError) as exc:  # the last epoch's checkpoints and resume file are written
            if isinstance(exc, KeyboardInterrupt) or run.ctrl_c.stopped():  # or a peer's collective, stopped alike
                raise interruption(
                    run, f" while scoring the best checkpoint, after training: {left_untested(run)}"
                ) from None
            when = "during the final test, after training"
            raise_if_peer_ended(exc, run.dist.enabled, when, lambda: f": {left_untested(run)}")
            raise


def _train_epoch(run: Run, epoch: int) -> None:
    """One epoch of training steps, from where the state says it stands (a resume continues mid-epoch).
    The permutation depends on (seed, epoch) only; augmentation draws from its own stream."""
    cfg, state, feed, dist, model, net = run.cfg, run.state, run.feed, run.dist, run.model, run.net
    optimizer, aug_gen, progress = run.optimizer, run.aug_gen, run.progress
    per_rank_batch, steps_per_epoch = run.per_rank_batch, run.steps_per_epoch
    total_steps, warmup_steps = run.total_steps, run.warmup_steps
    net.train()
    if cfg.optim.freeze == "backbone":
        backbone_eval(model)
    if state.step_in_epoch == 0:
        seed_streams(aug_gen, cfg.run.seed, epoch, dist.rank)
        state.partial = {"loss": 0.0, "count": 0.0}
        if run.counts_skipped:  # in memory, the train set's unreadable files were left out at load
            state.partial["skipped"] = float(feed.skipped_per_epoch if dist.is_main else 0)
    # a set smaller than one batch (common when fine-tuning) trains on that one partial batch
    full = run.epoch_samples >= cfg.optim.batch_size
    order = make_generator(cfg.run.seed, epoch)
    samples, copies = epoch_share(len(feed), order, repeats=cfg.aug.repeats, **_shard(dist))
    epoch_batches = split_batches(samples, per_rank_batch, drop_last=full)[:steps_per_epoch]
    copy_batches = split_batches(copies, per_rank_batch, drop_last=full)[:steps_per_epoch]
    progress.start(epoch, cfg.optim.epochs, len(epoch_batches), state.step_in_epoch)
    run.doing = f"at batch size {per_rank_batch} (epoch {epoch + 1}, training)"
    fed = feed.train_batches(epoch_batches[state.step_in_epoch :], epoch, copy_batches[state.step_in_epoch :])
    ready = Prefetcher(fed, run.augment, aug_gen, run.device, FEED_AHEAD.get(run.device.type, 0))
    run.tick = time.perf_counter()
    run.meter.start_epoch()
    stats = running_stats(model)
    for step in range(state.step_in_epoch, len(epoch_batches)):
        run.unfinished = (ready.rewind_state(), rng_states())  # restored if this step is cut short
        run.stats_before = [t.clone() for t in stats] if stats else None  # its forward updates them in place
        lr = lr_at(state.global_step, total_steps, warmup_steps, cfg.optim.lr, cfg.optim.min_lr, cfg.optim.warmup_lr)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        batch = next(ready)  # on the device, augmented; on a GPU the next one is prepared meanwhile
        if batch.bad:  # unreadable images, skipped (data.on_bad_image=skip) and counted
            state.partial["skipped"] += len(batch.bad)
        if batch.x is None and not dist.enabled:  # nothing left of this batch: the step passes without an update
            _step_done(run, ready, step)
            continue
        if batch.x is None:  # other processes step: join their collectives (the gradient all-reduce, sync-BN's
            # gathers) with zeros, or they stop matching
            with run.ctrl_c.held():
                _shadow_step(run)
                _step_done(run, ready, step)
            progress.advance(loss=None, lr=lr, images=0)
            continue

        start = run.meter.mark()  # the batch is ready: the step starts
        with run.cast:
            logits = net(batch.x)
        loss = torch.sum(-batch.targets * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()
        with run.ctrl_c.held():  # from the gradient exchange until the step is recorded (vitc.train.interrupt)
            _backward_and_step(run, loss)
            run.meter.finish(loss, batch.count, step, state.global_step + 1, lr, start)
            _step_done(run, ready, step)
            state.images_seen += batch.count * dist.world_size
            if run.meter.due():  # every step on a CPU; on a GPU one wait per group of steps
                run.meter.settle(state.partial, epoch, progress, run.board, run.run_dir)
        progress.advance(loss=None, lr=lr, images=batch.count * dist.world_size)
    with run.ctrl_c.held():  # losses read back but not yet in the running sums are lost to a stop
        run.meter.settle(state.partial, epoch, progress, run.board, run.run_dir)


def _shadow_step(run: Run) -> None:
    """A DDP step for a process whose whole batch was unreadable: a zero loss on a stand-in, so its gradients
    (zeros) join the others' all-reduce and every process takes the same optimiser step.

    The stand-in is blank images in eval mode, from which no BatchNorm takes statistics. Under sync-BN the
    others' BatchNorms, in train mode, gather every process's batch statistics in each layer, forward and
    backward, which an eval-mode forward never joins: the stand-in is then an empty batch in train mode, which
    torch's SyncBatchNorm joins with a count of 0 that it leaves out of the global statistics
    (torch/nn/modules/_functions.py), so the others normalise and update their running statistics as if this
    process had no share. In float32, without autocast: torch sends an empty batch's zeros in its input's dtype
    where a batch sends its statistics in float32, and gathered tensors must match."""
    if run.sync_bn:
        stand_in = torch.zeros(0, *get_model_cfg(run.model).input_size, device=run.device)
        _backward_and_step(run, run.net(stand_in).float().sum() * 0.0)
        return
    with stand_in_loss(run.net, run.model, run.cfg.optim.freeze, run.cast, run.device) as loss:
        _backward_and_step(run, loss)


def _backward_and_step(run: Run, loss: torch.Tensor) -> None:
    """Backward (scaled for fp16), clip, optimiser step, EMA: one training step's update."""
    optimizer, model, clip = run.optimizer, run.model, run.cfg.optim.clip_grad
    optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    if clip > 0:
        run.scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    run.scaler.step(optimizer)
    run.scaler.update()
    if run.ema is not None:
        run.ema.update(model)


def _step_done(run: Run, ready: Prefetcher, step: int) -> None:
    """Step `step` is recorded: a stop from here saves the run after it, undoing only the draws of the batches
    prepared ahead."""
    run.state.step_in_epoch, run.state.global_step = step + 1, run.state.global_step + 1
    run.unfinished, run.stats_before = _ahead(ready), None


def _ahead(ready: Prefetcher) -> tuple[torch.Tensor, dict[str, torch.Tensor]] | None:
    """Between steps: the RNG states to restore if the run stops now, when batches were drawn ahead."""
    return (ready.rewind_state(), rng_states()) if ready.queue else None


def _end_epoch(run: Run, epoch: int) -> bool:
    """Evaluate (each process its share), keep best and last, save the resumable state (rank 0); True when
    the run stops early."""
    cfg, state, feed, dist, model, ema = run.cfg, run.state, run.feed, run.dist, run.model, run.ema
    board, progress, mean, std = run.board, run.progress, run.mean, run.std
    total_steps, warmup_steps = run.total_steps, run.warmup_steps
    state.train_seconds += time.perf_counter() - run.tick
    run.tick = None
    progress.finish()
    with run.ctrl_c.held():  # every process records the summed end, or none does (a Ctrl-C before: each its own)
        all_reduce_sum(dist, state.partial)  # the logged train loss is the mean over all processes
        run.ending = state.step_in_epoch  # from here the sums are all in rank 0's
        state.epoch, state.step_in_epoch = epoch + 1, 0
    evaluated = ema.module if ema is not None else model
    broadcast_state(dist, evaluated, buffers_only=True)  # the checkpointed BatchNorm statistics are rank 0's
    val_batches = feed.eval_batches("val", **_shard(dist))  # each process scores its share; the sums add up
    val_batches = board.tap(val_batches) if board else val_batches
    run.doing = f"at batch size {EVAL_BATCH} (epoch {epoch + 1}, validation)"
    with run.meter.evaluating():
        val = evaluate_batches(evaluated, val_batches, mean, std, run.device, run.amp_dtype, dist)
    if dist.is_main:
        last_lr = lr_at(
            state.global_step - 1, total_steps, warmup_steps, cfg.optim.lr, cfg.optim.min_lr, cfg.optim.warmup_lr
        )
        row = {
            "epoch": epoch + 1,
            "train_loss": state.partial["loss"] / max(1.0, state.partial["count"]),
            "lr": last_lr,
            "val_top1": val["top1"],
            "val_top5": val["top5"],
            "val_loss": val["loss"],
        }
        if feed.num_classes <= 5:  # 100% by construction, as the final test's: not in metrics.jsonl nor TensorBoard
            del row["val_top5"]
        if "skipped" in state.partial:  # unreadable images skipped this epoch (data.on_bad_image=skip)
            row["skipped_images"] = int(state.partial["skipped"])
        with run.ctrl_c.held():  # a stop waits until the epoch is in every log and in the resume state
            _record_epoch(run, row, evaluated)
    stop = {"stop": float(state.stopped_early)}
    all_reduce_sum(dist, stop)  # rank 0 decided: every process leaves the loop together
    state.stopped_early = stop["stop"] > 0
    barrier(dist)
    run.in_place, run.ending = True, None  # rank 0 has committed the run folder and recorded the epoch's end
    return state.stopped_early


def _record_epoch(run: Run, row: dict[str, Any], evaluated: torch.nn.Module) -> None:
    """Rank 0: the epoch's row, its checkpoints and every log (metrics.jsonl, curves.png when due, TensorBoard's
    figures and scalars, flushed), and only then the resumable state. A stop before that state is saved
    runs the epoch's end again on --resume (vitc.train.interrupt's `interrupted`), which rewrites metrics.jsonl
    and curves.png from the saved history and purges TensorBoard past the resume point (vitc.train.setup):
    every epoch in the resume state is in every log, once. The other order lost an epoch stopped between the two from
    TensorBoard and the curves for good, and the last epoch from metrics.jsonl too."""
    cfg, state, folder, board, model, ema = run.cfg, run.state, run.folder, run.board, run.model, run.ema
    layout = RunLayout(folder.path)
    state.history.append(row)
    run.progress.epoch_summary(row)
    state.stopped_early = out_of_patience(state.history, cfg.optim.patience, cfg.optim.epochs)
    if state.stopped_early:
        row["stopped_early"] = True
    state.seconds = run.earlier + time.perf_counter() - run.started
    meta = checkpoint_meta(evaluated, run.run_info, row)
    if row["val_top1"] > state.best_top1:
        state.best_top1 = row["val_top1"]
        write_checkpoint(layout.best, evaluated, meta)
    write_checkpoint(layout.last, evaluated, meta)
    report.write_metrics(state.history, layout.metrics)
    last = row["epoch"] == cfg.optim.epochs or state.stopped_early
    drawn = run.curves.due(last)
    if drawn:
        run.curves.draw(state.history, folder.path, cfg, run.schedule)
    if board:
        if board.sample is not None:  # under DDP rank 0's share of val may all have been unreadable
            every = cfg.log.figures_every
            draw = every > 0 and (row["epoch"] % every == 0 or last)
            board.locality(evaluated, eval_transform(board.sample, run.mean, run.std), row["epoch"], figures=draw)
        board.epoch(row, [layout.curves] if drawn else [])  # flushed, as near the resume state as can be
    generators = {"aug": run.aug_gen}
    save_state(layout.resume, state, model, run.optimizer, ema and ema.module, generators,
               run.run_info, run.scaler)  # fmt: skip
    run.ending = None  # the epoch is recorded: a stop from here resumes after it
    remove_rank_states(layout.resume)  # the other processes' parts of a Ctrl-C before
    moved = board and folder.path != folder.final
    renamed = board.moving(RunLayout(folder.final).tensorboard) if moved else nullcontext()
    with renamed:  # a --force run replaces the old one now that it has checkpoints (the event file follows it)
        folder.commit()


def _finish(run: Run) -> RunResult:
    """Score the best checkpoint on the held-out test split and write the run's summary."""
    cfg, state, feed, dist, board = run.cfg, run.state, run.feed, run.dist, run.board
    device, mean, std, run_dir = run.device, run.mean, run.std, run.run_dir
    if board:
        board.close()
    # every process scores its share of the test split with rank 0's best weights (another machine of a
    # multi-machine run need not see the run folder), in fp32 whatever the run's autocast: the score that
    # `vitc eval` gives the checkpoint and that the exports' drift is measured from (under bf16 autocast it
    # can differ from both)
    best = copy.deepcopy(run.model)
    if dist.is_main:
        best.load_state_dict(load_state_dict(RunLayout(run_dir).best))
    broadcast_state(dist, best)
    try:
        with run.meter.evaluating():
            test_batches = feed.eval_batches("test", **_shard(dist))
            test = evaluate_batches(best.to(device), test_batches, mean, std, device, None, dist)
    except RuntimeError as exc:
        hint = "freeing the GPU (other processes)"
        done = f"; the trained run is complete in {run_dir}: vitc eval scores it (on the CPU)"
        reraise_gpu(exc, f"at batch size {EVAL_BATCH} (the final test)", hint, done)
    if feed.num_classes <= 5:  # top-5 of 5 classes or fewer is 100% by construction: not reported
        test.pop("top5", None)
    rate = state.images_seen / state.train_seconds if state.train_seconds else 0.0
    seconds = run.earlier + time.perf_counter() - run.started  # the whole run, over every resumed session
    result = RunResult(run_dir, state.history, state.best_top1, test, rate, seconds, final_split(cfg.data))
    result.skipped_images = len(union_over_processes(dist, feed.bad))  # under DDP each read its shares
    result.compile_seconds = run.meter.warmup_seconds if cfg.run.compile != "off" else None
    result.timing = run.meter.summary()
    result.attention = run.run_info["attention"]
    result.sync_bn = run.sync_bn
    result.processes = run.run_info["processes"]
    result.val_precision = run.run_info["val_precision"]
    result.resumes = run.run_info.get("resumes", [])
    if state.stopped_early and dist.is_main:  # the history is rank 0's
        best = max(state.history, key=lambda row: row["val_top1"])
        result.stopped_early = (
            f"stopped early after epoch {len(state.history)} of {cfg.optim.epochs}: val top-1 has not improved "
            f"for {cfg.optim.patience} epochs (optim.patience); the best, {best['val_top1']:.2f}%, "
            f"was epoch {best['epoch']}"
        )
    if dist.is_main:
        write_json(RunLayout(run_dir).summary, summary_record(cfg, result))
    # the processes tear their connections down together: once in CI a rank that had left while rank 0
    # still evaluated died of SIGABRT after a complete run, as gloo aborts on a socket its peer closed
    barrier(dist)
    return result


def _shard(dist: Any) -> dict[str, int]:
    return {"rank": dist.rank, "world_size": dist.world_size}
