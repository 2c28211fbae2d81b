"""vitc._ort, the one factory of ONNX Runtime sessions: the cores it runs on, its one-line failures."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.engines.conftest import make_tiny_onnx
from vitc.errors import VitcError

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or (os.cpu_count() or 1) < 2, reason="needs 2+ cores")
def test_a_session_runs_on_the_cores_this_process_may_use(tmp_path: Path) -> None:
    """Narrowed to one core (taskset, a container's cpuset), a session starts no intra-op pool: ONNX Runtime's
    own default counts the machine's cores, and the export's sessions, which left it the choice, started one
    thread per core of the machine on that one core."""
    model = make_tiny_onnx(tmp_path / "tiny.onnx")
    code = (
        "import os, sys\n"
        "os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})\n"
        "import onnxruntime  # imported first: only the session's own threads are counted\n"
        "from vitc._ort import ort_session\n"
        "threads = lambda: len(os.listdir('/proc/self/task'))\n"
        "before = threads()\n"
        f"session = ort_session({str(model)!r})\n"
        "print(threads() - before)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0"]


def test_what_onnx_runtime_cannot_load_is_one_line(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from vitc._ort import ort_session

    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a graph")
    with pytest.raises(VitcError) as refused:
        ort_session(broken, optimize=False, name=str(broken))
    said = str(refused.value)
    assert said.startswith(f"ONNX Runtime cannot load {broken} (graph optimisations off): ") and "\n" not in said
