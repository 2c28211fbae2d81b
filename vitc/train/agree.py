"""The processes of a multi-process run compare their starts before any of them trains, over torchrun's
rendezvous store (vitc.train.distributed.rendezvous_store), which needs no process group.

Each process launched alone can fail alone: machine 1 has no copy of the run folder that `--resume` names,
rank 0 refuses a run folder that holds a run, one machine's data folder misses an image. Alone, that
process would exit with its error while the others wait in `init_process_group` or in their first collective
for torch's 30-minute timeout, saying nothing; and processes started differently (another learning rate,
class folders named otherwise) would train on, silently wrong. So every process says how its start went, twice:
once the command line is read (`Agreement("start")`, vitc.cli.train) and once its data, model and resumed
state are ready (`Agreement("setup")`, with a fingerprint of the run: vitc.train.setup). Any failure or
difference stops every process with the same one line, naming the process and its machine.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import socket
import time
from types import TracebackType
from typing import Any

from vitc.errors import VitcError, first_line, named_first_line

WAIT_S = 30 * 60.0  # for the slowest process to arrive: torch's own rendezvous timeout (machines start apart)
POLL_S = 0.02  # the store is polled, so that Ctrl-C still reaches a waiting process
# may differ from machine to machine: where the run folder, the data and the weights are; the cores to feed
MACHINE_KEYS = ("run.out_dir", "data.dir", "model.pretrained", "run.workers")
SHARED_FOLDER = (
    "--resume of a run across machines needs run.out_dir on a file system every machine sees, or a copy of "
    "rank 0's run folder on each machine"
)
TRACEBACK_ELSEWHERE = "its traceback is in that process's output"  # a process's bug, named in the others' line
PEER_ENDED = "another process of the run ended"  # a collective failed as it went (vitc.train.peers)
_rounds: dict[str, itertools.count[int]] = {}  # each stage's agreements in this process: a key is used once
_DIGITS = re.compile(r"[0-9]+")  # a whole number as torchrun writes one (str.isdigit takes any script's digits)
LAUNCHER_ENV = "VITC_NPROC"  # set in the processes `vitc train --nproc N` starts (torchrun's are not)


class NothingToResume(VitcError):
    """--resume found no run to continue here: on another machine of a multi-machine run the cause is a run
    folder that only rank 0's machine sees (vitc.train.agree says so)."""


def several_processes() -> bool:
    """This process is one of several (torchrun's, or `vitc train --nproc`'s), as its checked environment says."""
    return process_env()[1] > 1


def process_env() -> tuple[int, int, int]:
    """(RANK, WORLD_SIZE, LOCAL_RANK) as torchrun sets them, checked before any rendezvous: WORLD_SIZE=2 alone
    ended in a KeyError's traceback, WORLD_SIZE=abc in a ValueError's, a missing MASTER_ADDR in a line that blamed
    another process, and RANK=5 of 2 waited in torch's store connection without end, deaf to Ctrl-C."""
    world = _whole("WORLD_SIZE", minimum=1, default="1")
    if world == 1:
        return 0, 1, 0
    for name in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        if not os.environ.get(name, "").strip():
            raise VitcError(
                f"environment variable {name} is not set, but WORLD_SIZE={world} makes this one of {world} "
                f"processes: start them with torchrun or `vitc train --nproc {world}`, which set RANK, LOCAL_RANK, "
                "MASTER_ADDR and MASTER_PORT (or unset WORLD_SIZE for one process)"
            )
    rank, local = _whole("RANK", minimum=0), _whole("LOCAL_RANK", minimum=0)
    local_world = _whole("LOCAL_WORLD_SIZE", minimum=1, default=str(world))
    port = _whole("MASTER_PORT", minimum=1)
    if rank >= world or local >= local_world:
        name, value, of, limit = (
            ("RANK", rank, "WORLD_SIZE", world)
            if rank >= world
            else ("LOCAL_RANK", local, "LOCAL_WORLD_SIZE", local_world)
        )
        raise VitcError(f"environment variable {name}={value} is not below {of}={limit}: ranks count from 0")
    if port > 65535:
        raise VitcError(f"environment variable MASTER_PORT={port} is not a port (1 to 65535)")
    return rank, world, local


def _whole(name: str, minimum: int, default: str | None = None) -> int:
    """The environment variable `name`, a whole number of at least `minimum` in plain decimal digits as torchrun
    writes it, else one line naming it and its value: int() took `+2`, ` 2`, `2_0` and `٢` as 2 or 20, forms
    torchrun never writes (a typo, or a script's own launcher), and the run went on as if they were plain."""
    text = os.environ.get(name, default)
    if text is None or not _DIGITS.fullmatch(text) or int(text) < minimum:
        raise VitcError(f"environment variable {name}={text!r} is not a whole number of at least {minimum}")
    return int(text)


def launched_by_nproc() -> bool:
    """This process is one of those `vitc train --nproc N` started (not torchrun's)."""
    return bool(os.environ.get(LAUNCHER_ENV))


def prints_shared_errors() -> bool:
    """This process prints an error that every process raises alike (the agreed line, an error of the command line
    itself): under torchrun the first process on each machine (LOCAL_RANK 0) does, as a machine's processes share
    its terminal (and each machine has its own), and the others exit with its code silently, where each printed the
    same line. Under `vitc train --nproc` every rank does: the launcher reads each one's output and says one line."""
    try:
        several = several_processes()
    except VitcError:  # the environment's own error (process_env), which every process prints
        return True
    return not several or launched_by_nproc() or os.environ.get("LOCAL_RANK", "0") == "0"


class Agreement:
    """`with Agreement(stage):` the processes' outcomes of the block, exchanged once: an exception in any
    process (in this one, it is exchanged as it leaves the block) or a difference between the fingerprints
    passed to `settle` stops every process with the same one-line VitcError. A no-op for one process."""

    def __init__(self, stage: str) -> None:
        self.stage = stage
        self.enabled = several_processes()
        self.settled = not self.enabled

    def __enter__(self) -> Agreement:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, trace: TracebackType | None
    ) -> bool:
        if self.settled:
            return False
        self.settled = True
        outcome = _outcome(exc) if exc is not None else {}
        error = _verdict(_exchange(self.stage, {"where": _where(), **outcome}))
        if exc is not None and not isinstance(exc, VitcError):
            return False  # this process's own bug or Ctrl-C: its traceback is the report, as without the others
        if error is not None:
            raise error from None
        return False

    def settle(self, fingerprint: dict[str, Any] | None = None) -> None:
        """This process is ready: wait for every other, and stop with the rest if any failed or differs."""
        if self.settled:
            return
        self.settled = True
        error = _verdict(_exchange(self.stage, {"where": _where(), "fingerprint": fingerprint or {}}))
        if error is not None:
            raise error


def run_fingerprint(
    config: dict[str, Any],
    classes: list[str],
    train_images: int,
    position: list[int],
    eval_sets: dict[str, Any] | None = None,
) -> dict:
    """What every process of one run must have alike: its settings but the machine's own paths and cores
    (MACHINE_KEYS), its classes in their order, the size of its training set, what it knows of its validation
    and test sets (`eval_sets`: vitc.data.feed.eval_fingerprint) and where it resumed. Each process scores its
    share of val and test: another machine's other images were summed in silently."""
    from vitc.train.config import flatten

    settings = {key: value for key, value in flatten(config).items() if key not in MACHINE_KEYS}
    found = {"classes": classes, "train images": train_images, **(eval_sets or {})}
    return {**settings, **found, "resumed at (epoch, step)": position}


def _outcome(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, VitcError):
        return {"error": str(exc), "nothing_to_resume": isinstance(exc, NothingToResume)}
    if isinstance(exc, KeyboardInterrupt):
        return {"error": "was interrupted (Ctrl-C)"}
    return {"error": f"failed: {named_first_line(exc)} ({TRACEBACK_ELSEWHERE})"}


def _where() -> str:
    """This process's machine: torchrun's node rank (GROUP_RANK) and the host's name."""
    node, host = os.environ.get("GROUP_RANK"), socket.gethostname()  # `vitc train --nproc` sets no GROUP_RANK
    return host if node is None else f"machine {node}, {host}"


def _exchange(stage: str, payload: dict[str, Any]) -> list[dict[str, Any]]:
    """Every process's `payload`, in rank order, through the rendezvous store. Keys carry torchrun's restart
    and this process's count of the stage, so that a restarted group or a second run never reads old ones."""
    from vitc.train.distributed import rendezvous_store

    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    count = next(_rounds.setdefault(stage, itertools.count()))
    prefix = f"vitc/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/{stage}/{count}"
    keys = [f"{prefix}/{other}" for other in range(world_size)]
    try:
        store = rendezvous_store()
        store.set(keys[rank], json.dumps(payload))
        _wait(store, keys, stage, world_size)
        payloads = [json.loads(store.get(key)) for key in keys]
        done = store.add(f"{prefix}/read", 1)
        if rank == 0:  # where rank 0 holds the store (--nproc), it stays until every process has read it (a
            # process starved of the CPU takes its time; the launcher stops a rank that dies meanwhile)
            deadline = time.monotonic() + WAIT_S
            while done < world_size and time.monotonic() < deadline:
                time.sleep(POLL_S)
                done = store.add(f"{prefix}/read", 0)
    except (RuntimeError, ValueError) as exc:  # torch's DistStoreError and the like: the store went away
        raise VitcError(
            f"rank {rank} of {world_size} lost torchrun's rendezvous store while the processes compared their "
            f"{stage} ({first_line(exc, 200)}): another process ended first; its output says why"
        ) from None
    return payloads


def _wait(store: Any, keys: list[str], stage: str, world_size: int) -> None:
    deadline = time.monotonic() + WAIT_S
    while not store.check(keys):
        if time.monotonic() > deadline:
            missing = [key.rsplit("/", 1)[1] for key in keys if not store.check([key])]
            raise VitcError(
                f"rank {', '.join(missing)} of {world_size} did not reach the {stage} within {WAIT_S / 60:.0f} "
                "minutes: see its machine's output"
            )
        time.sleep(POLL_S)


def _verdict(payloads: list[dict[str, Any]]) -> VitcError | None:
    """The one error every process raises: the first process's that failed (all alike: that error as it
    is), else the first setting in which the fingerprints differ; None when all is well."""
    world_size = len(payloads)
    failed = [(rank, payload) for rank, payload in enumerate(payloads) if payload.get("error")]
    if failed:
        if len({payload["error"] for _, payload in failed}) == 1 and len(failed) == world_size:
            return _agreed(failed[0][1]["error"])  # the same input failed alike in every process
        rank, payload = failed[0]
        line = f"rank {rank} of {world_size} ({payload['where']}): {payload['error']}"
        if payload.get("nothing_to_resume") and not payloads[0].get("error"):
            line += f"; rank 0 ({payloads[0]['where']}) has the run: {SHARED_FOLDER}"
        return _agreed(line)
    first = payloads[0].get("fingerprint", {})
    for rank, payload in enumerate(payloads[1:], start=1):
        theirs = payload.get("fingerprint", {})
        for key in {**first, **theirs}:
            mine, other = first.get(key), theirs.get(key)
            if json.dumps(mine) != json.dumps(other):
                return _agreed(
                    f"the {world_size} processes were started differently: {key} is {_shown(mine)} in rank 0 "
                    f"({payloads[0]['where']}) but {_shown(other)} in rank {rank} ({payload['where']}): start every "
                    f"machine with the same recipe, settings and data (only {', '.join(MACHINE_KEYS)} may differ)"
                )
    return None


def _agreed(line: str) -> VitcError:
    """The error every process raises alike: printed once per machine (prints_shared_errors)."""
    error = VitcError(line)
    error.every_process = True
    return error


def _shown(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 120 else text[:117] + "..."
