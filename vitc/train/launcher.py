"""The launcher of `vitc train --nproc N`: this command again as N ranks on this machine, watched until they end.

Torch-free, so the ranks start while the launcher has imported nothing heavy (importing torch first cost each
launch over a second before any rank began, and its memory for the whole run); the ranks' side of the process
group is vitc.train.distributed.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from vitc.errors import VitcError
from vitc.train.agree import LAUNCHER_ENV, PEER_ENDED, TRACEBACK_ELSEWHERE

STOP_GRACE_S = 5.0  # how long the other processes get to exit after SIGTERM before SIGKILL
# after Ctrl-C, or SIGTERM or SIGHUP to the launcher, how long its ranks get to save where they stand
# (vitc.train.interrupt) before they are stopped: a large model's resume state takes seconds; torchrun gives its
# workers 30 s; the sender's own SIGKILL (Slurm's KillWait, 30 s by default; docker stop's 10 s) comes when it comes
SAVE_GRACE_S = 30.0
# after a rank ended cleanly (past the run's last barrier, with every rank), how long the others get to
# tear down before the launcher stops them: rank 0 prints the summary table, each leaves the process group
FINISH_GRACE_S = 30.0
OWN_LINE_CODES = (2, 130, 128 + signal.SIGTERM)  # a rank's own error, or what it saved after Ctrl-C or SIGTERM


def launch(argv: list[str], nproc: int, poll_s: float = 0.05, saved: Callable[[], str] | None = None) -> None:
    """Run `python -m vitc.cli.main *argv` as `nproc` ranks on this machine (torchrun's environment,
    a free local port) and watch them: when one dies, the others are stopped within seconds (a rank
    blocked in a collective would otherwise wait for its peer for gloo's 30-minute timeout) and one
    line says which rank died and how. A rank's own one-line error (exit code 2, or 130 after Ctrl-C and 143
    after a SIGTERM of its own, with its resume command) is passed on as it is; after Ctrl-C with no rank
    saying what it saved (pressed in the start-up, or once the run had finished), `saved` says what the run
    folder holds. SIGTERM or SIGHUP to the launcher stops the ranks with SIGTERM, which each takes as Ctrl-C
    (it saves where it stands), and SIGKILL after SAVE_GRACE_S; after Ctrl-C, a rank still running
    SAVE_GRACE_S later (blocked in a call that never returns) is stopped so, and named in a warning. Rank 0
    ends cleanly only after the run's last barrier, which every rank reached, so a rank that aborts after
    that died tearing down, and one still tearing down FINISH_GRACE_S after another ended cleanly is stopped:
    a warning, not an error.
    """
    with socket.socket() as sock:  # a free port for the rendezvous (torchrun --standalone does the same)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    base = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(nproc)}
    base.update(LOCAL_WORLD_SIZE=str(nproc), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))  # as torchrun
    base[LAUNCHER_ENV] = str(nproc)
    with tempfile.TemporaryDirectory(prefix="vitc-ddp-") as logs, _terminations() as signals:
        procs: list[subprocess.Popen[bytes]] = []
        errs: list[IO[bytes]] = []
        first: tuple[int, int] | None = None  # (rank, return code) of the first process to fail
        pressed = False  # Ctrl-C reached the launcher (and the ranks)
        stopped: list[int] = []  # the ranks still running when the launcher stopped them
        try:
            try:
                for rank in range(nproc):
                    errs.append(open(os.path.join(logs, f"rank{rank}.err"), "w+b"))  # noqa: SIM115 - closed below
                    env = {**base, "RANK": str(rank), "LOCAL_RANK": str(rank)}
                    cmd = [sys.executable, "-m", "vitc.cli.main", *argv]
                    procs.append(subprocess.Popen(cmd, env=env, stderr=errs[-1]))
                first = _watch(procs, poll_s)
            except KeyboardInterrupt:  # Ctrl-C reached every rank too: they save and exit with 130
                pressed = True
                _wait_after_ctrl_c(procs, poll_s)
        except _Terminated:  # SIGTERM or SIGHUP: the ranks are stopped below, as torchrun stops its workers
            pass
        finally:
            signals.armed = False
            stopped = _stop(procs, SAVE_GRACE_S if signals.received else STOP_GRACE_S)
        texts = []
        for err in errs:
            err.seek(0)
            texts.append(err.read().decode(errors="replace"))
            err.close()
    if signals.received:
        said = saved() if saved else "--resume continues from the last saved epoch"
        name = signal.Signals(signals.received[0]).name
        error = VitcError(f"stopped by {name}: the {nproc} processes were stopped; {said}")
        error.exit_code = 128 + signals.received[0]
        raise error
    # ranks the launcher stopped after Ctrl-C, or once another had finished the run, explain nothing
    late = stopped if pressed or first is None else []
    failed = [(r, p.returncode) for r, p in enumerate(procs) if p.returncode and r not in late]
    first = first or (min(failed, key=lambda f: (f[1] >= 0, f[0])) if failed else None)
    if late:
        when = "after Ctrl-C" if pressed else f"{FINISH_GRACE_S:.0f} s after the run had finished"
        stopped_late = f"{_ranks_named(late)} of {nproc} had not ended {when}: stopped by the launcher"
        if pressed and first is None:  # none of the others said what was saved
            sys.stderr.write(f"warning: {stopped_late}\n")
            raise _interrupted(saved)
    # rank 0 ended cleanly, so past the run's last barrier with every rank: the other died tearing down
    torn_down = _another_rank_died_by_itself(first) and procs[0].returncode == 0
    if first is None or torn_down:
        sys.stderr.write(texts[0])  # rank 0's warnings; the other ranks repeat them
        if first is not None:
            rank, code = first
            sys.stderr.write(
                f"warning: rank {rank} of {nproc} {_how(code, texts[rank])} after the run had finished; "
                "its files are complete\n"
            )
        if late:  # tearing down, as torch before 2.8 could hang in it (vitc.train.distributed.shutdown)
            sys.stderr.write(f"warning: {stopped_late}; the run's files are complete\n")
        return
    if late:
        sys.stderr.write(f"warning: {stopped_late}\n")
    rank, code = _cause(first, failed, texts)
    own = _own_errors(texts[rank])
    if code in OWN_LINE_CODES and own:  # a VitcError (the same bad input in every rank), or a stop's resume line
        _show_named_traceback(own[-1], texts)
        error = VitcError(own[-1][len("error: ") :])
        error.exit_code = code
        raise error
    if code == 130 or (pressed and code == -signal.SIGINT):  # Ctrl-C where no rank said what it saved
        raise _interrupted(saved)
    if code > 0:  # a bug in that rank: its traceback is the report
        sys.stderr.write(texts[rank])
    others = f"; the other {'process was' if nproc == 2 else 'processes were'} stopped"
    raise VitcError(
        f"rank {rank} of {nproc} {_how(code, texts[rank])}{others}; --resume continues from the last saved epoch"
    )


def _watch(procs: list[subprocess.Popen[bytes]], poll_s: float) -> tuple[int, int] | None:
    """Wait until every rank has ended or one failed; (rank, return code) of the first failure.

    Every rank is polled each time: `any(p.poll() is None ...)` stopped at rank 0 while it ran, so a rank
    that died was never seen (nor reaped) while rank 0 waited for it, in a collective that does not notice a
    dead peer (nccl's, until its timeout) or in a call that never returns."""
    finished: float | None = None  # when the first rank ended cleanly
    while True:
        codes = [p.poll() for p in procs]
        failed = [(rank, code) for rank, code in enumerate(codes) if code not in (None, 0)]
        if failed:  # a rank killed by a signal is the cause; its peers then fail in their collectives
            first = min(failed, key=lambda f: (f[1] >= 0, f[0]))
            if _another_rank_died_by_itself(first):  # rank 0 may be finishing a complete run
                with contextlib.suppress(subprocess.TimeoutExpired):
                    procs[0].wait(timeout=STOP_GRACE_S)
            return first
        if None not in codes:
            return None
        if 0 in codes:  # past the run's last barrier, with every rank: the others are tearing down
            finished = time.monotonic() if finished is None else finished
            if time.monotonic() - finished > FINISH_GRACE_S:
                return None  # those left hung in it: stopped by the caller
        time.sleep(poll_s)


def _wait_after_ctrl_c(procs: list[subprocess.Popen[bytes]], poll_s: float) -> None:
    """The ranks save and exit with 130 after Ctrl-C, within SAVE_GRACE_S (torchrun gives its workers 30 s):
    one that has not by then (blocked in a call that never returns, an nccl collective whose peer has gone)
    is stopped below, where the launcher waited for it without end. Pressed again, they get STOP_GRACE_S."""
    deadline = time.monotonic() + SAVE_GRACE_S
    while True:
        try:
            while any([p.poll() is None for p in procs]) and time.monotonic() < deadline:  # a list: poll them all
                time.sleep(poll_s)
            return
        except KeyboardInterrupt:
            deadline = min(deadline, time.monotonic() + STOP_GRACE_S)


class _Terminated(Exception):
    """The launcher received SIGTERM or SIGHUP while it watched its ranks."""


@dataclass
class _Signals:
    received: list[int]
    armed: bool = True  # raise _Terminated (while watching the ranks); afterwards only record


@contextlib.contextmanager
def _terminations() -> Iterator[_Signals]:
    """While the launcher runs, SIGTERM and SIGHUP (timeout, kill, a batch scheduler, a closed terminal) are
    recorded and, while it is armed, raise `_Terminated`, so that the ranks are stopped rather than left
    running, re-parented, holding the run's lock: Python's default for them ends the launcher at once,
    running no `finally`."""
    signals = _Signals([])

    def handler(signum: int, frame: Any) -> None:
        signals.received.append(signum)
        if signals.armed:
            signals.armed = False  # once: a second signal must not interrupt the stopping
            raise _Terminated

    wanted = [signal.SIGTERM, *([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])]
    previous = {signum: signal.signal(signum, handler) for signum in wanted}
    try:
        yield signals
    finally:
        for signum, before in previous.items():
            signal.signal(signum, before)


def _interrupted(saved: Callable[[], str] | None) -> VitcError:
    """Ctrl-C where no rank said what it saved: what the run folder holds, exit code 130."""
    said = saved() if saved else "nothing was saved before training began"
    error = VitcError(f"interrupted; {said}")
    error.exit_code = 130
    return error


def _ranks_named(ranks: list[int]) -> str:
    return ("rank " if len(ranks) == 1 else "ranks ") + ", ".join(str(rank) for rank in ranks)


def _own_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


def _cause(first: tuple[int, int], failed: list[tuple[int, int]], texts: list[str]) -> tuple[int, int]:
    """The rank whose ending explains the others': one killed by a signal, else one that said its own
    error (a bad image under data.on_bad_image=stop, read by one rank only), not a peer whose collective
    then failed on the closed connection and exited in the same instant."""
    if first[1] < 0:
        return first
    # not one that says another process ended (vitc.train.peers): its peer's output says why
    causes = [(rank, code) for rank, code in failed if not any(PEER_ENDED in line for line in _own_errors(texts[rank]))]
    said = [(rank, code) for rank, code in causes if code in OWN_LINE_CODES and _own_errors(texts[rank])]
    return min(said) if said else (first if first in causes or not causes else min(causes))


def _show_named_traceback(line: str, texts: list[str]) -> None:
    """The others' agreed line names a rank whose bug stopped the start (vitc.train.agree): its traceback is the
    report, as where that rank alone failed."""
    named = re.match(r"error: rank (\d+) of \d+ ", line)
    if named and TRACEBACK_ELSEWHERE in line and int(named.group(1)) < len(texts):
        sys.stderr.write(texts[int(named.group(1))])


def _another_rank_died_by_itself(first: tuple[int, int] | None) -> bool:
    """`first` (rank, return code) is a rank other than 0 that died of a signal it raised itself."""
    return first is not None and first[0] != 0 and _self_inflicted(first[1])


def _self_inflicted(code: int) -> bool:
    """Died of a signal it raised itself (an abort, a crash), not of one sent from outside."""
    return code < 0 and -code not in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT)


def _how(code: int, stderr: str) -> str:
    """How a rank ended, for the one line; a rank that aborted or crashed with its last stderr line."""
    if code > 0:
        return f"exited with code {code}"
    how = f"was killed by {signal.Signals(-code).name}"
    if code == -signal.SIGKILL:
        return how + " (from outside: the out-of-memory killer or a user)"
    said = [line.strip() for line in stderr.splitlines() if line.strip()]
    if _self_inflicted(code) and said:  # e.g. a C++ exception in gloo's communication thread
        from vitc._text import printable

        how += f" (its last words: {printable(said[-1][:300])})"
    return how


def _stop(procs: list[subprocess.Popen[bytes]], grace_s: float) -> list[int]:
    """SIGTERM the processes still running, then SIGKILL whatever is left after `grace_s`; the ranks stopped."""
    stopped = [rank for rank, p in enumerate(procs) if p.poll() is None]
    alive = [procs[rank] for rank in stopped]
    for p in alive:
        p.terminate()
    deadline = time.monotonic() + grace_s
    for p in alive:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    return stopped
