"""Strict fakes of the CUDA bindings vitc can run on: cuda-python 11.8 / 12.6 / 12.9 / 13.0 and pycuda.

How to use them (part of the engine tests' harness; the fake `tensorrt` modules run on top):

    from tests.engines.fakes.cuda_fakes import cuda_fake as cuda_fake  # the pytest fixture

    def test_x(cuda_fake):
        gpu = cuda_fake(cuda_python="13.0", driver=12060, pycuda=True)  # JetPack 6 with cuda-python 13

`install_cuda(monkeypatch, ...)` does the same without the fixture. Both put fake modules in
`sys.modules` under the real names (`cuda.bindings.runtime`, `cuda.cudart`, `pycuda.driver`,
`pycuda.autoinit`) and mark the others absent, so `import` behaves as on a machine with exactly
those packages; monkeypatch restores everything after the test. The returned `FakeGpu` (also
`active_gpu()`) is the device: a fake TensorRT enqueues its work with `gpu.enqueue(stream_handle,
fn)` and reads/writes device memory with `gpu.view(ptr, nbytes)`.

What is modelled, from the real sources:
- module layout per release (tests/engines/fakes/cuda_api.json, extracted from the wheels):
  11.8.2 (the last with Python 3.8 wheels: JetPack 5) and 12.6.0 have only `cuda.cudart`; 12.9 has
  `cuda.bindings.runtime` and the deprecated `cuda.cudart`; 13.0 only `cuda.bindings.runtime`. A name
  the real module lacks raises AttributeError; a real name the fake does not model raises
  AttributeError saying so.
- 11.x's `cudaGraphInstantiate(graph, pLogBuffer, bufferSize)` returns (err, graphExec, errorNode)
  (cuda/cudart.pyx of 11.8.2); 12.x and 13.x take `(graph, flags)`; all have
  `cudaGraphInstantiateWithFlags(graph, flags)`.
- every call returns `(cudaError_t, *values)` (1-tuples for calls without a value); the runtime is
  linked into the wheel, so with a driver older than the bindings' CUDA major every call except
  the version queries returns cudaErrorInsufficientDriver.
- device pointers are not host addresses (dereferencing one on the host fails); copies move exactly
  `count` bytes and are checked against the allocations; streams run their work only when
  synchronised; capture records work into a graph instead of running it.
- invalidation (CUDA Programming Guide, "Invalidation"; cudaStreamEndCapture's docstring): an
  illegal call during capture (here: synchronising the capturing stream) fails and invalidates the
  capture; later work on that stream fails with cudaErrorStreamCaptureInvalidated, and
  cudaStreamEndCapture leaves capture mode returning that error and a NULL graph: a NULL
  `cudaGraph_t` in 11.8.2 and 12.6.0 (`return (cudaError_t(err), pGraph)`), None in 12.9 and 13.0
  (`if err != cudaSuccess: return (..., None)`).
- `gpu.instantiate_error = cudaError_t.X` makes cudaGraphInstantiate* fail with X (the graph stays,
  to be destroyed by the caller), as CUDA does out of memory or for a node it cannot instantiate.
- the last error: every failed call records its error, which `cudaGetLastError()` returns as
  `(err,)` and resets (all four releases). The fake TensorRT checks it after its launches, as
  TensorRT does, so an error left pending fails the next enqueue (why trtexec clears it).
- pycuda (src/wrapper/wrap_cudadrv.cpp): `memcpy_htod_async(dest, src, stream)` copies the whole
  buffer `src`, `memcpy_dtoh_async(dest, src, stream)` fills the whole buffer `dest`.
"""

from __future__ import annotations

import ctypes
import enum
import importlib.machinery
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

API = json.loads((Path(__file__).parent / "cuda_api.json").read_text())
VERSION_CODES = {"11.8": 11080, "12.6": 12060, "12.9": 12090, "13.0": 13000}
_DEVICE_BASE = 0x7E00_0000_0000  # fake device addresses: never valid host memory
_ACTIVE: FakeGpu | None = None


class cudaError_t(enum.IntEnum):  # the real class names
    cudaSuccess = 0
    cudaErrorInvalidValue = 1
    cudaErrorMemoryAllocation = 2
    cudaErrorInsufficientDriver = 35
    cudaErrorNoDevice = 100
    cudaErrorInvalidResourceHandle = 400
    cudaErrorIllegalState = 401
    cudaErrorNotReady = 600
    cudaErrorIllegalAddress = 700
    cudaErrorStreamCaptureUnsupported = 900
    cudaErrorStreamCaptureInvalidated = 901


class cudaMemcpyKind(enum.IntEnum):
    cudaMemcpyHostToHost = 0
    cudaMemcpyHostToDevice = 1
    cudaMemcpyDeviceToHost = 2
    cudaMemcpyDeviceToDevice = 3
    cudaMemcpyDefault = 4


class cudaStreamCaptureMode(enum.IntEnum):
    cudaStreamCaptureModeGlobal = 0
    cudaStreamCaptureModeThreadLocal = 1
    cudaStreamCaptureModeRelaxed = 2


class FakeCudaError(Exception):
    def __init__(self, err: cudaError_t, values: tuple[Any, ...] | None = None) -> None:
        """`values`: what the binding returns after the error (default: None for each value)."""
        super().__init__(err.name)
        self.err, self.values = err, values


class Handle:
    """cudaStream_t / cudaEvent_t / cudaGraph_t / cudaGraphExec_t, as the real ones: int() is the handle (the
    CUDA object's address), without a warning in any release vitc takes (cuda-python 11.8.3 and 12.2.0
    cuda/cuda.pyx `CUstream.__int__`: `return <void_ptr>self._ptr[0]`; cuda-bindings 12.9.0 to 13.5.0 the
    same), and getPtr() is not the handle but the address of the wrapper's own copy of it (`return
    <void_ptr>self._ptr`, `self._pvt_ptr` in cuda-bindings): a stream given as getPtr() is a wrong stream."""

    def __init__(self, value: int, kind: str) -> None:
        self.value, self.kind = value, kind
        self._storage = ctypes.c_void_p(value)  # the copy getPtr() points at, as cuda-python's _pvt_val

    def __int__(self) -> int:
        return self.value

    def getPtr(self) -> int:
        return ctypes.addressof(self._storage)


class _Stream:
    def __init__(self, handle: int) -> None:
        self.handle = handle
        self.pending: list[Callable[[], None]] = []
        self.capture: list[Callable[[], None]] | None = None
        self.invalidated = False  # an illegal call was made during the capture


class FakeGpu:
    """One device: allocations, pinned host regions, streams, events and a clock (milliseconds)."""

    def __init__(self, driver: int, name: str = "Fake Orin", cc: tuple[int, int] = (8, 7)) -> None:
        self.driver, self.name, self.cc = driver, name, cc
        self.device: dict[int, bytearray] = {}
        self.host: dict[int, Any] = {}  # address -> the object keeping the memory alive
        self.host_size: dict[int, int] = {}
        self.streams: dict[int, _Stream] = {0: _Stream(0)}  # 0: the legacy default stream
        self.events: dict[int, float | None] = {}
        self.graphs: dict[int, list[Callable[[], None]]] = {}
        self.copies: list[tuple[str, int]] = []  # ("H2D"/"D2H", nbytes), in execution order
        self.last_error = cudaError_t.cudaSuccess  # what cudaGetLastError returns and resets
        self.kernel_ms = 1.0
        self.clock = 0.0
        self.instantiate_error: cudaError_t | None = None  # what cudaGraphInstantiate* then fails with
        self.device_count = 1  # devices pycuda's Device(ordinal) accepts
        self.contexts: list[Any] = []  # pycuda: the context stack (the runtime's primary context is implicit)
        self.retained: dict[int, int] = {}  # pycuda: retains of each device's primary context
        self._next = _DEVICE_BASE
        self._handles = 1

    # -- memory -------------------------------------------------------------------------------
    def alloc(self, nbytes: int) -> int:
        ptr = self._next
        self.device[ptr] = bytearray(nbytes)
        self._next += (nbytes + 0xFFFF) // 0x10000 * 0x10000 + 0x10000
        return ptr

    def alloc_host(self, nbytes: int) -> int:
        buf = (ctypes.c_byte * nbytes)()
        addr = ctypes.addressof(buf)
        self.host[addr], self.host_size[addr] = buf, nbytes
        return addr

    def register_host(self, array: np.ndarray) -> None:
        addr = int(array.ctypes.data)
        self.host[addr], self.host_size[addr] = array, array.nbytes

    def view(self, ptr: int, nbytes: int) -> memoryview:
        """Writable device memory [ptr, ptr+nbytes); IllegalAddress outside one allocation."""
        for base, buf in self.device.items():
            if base <= ptr and ptr + nbytes <= base + len(buf):
                return memoryview(buf)[ptr - base : ptr - base + nbytes]
        raise FakeCudaError(cudaError_t.cudaErrorIllegalAddress)

    def host_view(self, addr: int, nbytes: int) -> memoryview:
        """Pinned host memory [addr, addr+nbytes); the fakes refuse pageable memory for async copies."""
        for base, size in self.host_size.items():
            if base <= addr and addr + nbytes <= base + size:
                return memoryview((ctypes.c_byte * nbytes).from_address(addr)).cast("B")
        raise FakeCudaError(cudaError_t.cudaErrorInvalidValue)

    # -- streams --------------------------------------------------------------------------------
    def new_handle(self) -> int:
        self._handles += 1
        return 0x5000 + self._handles

    def stream(self, handle: Any) -> _Stream:
        key = 0 if handle is None else int(handle)
        if key not in self.streams:
            raise FakeCudaError(cudaError_t.cudaErrorInvalidResourceHandle)
        return self.streams[key]

    def enqueue(self, handle: Any, fn: Callable[[], None], ms: float = 0.0) -> None:
        """Queue work on a stream (or into the graph it is capturing); it runs at synchronize."""

        def timed() -> None:
            fn()
            self.clock += ms

        stream = self.stream(handle)
        if stream.invalidated:
            raise FakeCudaError(cudaError_t.cudaErrorStreamCaptureInvalidated)
        (stream.capture if stream.capture is not None else stream.pending).append(timed)

    def launch_kernel(self, handle: Any, fn: Callable[[], None]) -> None:
        self.enqueue(handle, fn, self.kernel_ms)

    def copy(self, handle: Any, direction: str, dst: memoryview, src: memoryview) -> None:
        assert len(dst) == len(src)

        def run() -> None:
            dst[:] = src
            self.copies.append((direction, len(src)))

        self.enqueue(handle, run, len(src) * 1e-6)

    def synchronize(self, handle: Any) -> None:
        stream = self.stream(handle)
        if stream.capture is not None:  # not permitted during capture: it invalidates the capture
            stream.invalidated = True
            raise FakeCudaError(cudaError_t.cudaErrorStreamCaptureUnsupported)
        work, stream.pending = stream.pending, []
        for fn in work:
            fn()


def _spec(module: ModuleType, package: bool = False) -> ModuleType:
    """A spec as an imported module has one (importlib.util.find_spec reads it)."""
    module.__spec__ = importlib.machinery.ModuleSpec(module.__name__, None, is_package=package)
    if package:
        module.__path__ = []
    return module


def active_gpu() -> FakeGpu:
    """The device of the fakes installed by the current test."""
    assert _ACTIVE is not None, "install_cuda() first"
    return _ACTIVE


# -- cuda-python ---------------------------------------------------------------------------------
class _StrictModule(ModuleType):
    def __init__(self, name: str, release: str) -> None:
        super().__init__(name)
        self._release = release

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        if attr in API[self._release]["names"]:
            raise AttributeError(f"{self.__name__}.{attr} exists in cuda-python {self._release}: model it in the fake")
        raise AttributeError(f"module {self.__name__!r} has no attribute {attr!r} (cuda-python {self._release})")


def _runtime_functions(gpu: FakeGpu, built_for: int) -> dict[str, Callable[..., tuple[Any, ...]]]:
    ok = cudaError_t.cudaSuccess
    usable = gpu.driver // 1000 >= built_for // 1000

    def call(fn: Callable[..., Any], nvalues: int = 1) -> Callable[..., tuple[Any, ...]]:
        def wrapper(*args: Any) -> tuple[Any, ...]:
            if not usable:
                gpu.last_error = cudaError_t.cudaErrorInsufficientDriver
                return (gpu.last_error, *([None] * nvalues))
            try:
                value = fn(*args)
            except FakeCudaError as exc:
                gpu.last_error = exc.err
                return (exc.err, *(exc.values if exc.values is not None else [None] * nvalues))
            return (ok,) if nvalues == 0 else (ok, value)

        return wrapper

    def props(device: int) -> Any:
        if device != 0:
            raise FakeCudaError(cudaError_t.cudaErrorInvalidValue)
        prop = type("cudaDeviceProp", (), {})()
        prop.name, (prop.major, prop.minor) = gpu.name.encode().ljust(256, b"\0"), gpu.cc
        return prop

    def free(ptr: int) -> None:
        if int(ptr) not in gpu.device:
            raise FakeCudaError(cudaError_t.cudaErrorInvalidValue)
        del gpu.device[int(ptr)]

    def free_host(ptr: int) -> None:
        if int(ptr) not in gpu.host:
            raise FakeCudaError(cudaError_t.cudaErrorInvalidValue)
        del gpu.host[int(ptr)], gpu.host_size[int(ptr)]

    def memcpy_async(dst: int, src: int, count: int, kind: Any, stream: Any) -> None:
        if not isinstance(kind, cudaMemcpyKind):
            raise TypeError("kind must be a cudaMemcpyKind")
        if kind == cudaMemcpyKind.cudaMemcpyHostToDevice:
            gpu.copy(stream, "H2D", gpu.view(int(dst), count), gpu.host_view(int(src), count))
        elif kind == cudaMemcpyKind.cudaMemcpyDeviceToHost:
            gpu.copy(stream, "D2H", gpu.host_view(int(dst), count), gpu.view(int(src), count))
        else:
            raise FakeCudaError(cudaError_t.cudaErrorInvalidValue)

    def stream_create() -> Handle:
        handle = gpu.new_handle()
        gpu.streams[handle] = _Stream(handle)
        return Handle(handle, "cudaStream_t")

    def stream_destroy(stream: Any) -> None:
        gpu.stream(stream)
        del gpu.streams[int(stream)]

    def event_create() -> Handle:
        handle = gpu.new_handle()
        gpu.events[handle] = None
        return Handle(handle, "cudaEvent_t")

    def event_record(event: Any, stream: Any) -> None:
        if int(event) not in gpu.events:
            raise FakeCudaError(cudaError_t.cudaErrorInvalidResourceHandle)
        gpu.events[int(event)] = None

        def stamp() -> None:
            gpu.events[int(event)] = gpu.clock

        gpu.enqueue(stream, stamp)

    def elapsed(start: Any, end: Any) -> float:
        t0, t1 = gpu.events.get(int(start)), gpu.events.get(int(end))
        if t0 is None or t1 is None:
            raise FakeCudaError(cudaError_t.cudaErrorNotReady)
        return float(t1 - t0)

    def event_destroy(event: Any) -> None:
        if gpu.events.pop(int(event), "missing") == "missing":
            raise FakeCudaError(cudaError_t.cudaErrorInvalidResourceHandle)

    def begin_capture(stream: Any, mode: Any) -> None:
        if not isinstance(mode, cudaStreamCaptureMode):
            raise TypeError("mode must be a cudaStreamCaptureMode")
        target = gpu.stream(stream)
        if target.handle == 0 or target.capture is not None:
            raise FakeCudaError(cudaError_t.cudaErrorStreamCaptureUnsupported)
        target.capture = []

    def end_capture(stream: Any) -> Handle:
        target = gpu.stream(stream)
        if target.capture is None:
            raise FakeCudaError(cudaError_t.cudaErrorIllegalState)
        if target.invalidated:  # out of capture mode, with the error and a NULL graph
            target.capture, target.invalidated = None, False
            null = None if built_for >= VERSION_CODES["12.9"] else Handle(0, "cudaGraph_t")
            raise FakeCudaError(cudaError_t.cudaErrorStreamCaptureInvalidated, (null,))
        handle = gpu.new_handle()
        gpu.graphs[handle], target.capture = target.capture, None
        return Handle(handle, "cudaGraph_t")

    def get_last_error() -> tuple[Any]:
        err, gpu.last_error = gpu.last_error, ok
        return (err,)

    def instantiate(graph: Any, flags: int) -> Handle:
        if int(graph) not in gpu.graphs:
            raise FakeCudaError(cudaError_t.cudaErrorInvalidResourceHandle)
        if gpu.instantiate_error is not None:  # e.g. out of memory: no graphExec, the graph left as it was
            raise FakeCudaError(gpu.instantiate_error)
        handle = gpu.new_handle()
        gpu.graphs[handle] = list(gpu.graphs[int(graph)])
        return Handle(handle, "cudaGraphExec_t")

    def graph_launch(graph_exec: Any, stream: Any) -> None:
        if int(graph_exec) not in gpu.graphs:
            raise FakeCudaError(cudaError_t.cudaErrorInvalidResourceHandle)
        for fn in gpu.graphs[int(graph_exec)]:
            gpu.enqueue(stream, fn)

    def graph_destroy(graph: Any) -> None:
        if gpu.graphs.pop(int(graph), None) is None:
            raise FakeCudaError(cudaError_t.cudaErrorInvalidResourceHandle)

    def versions(value: int) -> Callable[[], tuple[Any, int]]:
        return lambda: (ok, value)

    return {
        "cudaDriverGetVersion": versions(gpu.driver),  # works with any driver, as the real one
        "cudaRuntimeGetVersion": versions(built_for),
        "cudaGetDeviceCount": call(lambda: 1),
        "cudaGetDevice": call(lambda: 0),
        "cudaGetDeviceProperties": call(props),
        "cudaMalloc": call(gpu.alloc),
        "cudaFree": call(free, 0),
        "cudaMallocHost": call(gpu.alloc_host),
        "cudaFreeHost": call(free_host, 0),
        "cudaMemcpyAsync": call(memcpy_async, 0),
        "cudaStreamCreate": call(stream_create),
        "cudaStreamSynchronize": call(gpu.synchronize, 0),
        "cudaStreamDestroy": call(stream_destroy, 0),
        "cudaEventCreate": call(event_create),
        "cudaEventRecord": call(event_record, 0),
        "cudaEventElapsedTime": call(elapsed),
        "cudaEventDestroy": call(event_destroy, 0),
        "cudaStreamBeginCapture": call(begin_capture, 0),
        "cudaStreamEndCapture": call(end_capture),
        "cudaGetLastError": get_last_error,  # works with any driver: it reads the runtime's own state
        "cudaGraphInstantiate": call(instantiate),
        "cudaGraphInstantiateWithFlags": call(instantiate),
        "cudaGraphLaunch": call(graph_launch, 0),
        "cudaGraphExecDestroy": call(graph_destroy, 0),
        "cudaGraphDestroy": call(graph_destroy, 0),
    }


def make_runtime(gpu: FakeGpu, release: str, name: str) -> ModuleType:
    """The fake `cuda.bindings.runtime` / `cuda.cudart` of one cuda-python release."""
    module = _spec(_StrictModule(name, release))
    members = {
        **_runtime_functions(gpu, VERSION_CODES[release]),
        "cudaError_t": cudaError_t,
        "cudaMemcpyKind": cudaMemcpyKind,
        "cudaStreamCaptureMode": cudaStreamCaptureMode,
    }
    if VERSION_CODES[release] < 12000:
        with_flags = members["cudaGraphInstantiateWithFlags"]

        def instantiate_11(graph: Any, log_buffer: bytes, buffer_size: int) -> tuple[Any, ...]:
            return (*with_flags(graph, 0), None)  # (err, graphExec, errorNode)

        members["cudaGraphInstantiate"] = instantiate_11
    for key, value in members.items():
        if key in API[release]["names"]:
            setattr(module, key, value)
    return module


# -- installing ------------------------------------------------------------------------------------
NAMES = ("cuda", "cuda.cudart", "cuda.bindings", "cuda.bindings.runtime", "pycuda", "pycuda.driver", "pycuda.autoinit")


def install_cuda(
    monkeypatch: pytest.MonkeyPatch,
    cuda_python: str | None = "12.9",
    pycuda: bool = False,
    driver: int = 12060,
    name: str = "Fake Orin",
    cc: tuple[int, int] = (8, 7),
) -> FakeGpu:
    """Make exactly these bindings importable (cuda_python: '11.8', '12.6', '12.9', '13.0' or None)."""
    gpu = FakeGpu(driver, name, cc)
    modules: dict[str, ModuleType | None] = dict.fromkeys(NAMES)
    if cuda_python is not None:
        package = _spec(ModuleType("cuda"), package=True)
        modules["cuda"] = package
        for module_name in API[cuda_python]["modules"]:
            module = make_runtime(gpu, cuda_python, module_name)
            modules[module_name] = module
            if module_name == "cuda.bindings.runtime":
                bindings = _spec(ModuleType("cuda.bindings"), package=True)
                bindings.__version__ = cuda_python  # type: ignore[attr-defined]
                bindings.runtime = module  # type: ignore[attr-defined]
                modules["cuda.bindings"] = bindings
                package.bindings = bindings  # type: ignore[attr-defined]
            else:
                package.cudart = module  # type: ignore[attr-defined]
    if pycuda:
        from tests.engines.fakes.pycuda_fake import make_pycuda

        modules.update(make_pycuda(gpu))
    for key, value in modules.items():
        monkeypatch.setitem(sys.modules, key, value)
    monkeypatch.setattr(sys.modules[__name__], "_ACTIVE", gpu)
    return gpu


@pytest.fixture
def cuda_fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., FakeGpu]]:
    """A factory: `cuda_fake(cuda_python="13.0", driver=12060, pycuda=True)` → FakeGpu."""
    yield lambda **kwargs: install_cuda(monkeypatch, **kwargs)
