"""The TensorRT runner's CUDA lifecycle on the strict fakes: when CUDA graphs are captured during a benchmark,
how CUDA failures (out of memory, a sticky error) reach the user, and what is freed after one."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vitc.artifacts import BatchRange
from vitc.bench import runner as bench_runner
from vitc.bench.runner import bench_runners
from vitc.bench.timing import TimingPlan
from vitc.build import tensorrt as B
from vitc.build.options import BuildOptions
from vitc.engines import cuda as C
from vitc.engines.trt_runner import TensorRTRunner


def _plan(tiny_onnx: Path, tmp_path: Path) -> Path:
    """The tiny model's plan, batch 1:2:4, on the installed fake TensorRT."""
    opts = BuildOptions(onnx=tiny_onnx, output=tmp_path / "m.plan", batch=BatchRange.parse("1:2:4"), check=False)
    return B.build_engine(opts).plan


@pytest.mark.parametrize("warmup", [1, 3])
def test_cuda_graphs_are_captured_in_warm_up_calls_never_in_timed_ones(warmup, fake, tiny_onnx, tmp_path, monkeypatch):
    """--cuda-graph kept one graph for the runner and captured it at the second call of a shape: with batches 1,2
    and --rounds 3 every round switched shape, so the first timed call of most rounds did a whole capture and
    instantiation (`W1 W2 CAPTURE W3 T4 T5 ... W1 T2 CAPTURE T3`). One graph per shape, captured in the first
    (warm-up) call at a shape, leaves every timed call a replay; a new shape recaptures (a graph holds its
    context as it was), so each round's warm-up captures."""
    fake("10.3")
    plan = _plan(tiny_onnx, tmp_path)
    log: list[str] = []
    begin = C.CudaGraph.begin
    monkeypatch.setattr(C.CudaGraph, "begin", lambda graph: (log.append("CAPTURE"), begin(graph))[1])
    collect = bench_runner.collect

    def logged_collect(step: Any, plan: TimingPlan, *args: Any) -> Any:
        calls = [0]

        def logged() -> Any:
            calls[0] += 1
            log.append(("W" if calls[0] <= plan.warmup else "T") + str(calls[0]))
            return step()

        return collect(logged, plan, *args)

    monkeypatch.setattr(bench_runner, "collect", logged_collect)
    runner = TensorRTRunner(plan, cuda_graph=True)
    report = bench_runners([runner], [1, 2], TimingPlan(warmup=warmup, iterations=6), rounds=3)
    capturing_calls = [log[i - 1] for i, entry in enumerate(log) if entry == "CAPTURE"]  # the call it happened in
    assert capturing_calls == ["W1"] * 6, " ".join(log)  # each round's first call, a warm-up one
    assert [(row.batch, row.e2e.count, row.detail["cuda_graph"]) for row in report.rows] == [(1, 6, True), (2, 6, True)]


def test_the_gpu_time_of_a_capturing_call_excludes_the_capture(fake, tiny_onnx, tmp_path, monkeypatch):
    """The start event was recorded before the capture, so the first call's GPU time spanned the host's capture
    and instantiation; the start event now follows them and times only the launch."""
    trt = fake("10.3")
    plan = _plan(tiny_onnx, tmp_path)
    end = C.CudaGraph.end

    def slow_end(graph: C.CudaGraph, enqueued: bool = True) -> bool:
        ended = end(graph, enqueued)
        # the GPU idles while the host instantiates the graph: a second on the fake's clock, in stream order
        gap = lambda: setattr(trt._gpu, "clock", trt._gpu.clock + 1000.0)  # noqa: E731
        trt._gpu.stream(graph.stream.handle).pending.append(gap)
        return ended

    monkeypatch.setattr(C.CudaGraph, "end", slow_end)
    x = np.ones((2, 3, 8, 8), np.float32)
    with TensorRTRunner(plan, cuda_graph=True) as runner:
        runner.infer({"input": x})
        first = runner.gpu_time
        runner.infer({"input": x})
        assert first is not None and first < 0.5  # seconds: the launch's kernel (a millisecond), not the gap
        assert runner.gpu_time == pytest.approx(first)


def _bench(plan: Path, *args: str) -> Any:
    from typer.testing import CliRunner

    from vitc.cli.main import app

    return CliRunner().invoke(app, ["bench", "-e", str(plan), "-b", "1,4", "-n", "2", "--warmup", "1", *args])


BATCH_4_BYTES = 4 * 3 * 8 * 8 * 4  # the tiny model's float32 input at batch 4: the allocation that fails
OUT_OF_MEMORY = r"error: out of GPU memory at batch size 4 \(\S*m\.plan\); try a smaller --batch,"


def _pycuda(trt: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """pycuda alone on the fake's device; its errors as pycuda's are: pycuda._driver.Error and its subclasses
    (MemoryError, LogicError, LaunchError: src/wrapper/wrap_cudadrv.cpp DECLARE_EXC) derive from Exception."""
    import sys

    from tests.engines.fakes.cuda_fakes import install_cuda

    trt._gpu = install_cuda(monkeypatch, cuda_python=None, pycuda=True)
    return sys.modules["pycuda.driver"]


def _pycuda_error(drv: Any, name: str) -> type:
    error = type(name, (drv.Error,), {})
    error.__module__ = "pycuda._driver"
    return error


def test_a_pycuda_runner_leaves_no_context_behind(fake, tiny_onnx, tmp_path, monkeypatch):
    """The runner closes its Cuda when it deactivates, so pycuda's primary context is popped (and stays retained
    for the process: pycuda's detach of a primary context would leave it current)."""
    trt = fake("8.5")
    plan = _plan(tiny_onnx, tmp_path)
    _pycuda(trt, monkeypatch)
    with TensorRTRunner(plan) as runner:
        runner.infer({"input": np.ones((1, 3, 8, 8), np.float32)})
        assert len(trt._gpu.contexts) == 1
    assert trt._gpu.contexts == [] and trt._gpu.retained == {0: 1}


def test_pycuda_out_of_memory_names_the_batch(fake, tiny_onnx, tmp_path, monkeypatch):
    """pycuda's MemoryError is no RuntimeError: bench let it out as a traceback (exit 1)."""
    trt = fake("8.5")
    plan = _plan(tiny_onnx, tmp_path)
    drv = _pycuda(trt, monkeypatch)
    memory_error, mem_alloc = _pycuda_error(drv, "MemoryError"), drv.mem_alloc

    def refuse_large(nbytes: int) -> Any:
        if nbytes >= BATCH_4_BYTES:
            raise memory_error("cuMemAlloc failed: out of memory")
        return mem_alloc(nbytes)

    monkeypatch.setattr(drv, "mem_alloc", refuse_large)
    result = _bench(plan)
    assert result.exit_code == 2, result.output
    assert re.match(OUT_OF_MEMORY, " ".join(result.output.split())), result.output


def test_cuda_python_out_of_memory_names_the_batch(fake, tiny_onnx, tmp_path, monkeypatch):
    """cudaErrorMemoryAllocation said `error: CUDA error in cudaMalloc: cudaErrorMemoryAllocation`: neither the
    batch nor what to do; it is worded as pycuda's and torch's out of memory are."""
    import sys

    from tests.engines.fakes.cuda_fakes import cudaError_t

    fake("10.3")
    plan = _plan(tiny_onnx, tmp_path)
    rt = sys.modules["cuda.bindings.runtime"]
    malloc = rt.cudaMalloc
    failed = (cudaError_t.cudaErrorMemoryAllocation, None)
    monkeypatch.setattr(rt, "cudaMalloc", lambda nbytes: failed if nbytes >= BATCH_4_BYTES else malloc(nbytes))
    result = _bench(plan)
    assert result.exit_code == 2, result.output
    assert re.match(OUT_OF_MEMORY, " ".join(result.output.split())), result.output


def test_a_pycuda_launch_failure_is_one_line(fake, tiny_onnx, tmp_path, monkeypatch):
    """Any other pycuda error (a kernel's illegal address, reported at the synchronize) says the GPU failed, where
    and which call, as a CUDA error of cuda-python or torch does."""
    trt = fake("8.5")
    plan = _plan(tiny_onnx, tmp_path)
    drv = _pycuda(trt, monkeypatch)
    launch_error = _pycuda_error(drv, "LaunchError")

    def synchronize(stream: Any) -> None:
        raise launch_error("cuStreamSynchronize failed: an illegal memory access was encountered")

    monkeypatch.setattr(drv.Stream, "synchronize", synchronize)
    result = _bench(plan)
    assert result.exit_code == 2, result.output
    said = " ".join(result.output.split())
    assert re.match(r"error: the GPU failed at batch size 1 \(\S*m\.plan\) \(CUDA error in Stream\.synchronize: ", said)
    assert said.endswith("cuStreamSynchronize failed: an illegal memory access was encountered); check it with "
                         "nvidia-smi (lost or reset?)"), said  # fmt: skip


RELEASES = (
    "cudaFree",
    "cudaFreeHost",
    "cudaEventDestroy",
    "cudaStreamDestroy",
    "cudaGraphExecDestroy",
    "cudaGraphDestroy",
)


def _sticky(monkeypatch: pytest.MonkeyPatch) -> dict[str, bool]:
    """A kernel faulted: from `on`, every CUDA call returns cudaErrorIllegalAddress, as CUDA's sticky errors do.
    The releases still release (the fake's bookkeeping: what a process that exits gives back), the rest do nothing."""
    import sys

    from tests.engines.fakes.cuda_fakes import cudaError_t

    rt = sys.modules["cuda.bindings.runtime"]
    sticky = {"on": False}

    def failing(name: str, original: Any) -> Any:
        def call(*args: Any) -> Any:
            if not sticky["on"]:
                return original(*args)
            if name in RELEASES:
                original(*args)
            return (cudaError_t.cudaErrorIllegalAddress,)

        return call

    for name in (*RELEASES, "cudaStreamSynchronize", "cudaMemcpyAsync", "cudaEventRecord", "cudaGraphLaunch"):
        monkeypatch.setattr(rt, name, failing(name, getattr(rt, name)))
    return sticky


@pytest.mark.parametrize("cuda_graph", [False, True])
def test_a_sticky_cuda_error_is_reported_first_and_everything_is_freed(
    cuda_graph, fake, tiny_onnx, tmp_path, monkeypatch
):
    """After a sticky error the first failing release (cudaFree) ended the cleanup, leaking the rest and the
    TensorRT context, and its error replaced the inference's: `CUDA error in cudaFree` was reported, the H2D
    copy's only as its context. Every release is now tried, the TensorRT objects dropped, and the error in
    flight is the one raised."""
    from vitc.errors import CudaError

    trt = fake("10.3")
    plan = _plan(tiny_onnx, tmp_path)
    sticky = _sticky(monkeypatch)
    runner = TensorRTRunner(plan, cuda_graph=cuda_graph)
    x = np.ones((2, 3, 8, 8), np.float32)
    with pytest.raises(CudaError, match=r"^CUDA error in cudaMemcpyAsync H2D: cudaErrorIllegalAddress$"), runner:
        runner.infer({"input": x})
        assert (runner._graph is not None) == cuda_graph
        sticky["on"] = True
        runner.infer({"input": x})
    gpu = trt._gpu
    assert (gpu.device, list(gpu.streams), gpu.events, gpu.graphs) == ({}, [0], {}, {})
    assert runner._context is None and runner._engine is None and not runner.is_active


def test_a_failed_cleanup_is_reported_when_nothing_else_failed(fake, tiny_onnx, tmp_path, monkeypatch):
    """With no error in flight the cleanup's own is raised, after every release was tried."""
    from vitc.errors import CudaError

    trt = fake("10.3")
    plan = _plan(tiny_onnx, tmp_path)
    sticky = _sticky(monkeypatch)
    runner = TensorRTRunner(plan)
    with pytest.raises(CudaError, match=r"^CUDA error in cudaFree: cudaErrorIllegalAddress$"), runner:
        runner.infer({"input": np.ones((2, 3, 8, 8), np.float32)})
        sticky["on"] = True
    assert (trt._gpu.device, list(trt._gpu.streams), trt._gpu.events) == ({}, [0], {})
    assert runner._context is None


def test_an_8_5_plan_without_its_sidecar_is_warned_of_once(fake, tiny_onnx, tmp_path):
    """The runner read the raw header too: an 8.5 plan's bytes 24-27 (no version) made it add "no sidecar ...:
    its precision, GPU and drift are unknown" beside check_plan_compat's "unknown version and no sidecar"."""
    from vitc.artifacts.sidecar import sidecar_path

    fake("8.5")
    plan = _plan(tiny_onnx, tmp_path)
    sidecar_path(plan).unlink()
    with TensorRTRunner(plan) as runner:
        warnings = list(runner.warnings)
    assert warnings == [f"{plan}: TensorRT unknown version (8.5 or older) and no sidecar to say which; it may not load"]
