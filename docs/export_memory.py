"""Resident memory of `vitc export` stage by stage (docs/benchmarks.md): where an export's peak comes from.

    python docs/export_memory.py CHECKPOINT [--precision fp32] [--data generated]

Runs the export in this process with each stage wrapped: before a stage the peak (VmHWM) is reset to
the current resident set through /proc/self/clear_refs (Linux 4.0+), so each line gives the resident
set before the stage, the stage's own peak, and what it leaves resident.
"""

from __future__ import annotations

import argparse
import functools
import re
import tempfile
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

# Each stage is wrapped where the export calls it: pipeline's own name for heldout_set (vitc.export.heldout's).
STAGES = {
    "vitc.checkpoint": ("read_checkpoint",),
    "vitc.export.pipeline": ("_compile", "heldout_set", "_torch_logits", "bake_precision", "measure_drift",
                             "write_export"),
    "vitc.export.onnx_export": ("export_onnx", "clean", "check_model", "parity"),
}  # fmt: skip


def resident() -> tuple[float, float]:
    """(VmRSS, VmHWM) in GiB."""
    with open("/proc/self/status") as f:
        status = f.read()
    return tuple(int(re.search(rf"{k}:\s+(\d+) kB", status).group(1)) / 2**20 for k in ("VmRSS", "VmHWM"))  # type: ignore[return-value]


def reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def measured(module: ModuleType, name: str, rows: list[tuple]) -> Callable[..., Any]:
    fn = getattr(module, name)

    @functools.wraps(fn)
    def stage(*args: Any, **kwargs: Any) -> Any:
        before, _ = resident()
        reset_peak()
        started = time.perf_counter()
        out = fn(*args, **kwargs)
        after, peak = resident()
        rows.append(
            (f"{module.__name__.rsplit('.', 1)[-1]}.{name}", before, peak, after, time.perf_counter() - started)
        )
        return out

    return stage


def main() -> None:
    import importlib

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--data", default="generated")
    args = parser.parse_args()
    rows: list[tuple] = []
    for module_name, names in STAGES.items():
        module = importlib.import_module(module_name)
        for name in names:
            setattr(module, name, measured(module, name, rows))
    from vitc.export import ExportOptions, export_checkpoint

    with tempfile.TemporaryDirectory() as out:
        options = ExportOptions(args.precision, out=out, run="r", data=args.data, force=True)
        export_checkpoint(args.checkpoint, options, say=lambda _line: None)
    print("| stage | resident before | stage peak | resident after | seconds |")
    print("|---|---:|---:|---:|---:|")
    for name, before, peak, after, seconds in rows:
        print(f"| {name} | {before:.2f} GiB | {peak:.2f} GiB | {after:.2f} GiB | {seconds:.1f} |")
    print(f"process peak: {max(r[2] for r in rows):.2f} GiB")


if __name__ == "__main__":
    main()
