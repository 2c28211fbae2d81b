"""One mypy run for the suite's three typing checks: --strict on training's setup, --strict on the TensorRT and CUDA
adapters (against repaired tensorrt-stubs) and what a user's code sees of `import vitc`.

Each cold run spends most of its time on the stubs of torch, numpy and the standard library, which the three
share: run one at a time, they took 43 s on 2 cores; together, 17 s. Each test reads its own files' lines.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.engines.repair_trt_stubs import repair, stubs_root

ROOT = Path(__file__).resolve().parents[1]

# training's setup: the `Run` a loop step reads and the steps that build it
STRICT_TRAIN = ("vitc/train/setup.py", "vitc/train/network.py")
# the TensorRT and CUDA adapters, against tensorrt-stubs (TensorRT 10.13's API)
STRICT_TRT = (
    "vitc/engines/tensorrt.py",
    "vitc/engines/trt_plan.py",
    "vitc/build/tensorrt.py",
    "vitc/build/options.py",
    "vitc/build/trt_precision.py",
    "vitc/build/trt_timing_cache.py",
    "vitc/engines/trt_runner.py",
    "vitc/engines/cuda.py",
)
# a user's code: the names `import vitc` resolves lazily must not be `Any` to a type checker
SNIPPET = """\
import vitc

reveal_type(vitc.create_model)
reveal_type(vitc.load_model)
reveal_type(vitc.predict)
reveal_type(vitc.preprocess)
vitc.create_model(42)
"""
CONFIG = """[mypy]
strict = True
python_version = 3.10
follow_imports = silent

# torch declares some of its own functions untyped (Tensor.backward)
[mypy-vitc.train.*]
disallow_untyped_calls = False
[mypy-tensorrt,tensorrt.*,tensorrt_bindings,tensorrt_bindings.*]
ignore_errors = True
[mypy-tensorrt_libs,tensorrt_libs.*,cuda.*,pycuda.*]
ignore_missing_imports = True
"""


@dataclass(frozen=True)
class MypyReport:
    returncode: int
    output: str  # stdout and stderr
    snippet: Path
    checked_trt: bool  # False where tensorrt-stubs is not installed
    files: int  # how many it was given

    def lines_of(self, *files: str | Path) -> list[str]:
        """The report's lines about `files` (mypy prefixes each with the path it was given)."""
        return [line for line in self.output.splitlines() if line.split(":", 1)[0] in {str(f) for f in files}]

    @property
    def finished(self) -> bool:
        """mypy checked every file it was given (exit 0 or 1: no crash, no unreadable configuration)."""
        said = re.search(r"\b(?:checked|no issues found in) (\d+) source files", self.output)
        return self.returncode in (0, 1) and said is not None and int(said.group(1)) == self.files


def available() -> bool:
    return importlib.util.find_spec("mypy") is not None


def run(work: Path) -> MypyReport:
    """mypy over the three checks' files in one process, its cache and configuration in `work`."""
    snippet = work / "snippet.py"
    snippet.write_text(SNIPPET)
    (work / "mypy.ini").write_text(CONFIG)
    checked_trt = stubs_root() is not None
    env = {**os.environ, **({"MYPYPATH": str(repair(work / "stubs"))} if checked_trt else {})}
    files = [*STRICT_TRAIN, *(STRICT_TRT if checked_trt else ()), str(snippet)]
    command = [sys.executable, "-m", "mypy", "--config-file", str(work / "mypy.ini"), "--cache-dir", f"{work}/cache"]
    done = subprocess.run([*command, *files], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    return MypyReport(done.returncode, done.stdout + done.stderr, snippet, checked_trt, len(files))
