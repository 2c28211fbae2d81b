"""What a process of a multi-process run says when another process ended first, and which process of a machine
says a line that several would say alike.

Under torchrun, when one process ends (its own error, a SIGTERM to it alone, the out-of-memory killer's SIGKILL)
the others' next collective fails on the closed connection (gloo: "Connection closed by peer", "Connection reset
by peer"; nccl: DistBackendError). That failure is not theirs: each surviving process printed it as a 68-line
traceback that buried the one line saying why. Each now ends with one line that points to the process that ended;
the first process of each machine to say a line prints it (its terminal), the others exit with its code silently.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from vitc._signals import stop_signals_ignored
from vitc.errors import VitcError, gpu_failure
from vitc.train.agree import PEER_ENDED, launched_by_nproc, several_processes
from vitc.train.run_folder import resume_command

if TYPE_CHECKING:
    from vitc.train.config import TrainConfig

STORE_WAIT_S = 5.0  # for the rendezvous store to count a line: gone with its machine, the line is printed anyway
# gloo's words for a peer that has gone (its RuntimeError has no type of its own)
_GLOO_PEER_GONE = re.compile(r"gloo.*(connection (closed|reset) by peer|read error|timed out)", re.IGNORECASE)


def collective_failed(exc: BaseException) -> bool:
    """`exc` is a collective failing as another process went away, not this process's own failure: torch's
    distributed errors by type (DistError: nccl's DistBackendError, the store's, the network's), gloo's by its
    words; a CUDA failure (out of memory, a lost GPU) stays this process's own."""
    import torch.distributed as dist

    if gpu_failure(exc, "", "") is not None:
        return False
    distributed_error = getattr(dist, "DistError", None)  # torch 2.1 on
    return bool(distributed_error and isinstance(exc, distributed_error)) or bool(_GLOO_PEER_GONE.search(str(exc)))


def peer_ended(when: str, then: str) -> VitcError:
    """The one line of a process whose collective failed as another ended: `when` (the run's phase: setup, the
    epochs, the final test), then `then`, what was kept and the command that goes on from it."""
    return said_once_per_machine(VitcError(f"{PEER_ENDED} {when} (its output says why){then}"))


def what_is_kept(cfg: TrainConfig, world_size: int, saved: bool, kept: str | None = None) -> str:
    """`peer_ended`'s end before the final test: --resume where a resume state was `saved` (this session's, or the
    one it resumed from), else to start again; `kept`, the earlier run a --force run had not replaced yet (it stays,
    the new one is dropped)."""
    if saved:
        return f"; continue from the last saved epoch with: {resume_command(cfg, world_size, launched_by_nproc())}"
    return f", before the run saved a resume state: {f'{kept} is kept as it was' if kept else 'start it again'}"


def raise_if_peer_ended(exc: BaseException, several: bool, when: str, then: Callable[[], str]) -> None:
    """Raise `peer_ended(when, then())` where `exc` is a collective of `several` processes failing as another ended
    (`collective_failed`), stop signals ignored meanwhile (torchrun stops this process too: its line is said first);
    else return, for the caller to go on with `exc`. Each phase of a run with collectives calls it: torch's
    traceback was shown wherever none did (setup's DDP wrap, the final test)."""
    if several and collective_failed(exc):
        with stop_signals_ignored():
            raise peer_ended(when, then()) from None


def said_once_per_machine(error: VitcError) -> VitcError:
    """`error`, marked `said_elsewhere` unless this process is the first of its machine to say its line."""
    error.said_elsewhere = not first_to_say(str(error))
    return error


def first_to_say(line: str) -> bool:
    """This process is the first of its machine (torchrun's GROUP_RANK) to say `line`, as counted on torchrun's
    rendezvous store; True where that cannot be told: one process, `vitc train --nproc` (its launcher reads every
    rank's output and says one line), a store that is gone or slow."""
    try:
        if not several_processes() or launched_by_nproc():
            return True
    except VitcError:  # torchrun's variables are odd (vitc.train.agree.process_env): no store to count on
        return True
    from vitc.train.distributed import rendezvous_store

    machine = os.environ.get("GROUP_RANK", "0")
    restart = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    key = f"vitc/{restart}/said/{machine}/{hashlib.sha1(line.encode()).hexdigest()}"
    counted: list[bool] = []

    def count() -> None:
        try:
            counted.append(int(rendezvous_store().add(key, 1)) == 1)
        except Exception:  # torch's store errors (DistStoreError, DistNetworkError): the line is said here
            counted.append(True)

    # the store's own timeout does not bound add() (a machine gone without a reset blocks it for minutes, while
    # this process ignores stop signals to say its line): a thread, left behind after STORE_WAIT_S
    counter = threading.Thread(target=count, name="vitc-first-to-say", daemon=True)
    with _stderr_dropped():
        counter.start()
        counter.join(STORE_WAIT_S)
    return counted[0] if counted else True


@contextmanager
def _stderr_dropped() -> Iterator[None]:
    """This process's stderr (file descriptor 2) discarded inside, while its line is counted: a store gone with its
    machine made torch log the failed request as an 18-line C++ warning, its backtrace (c10d's TCPStore.cpp, `recvValue
    failed … Did the remote server shutdown or crash?`), above the line that says why. Its log level cannot be raised
    here: torch reads TORCH_CPP_LOG_LEVEL once, as it is imported. Nothing else of this process speaks meanwhile: it
    is ending, with that line."""
    try:
        sys.stderr.flush()
        kept = os.dup(2)
    except (OSError, ValueError):  # no stderr to keep (closed): nothing to discard either
        yield
        return
    discard = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(discard, 2)
        yield
    finally:
        os.dup2(kept, 2)
        os.close(kept)
        os.close(discard)
