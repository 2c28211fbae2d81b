"""SIGTERM (a CI runner's timeout, `docker stop`) to any vitc command: taken as Ctrl-C, so that what it was
writing is removed, then one line and exit code 143. Python's default ended the process at once and silently,
leaving `atomic_write`'s hidden temporaries behind. Torch-free: a runtime test (Makefile RUNTIME_TESTS)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# a command of the real app that writes through atomic_write and is sent SIGTERM half-way through
SCRIPT = """
import os, signal, sys, time
from vitc._io import atomic_write
from vitc.cli.main import app, main

@app.command("write")
def write(out: str) -> None:
    with atomic_write(out) as tmp:
        tmp.write_text("partial")
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(float(os.environ.get("SLEEP", "5")))
        tmp.write_text("whole")

sys.argv = ["vitc", "write", sys.argv[1]]
main()
"""


def _run(out: Path, *env: tuple[str, str]) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "PYTHONPATH": str(ROOT), **dict(env)}
    command = [sys.executable, "-c", SCRIPT, str(out)]
    return subprocess.run(command, cwd=out.parent, env=environ, capture_output=True, text=True, timeout=60)


def test_sigterm_while_writing_removes_the_temporary_and_says_so(tmp_path: Path) -> None:
    """Before: killed by the signal (return code -15), nothing said, `.out.json.<random>.tmp` left."""
    out = tmp_path / "out.json"
    done = _run(out)
    assert (done.returncode, done.stderr) == (143, "error: stopped by SIGTERM\n"), done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # neither the file nor its temporary


def test_a_second_sigterm_does_not_cut_the_clean_up_short(tmp_path: Path) -> None:
    """Only the first SIGTERM raises: a second one, sent as the temporary is removed, waits (SIGKILL follows)."""
    script_out = tmp_path / "out.json"
    twice = SCRIPT.replace(
        "from vitc.cli.main import app, main",
        "from vitc.cli.main import app, main\nimport vitc._io as io\n"
        "unlink = io.Path.unlink\n"
        "def unlink_twice(self, *a, **k):\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    return unlink(self, *a, **k)\n"
        "io.Path.unlink = unlink_twice",
    )
    environ = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-c", twice, str(script_out)]
    done = subprocess.run(command, cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr) == (143, "error: stopped by SIGTERM\n"), done.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_handler_the_embedding_program_set_is_kept(tmp_path: Path) -> None:
    """vitc takes SIGTERM over only from Python's default: a program that runs `main` with its own keeps it."""
    script = (
        "import signal, sys\n"
        "def mine(signum, frame):\n"
        "    print('mine', flush=True)\n"
        "signal.signal(signal.SIGTERM, mine)\n"
        + SCRIPT.replace("import os, signal, sys, time", "import os, signal, time")
    )
    environ = {**os.environ, "PYTHONPATH": str(ROOT), "SLEEP": "0"}
    out = tmp_path / "out.json"
    done = subprocess.run(
        [sys.executable, "-c", script, str(out)], cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=60
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "mine\n", ""), done.stderr
    assert out.read_text() == "whole"
