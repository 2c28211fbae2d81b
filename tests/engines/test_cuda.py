"""The vitc CUDA layer on the strict fakes of cuda-python 11.8 / 12.6 / 12.9 / 13.0 and pycuda.

Which bindings are chosen for which driver, and that each one moves exactly the bytes asked for,
times with events, runs work only when synchronised and (cuda-python) replays captured graphs.
"""

from __future__ import annotations

import ctypes
import importlib
import warnings
from pathlib import Path

import numpy as np
import pytest

from tests.engines.fakes.cuda_fakes import FakeGpu, cudaError_t
from tests.engines.fakes.cuda_fakes import cuda_fake as cuda_fake  # the fixture
from vitc.engines.cuda import Cuda, CudaGraph, choose_bindings
from vitc.errors import VitcError

# (cuda-python release or None, pycuda installed, driver) → (kind, module)
SETUPS = {
    "cuda-python 11.8.2, CUDA 11.4 driver (JetPack 5)": (("11.8", False, 11040), ("cuda-python", "cuda.cudart")),
    "cuda-python 12.6.0 and pycuda, CUDA 11.4 driver (JetPack 5)": (("12.6", True, 11040), ("pycuda", "pycuda.driver")),
    "cuda-python 12.6.0, CUDA 12.6 driver (JetPack 6)": (("12.6", False, 12060), ("cuda-python", "cuda.cudart")),
    "cuda-bindings 12.9, CUDA 12.6 driver": (("12.9", False, 12060), ("cuda-python", "cuda.bindings.runtime")),
    "cuda-bindings 12.9, CUDA 13 driver": (("12.9", False, 13000), ("cuda-python", "cuda.bindings.runtime")),
    "cuda-bindings 13.0, CUDA 13 driver": (("13.0", False, 13000), ("cuda-python", "cuda.bindings.runtime")),
    "pycuda only": ((None, True, 12060), ("pycuda", "pycuda.driver")),
    "cuda-bindings 13.0 and pycuda, CUDA 12.6 driver": (("13.0", True, 12060), ("pycuda", "pycuda.driver")),
}


def _install(cuda_fake, setup: tuple[str | None, bool, int]) -> FakeGpu:
    cuda_python, pycuda, driver = setup
    return cuda_fake(cuda_python=cuda_python, pycuda=pycuda, driver=driver)


@pytest.mark.parametrize("name", list(SETUPS))
def test_choice_follows_the_driver(cuda_fake, name: str) -> None:
    setup, (kind, module) = SETUPS[name]
    _install(cuda_fake, setup)
    choice = choose_bindings()
    assert (choice.kind, choice.module) == (kind, module)
    assert choice.driver == setup[2]
    cuda = Cuda()
    assert cuda.kind == kind
    assert cuda.device_properties() == {"name": "Fake Orin", "compute_capability": "8.7"}


def test_old_selection_breaks_on_jetpack6_with_cuda_python_13(cuda_fake) -> None:
    """The former rule (cuda-python whenever it imports) picks bindings that fail on the first call."""
    from vitc._lazy import has_module

    cuda_fake(cuda_python="13.0", pycuda=True, driver=12060)
    old_kind = "cuda-python" if has_module("cuda.bindings") or has_module("cuda.cudart") else "pycuda"
    assert old_kind == "cuda-python"
    runtime = importlib.import_module("cuda.bindings.runtime")
    assert runtime.cudaMalloc(16)[0] == cudaError_t.cudaErrorInsufficientDriver
    choice = choose_bindings()
    assert choice.kind == "pycuda"
    assert "built for CUDA 13.0" in choice.rejected[0] and "CUDA 12.6" in choice.rejected[0]
    buffer = Cuda().malloc(16)  # works: the driver API through pycuda
    assert buffer.ptr


def test_no_usable_bindings_is_one_clear_error(cuda_fake) -> None:
    cuda_fake(cuda_python="13.0", pycuda=False, driver=12060)
    with pytest.raises(VitcError, match=r"trt-cu12.*CUDA 12 drivers"):
        Cuda()
    cuda_fake(cuda_python="12.6", pycuda=False, driver=11040)  # JetPack 5 with the CUDA 12 extra
    with pytest.raises(VitcError, match=r"built for CUDA 12.6 but the driver supports CUDA 11.4.*trt-cu11.*JetPack 5"):
        Cuda()
    cuda_fake(cuda_python=None, pycuda=False)
    with pytest.raises(VitcError, match=r"cuda-python: not installed \(pip install 'vitc\[trt-cu11\]'.*\); pycuda"):
        Cuda()
    with pytest.raises(VitcError, match="unknown CUDA bindings"):
        choose_bindings("cupy")
    cuda_fake(cuda_python="12.9", pycuda=True, driver=0)  # no driver: the version query says 0
    with pytest.raises(VitcError, match=r"cuda-python \(cuda.bindings.runtime\): no CUDA driver.*pycuda: no CUDA"):
        Cuda()


def test_cuda_python_11_without_a_driver_says_so(cuda_fake, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real cuda-python 11.8.2 on a machine with no NVIDIA driver raises from the version query
    (seen with the PyPI wheel): doctor said "version query failed (RuntimeError: ...)"."""
    cuda_fake(cuda_python="11.8", pycuda=False)

    def no_driver() -> None:
        raise RuntimeError("Failed to dlopen libcuda.so.1")

    monkeypatch.setattr(importlib.import_module("cuda.cudart"), "cudaDriverGetVersion", no_driver)
    choice = choose_bindings()
    assert choice.kind is None
    assert "cuda-python (cuda.cudart): no NVIDIA driver here (Failed to dlopen libcuda.so.1)" in choice.reason


def test_prefer_pycuda(cuda_fake) -> None:
    cuda_fake(cuda_python="12.9", pycuda=True, driver=12060)
    assert choose_bindings().kind == "cuda-python"
    assert Cuda(prefer="pycuda").kind == "pycuda"


def test_modules_per_release_are_strict(cuda_fake) -> None:
    cuda_fake(cuda_python="13.0")
    with pytest.raises(ImportError):
        importlib.import_module("cuda.cudart")  # removed in cuda-bindings 13
    runtime = importlib.import_module("cuda.bindings.runtime")
    with pytest.raises(AttributeError, match="no attribute 'cudaEventElapsedTime_v2'"):
        runtime.cudaEventElapsedTime_v2  # noqa: B018 - in 12.9, not in 13.0
    with pytest.raises(AttributeError, match="model it in the fake"):
        runtime.cudaMemset  # noqa: B018 - real, but not modelled
    cuda_fake(cuda_python="12.6")
    with pytest.raises(ImportError):
        importlib.import_module("cuda.bindings.runtime")  # cuda-python 12.6.0 predates cuda.bindings
    assert importlib.import_module("cuda.cudart").cudaMalloc(8)[0] == 0


@pytest.mark.parametrize("name", list(SETUPS))
def test_round_trip_copies_exactly_nbytes(cuda_fake, name: str) -> None:
    """Buffers sized for 8 images, a batch of 3: both copies move 3 images' bytes, nothing more."""
    gpu = _install(cuda_fake, SETUPS[name][0])
    cuda = Cuda()
    capacity, used = 8 * 12, 3 * 12
    host_in, host_out = cuda.pinned((capacity,), np.float32), cuda.pinned((capacity,), np.float32)
    d_in, d_out = cuda.malloc(capacity * 4), cuda.malloc(capacity * 4)
    stream, start, end = cuda.stream(), cuda.event(), cuda.event()
    host_in.array[:] = -1.0
    host_in.array[:used] = np.arange(used, dtype=np.float32)
    host_out.array[:] = 7.0

    def kernel() -> None:  # out = 2 * in, over the used part
        src = np.frombuffer(gpu.view(d_in.ptr, used * 4), np.float32)
        np.frombuffer(gpu.view(d_out.ptr, used * 4), np.float32)[:] = 2 * src

    stream.htod(d_in, host_in, used * 4)
    start.record(stream)
    gpu.launch_kernel(stream.handle, kernel)
    end.record(stream)
    stream.dtoh(host_out, d_out, used * 4)
    assert gpu.copies == [] and (host_out.array == 7.0).all()  # nothing runs before synchronize
    stream.synchronize()
    assert gpu.copies == [("H2D", used * 4), ("D2H", used * 4)]
    np.testing.assert_array_equal(host_out.array[:used], 2 * np.arange(used, dtype=np.float32))
    assert (host_out.array[used:] == 7.0).all()  # the rest of the pinned buffer is untouched
    assert end.seconds_since(start) == pytest.approx(gpu.kernel_ms / 1e3)
    with pytest.raises(VitcError, match="into a 384-byte device buffer"):
        stream.htod(d_in, host_in, capacity * 4 + 4)
    for obj in (d_in, d_out, host_in, host_out, start, end, stream):
        obj.free() if hasattr(obj, "free") else obj.destroy()
    assert gpu.device == {}


@pytest.mark.parametrize(("release", "driver"), [("11.8", 11040), ("12.6", 13000), ("12.9", 13000), ("13.0", 13000)])
def test_graph_capture_replays_the_stream(cuda_fake, release: str, driver: int) -> None:
    """11.8 (JetPack 5): its cudaGraphInstantiate takes (graph, pLogBuffer, bufferSize), not (graph, flags)."""
    gpu = cuda_fake(cuda_python=release, driver=driver)
    cuda = Cuda()
    stream = cuda.stream()
    runs: list[int] = []
    graph = CudaGraph(stream)
    graph.begin()
    gpu.launch_kernel(stream.handle, lambda: runs.append(1))
    assert graph.end()
    assert runs == []  # captured, not run
    graph.launch()
    graph.launch()
    stream.synchronize()
    assert runs == [1, 1]
    graph.destroy()
    stream.destroy()
    assert gpu.graphs == {}


@pytest.mark.parametrize(("release", "driver"), [("11.8", 11040), ("12.6", 12060), ("12.9", 12060), ("13.0", 13000)])
def test_the_stream_trt_is_given_is_the_handle_and_nothing_warns(cuda_fake, release: str, driver: int) -> None:
    """`Stream.handle`, what execute_async_v3 gets, is int(cudaStream_t): the stream itself in every release,
    with no DeprecationWarning (none in cuda-python 11.8.3, 12.2.0 or cuda-bindings 12.9.0, 13.0.0, 13.1.0,
    13.5.0 under -W error). getPtr() is the address of the wrapper's copy of the handle: given to TensorRT it
    is a wrong stream, which the fake's getPtr (the handle itself, before) let pass."""
    gpu = cuda_fake(cuda_python=release, driver=driver)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one per inference call would flood a serving loop
        stream = Cuda().stream()
        graph = CudaGraph(stream)
        graph.begin()
        gpu.launch_kernel(stream.handle, lambda: None)
        assert graph.end()
        graph.launch()
        stream.synchronize()
        assert stream.handle in gpu.streams and stream.handle == int(stream._obj)
        assert stream._obj.getPtr() != stream.handle
        assert ctypes.c_void_p.from_address(stream._obj.getPtr()).value == stream.handle
        graph.destroy()
        stream.destroy()


@pytest.mark.parametrize(("release", "driver"), [("11.8", 11040), ("12.6", 13000), ("12.9", 13000), ("13.0", 13000)])
def test_an_invalidated_capture_ends_without_a_graph(cuda_fake, release: str, driver: int) -> None:
    """An illegal call during capture (a synchronize) invalidates it: cudaStreamEndCapture then gives
    cudaErrorStreamCaptureInvalidated and a NULL graph (a NULL cudaGraph_t before 12.9, None from it).
    end() says so instead of raising, clears the error it left, and the stream runs plainly again."""
    gpu = cuda_fake(cuda_python=release, driver=driver)
    stream = Cuda().stream()
    runs: list[int] = []
    graph = CudaGraph(stream)
    graph.begin()
    gpu.launch_kernel(stream.handle, lambda: runs.append(1))
    with pytest.raises(VitcError, match="cudaErrorStreamCaptureUnsupported"):
        stream.synchronize()  # not permitted during capture
    assert not graph.end()
    assert gpu.graphs == {} and gpu.last_error == cudaError_t.cudaSuccess  # no graph left over, no error left pending
    gpu.launch_kernel(stream.handle, lambda: runs.append(2))
    stream.synchronize()
    assert runs == [2]  # the captured work never runs; the stream is out of capture mode
    graph.destroy()
    stream.destroy()


@pytest.mark.parametrize(("release", "driver"), [("11.8", 11040), ("13.0", 13000)])
def test_a_graph_that_cannot_be_instantiated_is_destroyed(cuda_fake, release: str, driver: int) -> None:
    """cudaGraphInstantiateWithFlags failing (out of memory, here) raised a VitcError and left the captured
    graph allocated; end() now destroys it, clears the error and says why, as for a failed capture."""
    gpu = cuda_fake(cuda_python=release, driver=driver)
    gpu.instantiate_error = cudaError_t.cudaErrorMemoryAllocation
    stream = Cuda().stream()
    graph = CudaGraph(stream)
    graph.begin()
    gpu.launch_kernel(stream.handle, lambda: None)
    assert not graph.end()
    assert graph.instantiate_error == "cudaGraphInstantiateWithFlags: cudaErrorMemoryAllocation"
    assert gpu.graphs == {} and gpu.last_error == cudaError_t.cudaSuccess
    graph.destroy()  # nothing left to destroy: no error
    stream.destroy()


def test_a_capture_whose_enqueue_failed_is_destroyed(cuda_fake) -> None:
    """trtexec's endCaptureOnError, case (2): the graph of a failed enqueue is ended and destroyed, unused."""
    gpu = cuda_fake(cuda_python="12.9", driver=12060)
    stream = Cuda().stream()
    graph = CudaGraph(stream)
    graph.begin()
    assert not graph.end(enqueued=False)
    assert gpu.graphs == {}
    stream.destroy()


def test_pycuda_has_no_graphs(cuda_fake) -> None:
    cuda_fake(cuda_python=None, pycuda=True)
    with pytest.raises(VitcError, match="--cuda-graph needs cuda-python"):
        CudaGraph(Cuda().stream())


@pytest.mark.parametrize("pycuda", [False, True])
def test_freed_pinned_memory_leaves_no_view_of_it(cuda_fake, pycuda: bool) -> None:
    """PinnedArray.free left `array` a view of the freed page-locked memory (cudaFreeHost), which a later write
    would corrupt; it is now an empty array."""
    cuda_fake(cuda_python=None if pycuda else "12.9", pycuda=pycuda)
    pinned = Cuda().pinned((4,), np.float32)
    pinned.array[:] = 1.0
    pinned.free()
    assert pinned.array.shape == (0,) and pinned.array.dtype == np.float32 and pinned.ptr == 0
    pinned.free()  # once only


def test_pycuda_works_in_the_devices_primary_context(cuda_fake) -> None:
    """pycuda.autoinit made a context of its own (pycuda/tools.py make_context), apart from the primary context
    TensorRT and PyTorch use through the runtime; vitc pushes the primary context and pops it, retained once for
    the process as pycuda.autoprimaryctx does: pycuda's detach of it pushes it and pops nothing."""
    gpu = cuda_fake(cuda_python=None, pycuda=True)
    cuda = Cuda()
    assert [context.ordinal for context in gpu.contexts] == [0] and gpu.retained == {0: 1}
    cuda.close()
    assert gpu.contexts == [] and gpu.retained == {0: 1}
    cuda.close()  # once only
    again = Cuda()  # the context retained before
    assert len(gpu.contexts) == 1 and gpu.retained == {0: 1}
    again.close()
    assert gpu.contexts == [] and gpu.retained == {0: 1}


def test_pycuda_uses_the_device_cuda_device_names(cuda_fake, monkeypatch: pytest.MonkeyPatch) -> None:
    """The device pycuda.autoinit chose by CUDA_DEVICE is the one whose name and compute capability are checked
    against the plan's (device_properties() asked for device 0 whatever the context's device was)."""
    gpu = cuda_fake(cuda_python=None, pycuda=True)
    gpu.device_count = 2
    monkeypatch.setenv("CUDA_DEVICE", "1")
    cuda = Cuda()
    assert cuda.device_properties()["name"] == "Fake Orin #1"
    assert [context.ordinal for context in gpu.contexts] == [1]
    cuda.close()
    monkeypatch.setenv("CUDA_DEVICE", "gpu1")
    with pytest.raises(VitcError, match=r"CUDA_DEVICE='gpu1' is not a device number"):
        Cuda()


def test_doctor_says_which_bindings_and_why(cuda_fake) -> None:
    from vitc.cli.doctor import binding_facts

    cuda_fake(cuda_python="13.0", pycuda=True, driver=12060)
    facts = binding_facts()
    assert facts["kind"] == "pycuda" and facts["driver_cuda"] == "12.6"
    assert "cudaErrorInsufficientDriver" in facts["rejected"][0]
    cuda_fake(cuda_python="12.9", driver=12060)
    facts = binding_facts()
    assert facts["kind"] == "cuda-python" and facts["module"] == "cuda.bindings.runtime"
    assert "same or newer major" in facts["reason"]  # 12.6 driver, 12.9 bindings: minor-version compatible
    assert facts["bindings_cuda"] == "12.9"


@pytest.mark.parametrize(
    ("cfg", "expected"),
    [("include-system-site-packages = false", True), ("include-system-site-packages = true", False), (None, False)],
)
def test_a_venv_without_system_site_packages_is_told_apart(monkeypatch, tmp_path, cfg, expected) -> None:
    """The venv that hides JetPack's TensorRT (python3-libnvinfer is in the system Python's dist-packages)."""
    from vitc.engines.platform import venv_without_system_site_packages

    (tmp_path / "pyvenv.cfg").write_text(f"home = /usr/bin\n{cfg}\n" if cfg else "")
    monkeypatch.setattr("sys.prefix", str(tmp_path) if cfg else "/usr")
    monkeypatch.setattr("sys.base_prefix", "/usr")
    assert venv_without_system_site_packages() is expected


def test_cuda_bindings_that_fail_to_import_are_said_broken_not_missing(tmp_path: Path) -> None:
    """cuda-python whose libcudart does not load was "cuda-python: not installed (pip install ...)", the wrong
    remedy for a package that is there; `vitc doctor`, build and bench now say why it fails, as for torch."""
    import os
    import subprocess
    import sys

    runtime = tmp_path / "cuda" / "bindings"
    runtime.mkdir(parents=True)
    (tmp_path / "cuda" / "__init__.py").write_text("")
    (runtime / "__init__.py").write_text("")
    (runtime / "runtime.py").write_text('raise ImportError("libcudart.so.12: cannot open shared object file")\n')
    (tmp_path / "pycuda").mkdir()
    (tmp_path / "pycuda" / "__init__.py").write_text("")
    (tmp_path / "pycuda" / "driver.py").write_text('raise OSError("libcuda.so.1: cannot open shared object file")\n')
    script = "from vitc.engines.cuda import choose_bindings; print(choose_bindings().reason)"
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), root])}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert done.stdout.strip() == (
        "cuda-python: cuda-python is installed but cannot be imported: libcudart.so.12: cannot open shared object "
        "file; pycuda: pycuda is installed but cannot be imported: libcuda.so.1: cannot open shared object file"
    ), done.stdout + done.stderr
