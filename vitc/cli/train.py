"""`vitc train`: a thin wrapper over vitc.train."""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional

import typer
from rich.table import Table
from typing_extensions import Annotated

from vitc._run_layout import BEST, CONFIG, RunLayout, is_resume_state, is_run_folder
from vitc._terminal import Fitted
from vitc._text import rate, shell_word
from vitc.cli._console import console, library_warnings_printed
from vitc.cli._options import SetOpt, parse_assignments
from vitc.errors import VitcError, unknown_model
from vitc.train.agree import Agreement, NothingToResume

MIN_NPROC_LIMIT = 8  # --nproc's bound on a machine of fewer cores (processes may share them)

if TYPE_CHECKING:
    from vitc.train.config import TrainConfig
    from vitc.train.finished import FinishedRun
    from vitc.train.loop import RunResult


def train(
    recipe: Annotated[
        Optional[Path],
        typer.Argument(
            help="A recipe TOML, e.g. train/convit_micro_digits.toml; with --resume, the run folder to continue."
        ),
    ] = None,
    model: Annotated[
        Optional[str],
        typer.Option("--model", "-m", help="model.name (default: what --pretrained holds, else convit_micro)."),
    ] = None,
    data: Annotated[
        Optional[str], typer.Option(help="digits, cifar10 or imagefolder (data.name; default: what --data-dir holds).")
    ] = None,
    data_dir: Annotated[
        Optional[Path], typer.Option(help="Class folders (DIR/train/<class>/, DIR/val/<class>/) or CIFAR-10 batches.")
    ] = None,
    epochs: Annotated[Optional[int], typer.Option(help="optim.epochs")] = None,
    batch_size: Annotated[
        Optional[int],
        typer.Option("--batch-size", "-b", help="optim.batch_size: the global batch (timm's -b × processes)."),
    ] = None,
    lr: Annotated[
        Optional[float],
        typer.Option("--lr", help="optim.lr: the peak learning rate (warm-up rises to it from optim.warmup_lr)."),
    ] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="run.seed")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto, cpu or cuda (run.device).")] = None,
    name: Annotated[Optional[str], typer.Option(help="Run name: the folder under train/runs (run.name).")] = None,
    pretrained: Annotated[
        Optional[Path],
        typer.Option(
            help="Start from these weights (model.pretrained): a vitc checkpoint or run folder, or any file "
            "`vitc import` reads."
        ),
    ] = None,
    set_: SetOpt = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue a run exactly: the run folder given, else the run of this name.")
    ] = False,
    nproc: Annotated[int, typer.Option(help="DDP processes to launch on this machine; 1 runs in-process.")] = 1,
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet",
            "-q",
            help="No progress bar (nor its lines in a log) and no start-up notes (default: …); the epoch lines, "
            "warnings and the summary still print.",
        ),
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Start over; the old run is replaced once the new one has a checkpoint.")
    ] = False,
) -> None:
    """Train a zoo model. With no arguments: convit_micro on the bundled digits, in a few minutes on CPU."""
    from vitc.cli._eval_report import drop_stale_reports
    from vitc.train.run_folder import RunFolder, resume_command

    # everything the command line and the recipe say is checked before torch is imported (seconds)
    flags = {"model.name": model, "data.name": data, "data.dir": str(data_dir) if data_dir else None}
    flags.update({"optim.epochs": epochs, "run.device": device, "run.name": name})
    flags.update({"optim.batch_size": batch_size, "optim.lr": lr, "run.seed": seed})
    flags.update({"model.pretrained": str(pretrained) if pretrained else None})
    # under torchrun each process reads its own machine's files: any failure stops all, and so does a run that
    # one process finds finished and another not (each leaves it as it is, or none does)
    with Agreement("start") as agreement:
        overrides = {k: v for k, v in flags.items() if v is not None} | parse_assignments(set_)
        cfg, notes, changed = _configure(recipe, resume, overrides)
        _check_nproc(nproc)
        finished = _finished(cfg) if resume else None  # nothing left to train: no file of the run is touched
        agreement.settle({"epochs finished (summary.json)": finished.epochs if finished else None})
    if finished is not None:  # before --nproc launches anything
        if os.environ.get("RANK", "0") == "0":
            world = nproc if nproc > 1 else int(os.environ.get("WORLD_SIZE", "1"))
            line = finished.line(resume_command(cfg, world, by_nproc=nproc > 1))
            console().print(line, markup=False, highlight=False, soft_wrap=True)
            for note in changed:  # taken by nothing: the run trains no further
                console().print(f"not applied: {note}", markup=False, highlight=False, soft_wrap=True)
        return
    # a resumed run replaces its checkpoints: eval's reports of them go, also when it is stopped (rank 0's task)
    before = _checkpoints(cfg) if resume and os.environ.get("RANK", "0") == "0" else {}
    if nproc > 1:
        RunFolder(cfg.run.out_dir, cfg.run_name).start(force=force, resume=resume)  # fail before launching
        try:
            _launch_torchrun(nproc, functools.partial(_what_was_saved, cfg, nproc, resume, time.time()))
        finally:
            drop_stale_reports(_replaced(cfg, before))
        return
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks for all
        for note in [] if quiet else notes:
            console().print(f"default: {note}", markup=False, highlight=False)
        for note in changed:  # under -q too: the run goes on with other settings than it was started with
            console().print(f"resumed with {note}", markup=False, highlight=False, soft_wrap=True)
        if resume and not quiet:
            _say_where_it_resumes(cfg)
    from vitc.train.loop import train as run_training

    try:
        # -q still prints the warnings and the epoch lines train(show_progress=False) logs
        with library_warnings_printed("vitc.train.progress"):
            result = run_training(cfg, resume=resume, show_progress=not quiet, force=force)
    finally:
        drop_stale_reports(_replaced(cfg, before))
    if result.test and os.environ.get("RANK", "0") == "0":  # under DDP, rank 0 speaks for all
        _summary(cfg.model.name, result)
        say = console().print
        if result.stopped_early:
            say(result.stopped_early, markup=False, highlight=False, soft_wrap=True)
        if result.skipped_images:
            say(
                f"{result.skipped_images} unreadable image{'s' * (result.skipped_images != 1)} skipped "
                "(data.on_bad_image=skip; named above, "
                "counted per epoch in metrics.jsonl)",
                markup=False, highlight=False, soft_wrap=True,
            )  # fmt: skip
        run = Path(cfg.run.out_dir) / cfg.run_name
        hint = f"next: vitc export {shell_word(str(run))} -p fp32 -p fp16 -p int8"  # a path with a space pastes whole
        say(hint, markup=False, highlight=False, soft_wrap=True)


def _configure(
    recipe: Optional[Path], resume: bool, overrides: dict[str, object]
) -> tuple[TrainConfig, list[str], list[str]]:
    """The run's configuration from the recipe (or the resumed run's config.json) and the command line, checked;
    (it, the defaults it took, what a resume changed)."""
    from vitc.train.config import apply, load_config, resume_config
    from vitc.train.defaults import resolve_defaults

    if resume and recipe is not None and recipe.suffix not in (".toml", ".safetensors") and not recipe.exists():
        raise NothingToResume(f"nothing to resume: {recipe} does not exist")
    if recipe is not None and (recipe.is_dir() or recipe.suffix == ".safetensors"):
        overrides = overrides | _run_folder(recipe, resume, overrides)
        recipe = None
    cfg = load_config(recipe, overrides)
    changed: List[str] = []
    if resume:
        cfg = resume_config(cfg, {})  # the run's own config.json, read once
        before = cfg.to_dict()
        cfg = apply(cfg, overrides)  # plus what is set explicitly now
        if cfg.optim.epochs != before["optim"]["epochs"]:  # the schedule is a function of the run's length
            _check_not_shorter(cfg)
    named = cfg.model.name is not None  # checked now; a model the weights name is checked once resolved
    _check_before_torch(cfg, resume)
    notes = resolve_defaults(cfg)
    if resume:  # compared resolved (a relative --data-dir is the folder config.json records absolute)
        changed = resumed_with(before, cfg.to_dict())
    if not named:
        _check_model(cfg.model.name)
    return cfg, notes, changed


def resumed_with(before: Dict[str, Any], after: Dict[str, Any]) -> List[str]:
    """Each setting a resume changes between two config.json records, as `key = new (was old)`: accepted (at
    an epoch's end any, within one those that keep its draws), and config.json then holds the new value, so the
    user is told of every one."""
    from vitc.train.records import changed_settings

    lines = []
    for key, (old, new) in changed_settings(before, after).items():
        line = f"{key} = {new!r} (was {old!r})"
        if key == "optim.epochs":
            line += ": the learning-rate schedule is recomputed for the new length from where the run stopped"
        lines.append(line)
    return lines


def _run_folder(path: Path, resume: bool, overrides: dict[str, object]) -> dict[str, str]:
    """`vitc train --resume RUN`: the folder (or a checkpoint in it) names the run, its out_dir and name, as
    timm's --resume and Ultralytics' resume= take the path of what to continue. Neither is ever a recipe: said
    with what would use it."""
    if path.suffix == ".safetensors":
        if not resume:
            raise VitcError(_checkpoint_not_a_recipe(path))
        path = path.parent
    folder = Path(os.path.normpath(path))
    if folder.name in ("", ".."):  # the name of "." or ".."
        folder = folder.resolve()
    layout = RunLayout(folder)
    if not layout.config.is_file():
        run = is_run_folder(folder)  # its checkpoints or resume state, without the configuration --resume reads
        if resume and folder.is_dir():  # under torchrun, on a machine that sees another copy of run.out_dir
            what = f"a run folder without {CONFIG}" if run else f"a folder without {CONFIG}, not a run folder"
            raise NothingToResume(f"nothing to resume: {path} is {what}")
        if run:
            raise VitcError(f"{path} is a run folder without {CONFIG}, not a recipe TOML")
        raise VitcError(f"{path} is a folder, not a recipe TOML (nor a run folder: it has no {CONFIG})")
    if not resume:  # --pretrained takes the checkpoint the folder stands for, which a run stopped early lacks
        start = f", `vitc train --pretrained {path}` starts a new run from its weights"
        raise VitcError(
            f"{path} is a run folder, not a recipe: `vitc train --resume {path}` continues it"
            + (start if layout.best.is_file() else f" (it has no {BEST} to start a new run from)")
        )
    other_name = overrides.get("run.name", folder.name) != folder.name
    other_dir = Path(str(overrides.get("run.out_dir", folder.parent))).resolve() != folder.parent.resolve()
    if other_name or other_dir:
        key = "run.name" if other_name else "run.out_dir"
        raise VitcError(f"--resume {path} is run {folder.name!r} of {folder.parent}: drop {key}={overrides[key]}")
    return {"run.out_dir": str(folder.parent), "run.name": folder.name}


def _checkpoint_not_a_recipe(path: Path) -> str:
    """`vitc train FILE.safetensors`: the command that uses it. A run's resume state (rank 0's or a DDP rank's)
    is what `--resume` of its run folder continues, and no weights to start from (`--pretrained` refuses it):
    its run's best.safetensors is."""
    run = RunLayout(path.parent)
    if not is_resume_state(path):
        return f"{path} is a checkpoint, not a recipe: `vitc train --pretrained {path}` starts a new run from it"
    uses = [f"`vitc train --resume {run.folder}` continues that run"] if run.config.is_file() else []
    if run.best.is_file():
        uses.append(f"`vitc train --pretrained {run.best}` starts a new run from its best weights")
    if not uses:
        return f"{path} is a run's resume state, not a recipe (its run folder has neither {CONFIG} nor {BEST})"
    return f"{path} is a run's resume state, not a recipe: " + ", ".join(uses)


def _say_where_it_resumes(cfg: TrainConfig) -> None:
    """`resuming train/runs/x at epoch 2 of 3, from its step 4`: where the resume state stands."""
    from vitc.artifacts.resume import resume_summary

    state = RunLayout(Path(cfg.run.out_dir) / cfg.run_name).resume
    summary = resume_summary(state) if state.is_file() else None
    if summary is not None:  # of the epochs it is resumed with (--epochs may extend it)
        line = f"resuming {state.parent} at {dataclasses.replace(summary, of_epochs=cfg.optim.epochs).where()}"
        console().print(line, markup=False, highlight=False, soft_wrap=True)


def _check_not_shorter(cfg: TrainConfig) -> None:
    """--resume --epochs N below the epochs a run has trained would train nothing and leave config.json
    saying N beside metrics and a summary of more: refused."""
    from vitc.artifacts.resume import resume_summary

    state = RunLayout(Path(cfg.run.out_dir) / cfg.run_name).resume
    summary = resume_summary(state) if state.is_file() else None
    done = summary.epochs_done if summary else 0
    if cfg.optim.epochs < done:
        raise VitcError(
            f"run {cfg.run_name!r} has trained {done} epoch{'s' if done != 1 else ''}: --epochs must be at least "
            f"{done} (--force starts over)"
        )


def _finished(cfg: TrainConfig) -> Optional[FinishedRun]:
    """The resumed run when it has nothing left to train at the epochs and patience it is resumed with."""
    from vitc.train.finished import finished_run

    return finished_run(Path(cfg.run.out_dir) / cfg.run_name, cfg.optim.epochs, cfg.optim.patience)


def _check_before_torch(cfg: TrainConfig, resume: bool) -> None:
    """The model is one of the zoo's, the data folder holds data of its kind, the starting weights exist."""
    from vitc.data.files import check_data_dir, detect_kind

    if cfg.model.name is not None:
        _check_model(cfg.model.name)
    if cfg.data.name is not None or cfg.data.dir:
        check_data_dir(cfg.data.name or detect_kind(Path(cfg.data.dir)), cfg.data.dir)
    if cfg.model.pretrained and not resume and not Path(cfg.model.pretrained).exists():
        raise VitcError(f"no such file or folder: {cfg.model.pretrained} (--pretrained / model.pretrained)")


def _check_model(name: str) -> None:
    from vitc._model_sources import registered_names

    names = registered_names()
    if name not in names:
        raise unknown_model(name, names)


def _what_was_saved(cfg: TrainConfig, nproc: int, resume: bool, since: float) -> str:
    """After Ctrl-C where no process said what it saved (in the start-up, or once the run had finished):
    what the run folder holds from this launch."""
    from vitc.train.run_folder import RunFolder, resume_command

    folder = RunFolder(cfg.run.out_dir, cfg.run_name).final
    layout = RunLayout(folder)
    summary, state = layout.summary, layout.resume
    command = resume_command(cfg, nproc, by_nproc=True)
    if summary.exists() and summary.stat().st_mtime >= since:
        return f"the run had finished: its checkpoints and summary.json are in {folder}"
    if state.exists() and (resume or state.stat().st_mtime >= since):
        return f"continue with: {command}"
    return "nothing was saved"


def _checkpoints(cfg: TrainConfig) -> dict[Path, tuple[int, int, int]]:
    """The run's checkpoints, each with what tells a replaced file (inode, mtime, size)."""
    folder = Path(cfg.run.out_dir) / cfg.run_name
    stamps = {}
    for path in folder.glob("*.safetensors"):
        stat = path.stat()
        stamps[path] = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
    return stamps


def _replaced(cfg: TrainConfig, before: dict[Path, tuple[int, int, int]]) -> list[Path]:
    """The checkpoints of `before` that the run has since replaced (or removed)."""
    now = _checkpoints(cfg)
    return [path for path, stamp in before.items() if now.get(path) != stamp]


def _check_nproc(nproc: int) -> None:
    """--nproc within 1 and what this machine can feed (a process per GPU or per core; 8 on a smaller
    machine): a typo such as 100000 would otherwise start processes until the machine gives out."""
    from vitc._device import cpu_cores

    cores = cpu_cores()  # those this process may use (taskset, a container's limit), not the machine's
    most = max(MIN_NPROC_LIMIT, cores)
    if not 1 <= nproc <= most:
        raise VitcError(
            f"--nproc must be 1 to {most} on this machine ({cores} CPU core{'s' * (cores != 1)}; one process per "
            f"GPU), got {nproc}"
        )


def _launch_torchrun(nproc: int, saved: Callable[[], str]) -> None:
    """Re-run this very command as `nproc` ranks on this machine, in torchrun's environment; a rank
    that dies stops the others and is named in one line (vitc.train.launcher.launch)."""
    from vitc.train.launcher import launch

    argv, skip = [], False
    for arg in sys.argv[1:]:
        if skip or arg.startswith("--nproc"):
            skip = arg == "--nproc"  # its value follows
            continue
        argv.append(arg)
    launch(argv, nproc, saved=saved)


def _summary(model: str, result: RunResult) -> None:

    table = Table(title=f"{model}: run summary")
    final = result.test_split  # "val" for an image folder without test/: the figure is not a test score
    top5 = "top5" in result.test  # not reported with 5 classes or fewer: 100% by construction
    val = "best val top-1" + ("" if result.val_precision == "fp32" else f" ({result.val_precision})")
    columns = ("epochs", val, f"{final} top-1", f"{final} top-5", "train img/s", "time")
    cells = (
        str(len(result.history)),
        f"{result.best_val_top1:.2f}%",
        f"{result.test['top1']:.2f}%",
        f"{result.test.get('top5', 0.0):.2f}%",
        rate(result.train_images_per_s),
        f"{result.seconds:.0f} s",
    )
    keep = [i for i in range(len(columns)) if top5 or i != 3]
    for i in keep:
        table.add_column(columns[i], justify="right", no_wrap=True)  # figures whole at any width
    table.add_row(*(cells[i] for i in keep))
    terminal = console()
    terminal.print(Fitted(table))
    if final != "test":
        terminal.print(f"no test split: the final figures are on {final}, the split that picked the best epoch")
    terminal.print(f"checkpoints in {result.run_dir}  (best.safetensors, last.safetensors; summary.json)")
