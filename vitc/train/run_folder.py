"""The run folder: where a run's files live, who may write them, and how `--force` replaces a run.

Three rules keep a user's finished runs safe:
- a run name is one path component, so no name reaches outside `run.out_dir`;
- one process at a time writes a run: an exclusive lock (`.NAME.lock` beside the folder, released by
  the kernel when the process dies) makes a second `vitc train --name NAME` stop with a clear error;
- `--force` never deletes first. The new run writes into `.NAME.new/` and only replaces the old folder
  once it has a checkpoint of its own (its first epoch's); until then a typo in `--data-dir`, a crash,
  a kill or Ctrl-C leaves the finished run as it was.
A run that stops with an error before its first checkpoint takes back what it wrote (`discard`), so
bad input leaves no half-made run folder (an index cache, a config) for `--resume` and `--force` to trip on;
a `--force` run that stops with an error before it replaced the old one takes back `.NAME.new/` whole.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from vitc._run_layout import RunLayout, is_run_folder
from vitc._text import shell_word
from vitc.errors import VitcError

if TYPE_CHECKING:
    from vitc.train.config import TrainConfig

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=@-]{0,127}")


def no_resume_state(final: Path) -> str:
    """What run folder `final` holds when it has checkpoints and no resume state (a session killed between its
    first epoch's checkpoints and its resume state, or the file removed): `vitc train` and `--resume` both say it."""
    layout = RunLayout(final)
    weights = shell_word(str(layout.best if layout.best.is_file() else layout.last))
    return (
        f"{final} holds checkpoints but no resume state (a session stopped before its first was saved, or the file "
        f"removed): --force starts over, replacing them, --name picks another, --pretrained {weights} --name NEW "
        "starts a new run from their weights"
    )


def check_run_name(name: str) -> str:
    """A run name is a single, portable path component (letters, digits and . _ + = @ -)."""
    if not _NAME.fullmatch(name) or name.endswith((".new", ".old", ".lock")):
        raise VitcError(
            f"run name {name!r} is not allowed: use 1-128 letters, digits and . _ + = @ - "
            "(starting with a letter or digit), not a path"
        )
    return name


class RunFolder:
    """`out_dir/name`, locked for this process; `path` is where the run writes right now."""

    def __init__(self, out_dir: str | Path, name: str) -> None:
        self.out_dir = Path(out_dir)
        self.name = check_run_name(name)
        self.final = self.out_dir / name
        self.staging = self.out_dir / f".{name}.new"
        self.path = self.final
        self._lock_fd: int | None = None
        self._before: set[str] | None = None  # what `path` held when the run started; None: the run makes it
        self._started = False

    def exists(self) -> bool:
        """Whether the folder holds a run (vitc._run_layout.is_run_folder): one --force or --resume must name."""
        return is_run_folder(self.final)

    def acquire(self) -> None:
        """Take the run's lock, or stop: another process is writing this run."""
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise VitcError(f"run.out_dir {self.out_dir} is a file, not a folder")
        lock = self.out_dir / f".{self.name}.lock"
        while True:
            try:
                self.out_dir.mkdir(parents=True, exist_ok=True)
                fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise VitcError(f"cannot write in {self.out_dir}: {exc.strerror or exc}") from exc
            try:
                _lock(fd)
            except OSError:
                os.close(fd)
                raise VitcError(
                    f"run {self.name!r} is being written by another vitc train process; wait for it, or pick --name"
                ) from None
            if _same_file(fd, lock):
                break
            os.close(fd)  # the holder we waited on removed the file on release: lock the new one
        self._lock_fd = fd

    def release(self) -> None:
        """Drop the lock and its file (unlinked while still held, so no run name leaves a `.NAME.lock`). Windows
        deletes no open file: there the lock is dropped first and the file removed if no other process opened
        it since, which also keeps a second process from locking a file that is gone."""
        if self._lock_fd is not None:
            lock = self.out_dir / f".{self.name}.lock"
            held = _same_file(self._lock_fd, lock)
            try:
                if held:
                    lock.unlink(missing_ok=True)
            except PermissionError:  # Windows: the file is open (here)
                os.close(self._lock_fd)
                with contextlib.suppress(OSError):  # open in another process: it is that one's lock now
                    lock.unlink(missing_ok=True)
            else:
                os.close(self._lock_fd)  # closing the descriptor drops the lock
            self._lock_fd = None

    def start(self, force: bool, resume: bool) -> None:
        """Decide where this run writes; refuse to touch an existing run without --force or --resume."""
        if self.final.exists() and not self.final.is_dir():
            raise VitcError(f"{self.final} is a file, not a run folder")
        old = self.out_dir / f".{self.name}.old"
        if not self.final.exists() and old.is_dir():  # killed between the two renames of commit()
            os.replace(old, self.final)
        if resume or not self.exists():
            self.path = self.final
        elif force:
            _remove(self.staging)  # what a killed --force run left
            self.path = self.staging
        else:
            refusal = (
                f"{self.final} already holds a run: --resume continues it, --force starts over, --name picks another"
                if RunLayout(self.final).resume.is_file()
                else no_resume_state(self.final)
            )
            restart = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
            if restart != "0":  # the run this launch started, most likely: a restart repeats its command line
                refusal += (
                    f" (torchrun's restart {restart} of this launch repeats its command line, which no vitc train "
                    "command survives: launch with --max-restarts 0 and continue a stopped run with --resume)"
                )
            raise VitcError(refusal)
        self._before = set(os.listdir(self.path)) if self.path.is_dir() else None
        self._started = True

    def discard(self) -> None:
        """The run stopped with an error. A --force run that has not replaced the old one is removed whole, its
        checkpoints too: nothing reaches `.NAME.new/` (--resume continues NAME, the next --force deletes it first),
        and a full disk, the likeliest error once its first checkpoints are written, is where it stayed. Any other
        run that stopped before its first checkpoint loses what it wrote, and the folder if the run made it. A
        folder that holds a checkpoint keeps everything; what was there before the run is never touched."""
        if not self._started:
            return
        if self.path == self.staging:
            with contextlib.suppress(OSError):  # best effort: the error that stopped the run is the one to report
                _remove(self.staging)
            self.path = self.final
            return
        if not self.path.is_dir() or is_run_folder(self.path):  # a checkpoint or resume state: kept
            return
        with contextlib.suppress(OSError):  # best effort: the error that stopped the run is the one to report
            if self._before is None:
                _remove(self.path)
                return
            for name in set(os.listdir(self.path)) - self._before:
                entry = self.path / name
                if entry.is_dir() and not entry.is_symlink():
                    _remove(entry)
                else:
                    entry.unlink(missing_ok=True)

    def abandon(self) -> bool:
        """Ctrl-C before a --force run's first checkpoint: drop the new run and keep the old one, which a
        state of a few steps is no reason to lose. False when the run writes in place (nothing is replaced)."""
        if self.path == self.final:
            return False
        _remove(self.staging)
        self.path = self.final
        return True

    def commit(self) -> None:
        """The new run has a checkpoint: swap it in for the old one (a no-op when writing in place)."""
        if self.path == self.final:
            return
        old = self.out_dir / f".{self.name}.old"
        _remove(old)
        os.replace(self.final, old)
        os.replace(self.staging, self.final)
        self.path = self.final
        _remove(old)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)


def _same_file(fd: int, path: Path) -> bool:
    """Whether `path` still names the file open as `fd` (a lock file unlinked by its last holder does not)."""
    try:
        here, there = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def _lock(fd: int) -> None:
    """An exclusive, non-blocking lock that the OS drops when the process ends, however it ends."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        import msvcrt

        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        return
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def resume_command(cfg: TrainConfig, world_size: int, by_nproc: bool) -> str:
    """What continues the run: with as many processes (one would continue on one GPU, with other random
    draws), launched as they were (`by_nproc`: by `vitc train --nproc`, else by torchrun where several: its
    command for this machine, as README shows it; across machines the rendezvous options are the user's)."""
    run = shell_word(str(Path(cfg.run.out_dir) / cfg.run_name))
    command = f"vitc train --resume {run}"
    if by_nproc:
        return f"{command} --nproc {world_size}"
    if world_size <= 1:
        return command
    per_machine = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
    launch = f"torchrun --nproc_per_node {per_machine}"
    if per_machine < world_size:
        machine = os.environ.get("GROUP_RANK", "0")
        launch = f"torchrun --nnodes {world_size // per_machine} --nproc_per_node {per_machine} --node_rank {machine}"
        launch += " <the rendezvous options this launch was given>"
    return f"{launch} -m vitc.cli.main train --resume {run}"
