"""Subprocesses a failing test cannot leave behind: each starts in a session of its own, and when the test
ends with it still running (a timeout, a failed assertion) its whole process group is killed, so that a
`vitc train --nproc` launcher's ranks or a DDP helper's peer do not run on, or hang, past the test (on torch
2.5.1 one rank 0 was left hanging for 18 minutes, and the next DDP test beside it).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest


def run(cmd: list[str], timeout: float, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """subprocess.run(cmd, capture_output=True, text=True, timeout=timeout), killing the process group on a
    timeout (subprocess.run kills the launcher only: its ranks ran on) and failing with what it said."""
    with subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, **kwargs
    ) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(proc)
            out, err = proc.communicate()
            pytest.fail(f"{' '.join(cmd[:5])} … did not end in {timeout:.0f} s; its processes were killed\n{out}{err}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def python_says(code: str, timeout: float = 120) -> str:
    """What `python -c code` (this interpreter) prints, stripped, once it has exited 0 (else its stderr fails the
    test): the probe of what a fresh process imports or does."""
    done = run([sys.executable, "-c", code], timeout)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def popen(cmd: list[str], **kwargs: Any) -> subprocess.Popen[str]:
    """subprocess.Popen in a session of its own, for `killed_on_exit`."""
    return subprocess.Popen(cmd, start_new_session=True, **kwargs)


@contextlib.contextmanager
def killed_on_exit(*procs: subprocess.Popen[Any]) -> Iterator[None]:
    """However the block ends, the process group of each of `procs` (started by `popen`) still running is killed."""
    try:
        yield
    finally:
        for proc in procs:
            if proc.poll() is None:
                kill_group(proc)
                proc.wait()


def kill_group(proc: subprocess.Popen[Any]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
