"""ONNX Runtime sessions: the one place vitc builds them, as Polygraphy's loader builds the session its runners run.

The ONNX Runtime runner (`vitc bench`, `vitc eval` on an ONNX file), the export's checks (parity, drift, --explain)
and INT8's probes (the calibration memory estimate, the folded weights) differ only in what they say here: the
providers, whether graph optimisations run, the threads. Every session runs on the CPU cores this process may use
(`vitc._device.cpu_cores`: the affinity mask, which containers and taskset narrow), where ONNX Runtime's own default
counts the machine's, and logs errors only (the runner and the export's checks did; INT8's probes logged warnings).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vitc._device import cpu_cores
from vitc._lazy import lazy_import
from vitc.errors import VitcError, first_line

CPU_ONLY = ("CPUExecutionProvider",)
ERRORS_ONLY = 3  # ONNX Runtime's log_severity_level: 0 verbose, 1 info, 2 warning, 3 error, 4 fatal


def session_options(threads: int | None = None, optimize: bool = True) -> Any:
    """The SessionOptions of every vitc session: `threads` intra-op threads (default: the cores this process may
    use) and one inter-op thread (vitc's graphs are one chain); `optimize=False` runs the file as written, ONNX
    Runtime's graph optimiser off."""
    ort = lazy_import("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or cpu_cores()
    options.inter_op_num_threads = 1
    level = ort.GraphOptimizationLevel
    options.graph_optimization_level = level.ORT_ENABLE_ALL if optimize else level.ORT_DISABLE_ALL
    options.log_severity_level = ERRORS_ONLY
    return options


def ort_session(
    model: str | Path | bytes | Any,
    providers: Sequence[str] = CPU_ONLY,
    threads: int | None = None,
    optimize: bool = True,
    name: str = "the graph",
) -> Any:
    """An InferenceSession of `model` (a path, serialized bytes or a ModelProto) on the first of `providers` that
    loads it (a listed GPU provider whose libraries are missing gives way to the next); ONNX Runtime's own
    failures (its optimiser or a kernel refusing the graph) are one VitcError naming `name`."""
    ort = lazy_import("onnxruntime")
    options = session_options(threads, optimize)
    source = str(model) if isinstance(model, (str, Path)) else model
    source = source if isinstance(source, (str, bytes)) else source.SerializeToString()
    remaining = list(providers)
    while True:
        try:
            return ort.InferenceSession(source, options, providers=remaining)
        except Exception as exc:  # onnxruntime's Fail, InvalidGraph, NotImplemented, ...: no common base
            if len(remaining) > 1:
                remaining = remaining[1:]
                continue
            level = "graph optimisations on" if optimize else "graph optimisations off"
            raise VitcError(f"ONNX Runtime cannot load {name} ({level}): {first_line(exc)}") from exc
