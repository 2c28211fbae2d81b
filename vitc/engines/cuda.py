"""Device memory, pinned host memory, streams, events and CUDA graphs for the TensorRT runner.

cuda-python is NVIDIA's current choice: `cuda.bindings.runtime` (cuda-bindings >= 12.6), falling
back to the older `cuda.cudart` layout (removed in cuda-bindings 13). pycuda is accepted where it
is already installed (older JetPack images); it has no CUDA-graph support here. No torch.

cuda-python calls return a tuple (error, *values); `_check` turns a non-success error into a
VitcError naming the call.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

from vitc._lazy import has_module
from vitc.engines.base import LazyModule
from vitc.errors import VitcError

cudart = LazyModule("cuda.bindings.runtime", "cuda.cudart")


def backend_name() -> str | None:
    """'cuda-python', 'pycuda' or None, by what is importable (nothing is imported)."""
    if has_module("cuda.bindings") or has_module("cuda.cudart"):
        return "cuda-python"
    if has_module("pycuda"):
        return "pycuda"
    return None


def _check(result: Any, call: str) -> Any:
    """Unpack a cuda-python result tuple; raise on a CUDA error."""
    if isinstance(result, tuple):
        err, rest = result[0], result[1:]
    else:
        err, rest = result, ()
    if int(err) != 0:
        name = getattr(err, "name", str(err))
        raise VitcError(f"CUDA error in {call}: {name}")
    if not rest:
        return None
    return rest[0] if len(rest) == 1 else rest


class Cuda:
    """The CUDA calls the runner needs, on cuda-python (default) or pycuda."""

    def __init__(self, prefer: str | None = None) -> None:
        kind = prefer or backend_name()
        if kind is None:
            raise VitcError("TensorRT inference needs cuda-python (pip install 'vitc[trt]') or pycuda")
        self.kind = kind
        self._pycuda: Any = None
        if kind == "pycuda":
            import importlib

            importlib.import_module("pycuda.autoinit")
            self._pycuda = importlib.import_module("pycuda.driver")

    # -- device facts ---------------------------------------------------------------------
    def device_properties(self, device: int = 0) -> dict[str, str]:
        """{"name", "compute_capability"} of a device."""
        if self._pycuda is not None:
            dev = self._pycuda.Device(device)
            major, minor = dev.compute_capability()
            return {"name": str(dev.name()), "compute_capability": f"{major}.{minor}"}
        props = _check(cudart.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
        raw = props.name
        name = raw.decode(errors="replace").rstrip("\x00") if isinstance(raw, bytes) else str(raw)
        return {"name": name, "compute_capability": f"{int(props.major)}.{int(props.minor)}"}

    # -- memory -----------------------------------------------------------------------------
    def malloc(self, nbytes: int) -> DeviceBuffer:
        return DeviceBuffer(self, max(int(nbytes), 1))

    def pinned(self, shape: tuple[int, ...], dtype: np.dtype[Any] | str) -> PinnedArray:
        return PinnedArray(self, shape, np.dtype(dtype))

    def stream(self) -> Stream:
        return Stream(self)

    def event(self) -> Event:
        return Event(self)


class DeviceBuffer:
    def __init__(self, cuda: Cuda, nbytes: int) -> None:
        self.cuda = cuda
        self.nbytes = nbytes
        self._alloc: Any = None
        if cuda._pycuda is not None:
            self._alloc = cuda._pycuda.mem_alloc(nbytes)
            self.ptr = int(self._alloc)
        else:
            self.ptr = int(_check(cudart.cudaMalloc(nbytes), "cudaMalloc"))

    def free(self) -> None:
        if self.ptr:
            if self._alloc is not None:
                self._alloc.free()
            else:
                _check(cudart.cudaFree(self.ptr), "cudaFree")
            self.ptr = 0


class PinnedArray:
    """A numpy array in page-locked host memory (fast, asynchronous copies)."""

    def __init__(self, cuda: Cuda, shape: tuple[int, ...], dtype: np.dtype[Any]) -> None:
        self.cuda = cuda
        nbytes = max(int(np.prod(shape)) * dtype.itemsize, 1)
        self.nbytes = nbytes
        if cuda._pycuda is not None:
            self.array: np.ndarray = cuda._pycuda.pagelocked_empty(shape, dtype)
            self.ptr = int(self.array.ctypes.data)
            self._owned = False
        else:
            self.ptr = int(_check(cudart.cudaMallocHost(nbytes), "cudaMallocHost"))
            raw = (ctypes.c_byte * nbytes).from_address(self.ptr)
            self.array = np.frombuffer(memoryview(raw).cast("B"), dtype=dtype, count=int(np.prod(shape))).reshape(shape)
            self._owned = True

    def free(self) -> None:
        if self._owned and self.ptr:
            _check(cudart.cudaFreeHost(self.ptr), "cudaFreeHost")
        self.ptr = 0


class Stream:
    def __init__(self, cuda: Cuda) -> None:
        self.cuda = cuda
        self._obj: Any = None
        if cuda._pycuda is not None:
            self._obj = cuda._pycuda.Stream()
            self.handle = int(self._obj.handle)
        else:
            self._obj = _check(cudart.cudaStreamCreate(), "cudaStreamCreate")
            self.handle = int(self._obj)

    def htod(self, dst: DeviceBuffer, src: PinnedArray, nbytes: int) -> None:
        if self.cuda._pycuda is not None:
            self.cuda._pycuda.memcpy_htod_async(dst.ptr, src.array, self._obj)
            return
        kind = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        _check(cudart.cudaMemcpyAsync(dst.ptr, src.ptr, nbytes, kind, self._obj), "cudaMemcpyAsync H2D")

    def dtoh(self, dst: PinnedArray, src: DeviceBuffer, nbytes: int) -> None:
        if self.cuda._pycuda is not None:
            self.cuda._pycuda.memcpy_dtoh_async(dst.array, src.ptr, self._obj)
            return
        kind = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        _check(cudart.cudaMemcpyAsync(dst.ptr, src.ptr, nbytes, kind, self._obj), "cudaMemcpyAsync D2H")

    def synchronize(self) -> None:
        if self.cuda._pycuda is not None:
            self._obj.synchronize()
        else:
            _check(cudart.cudaStreamSynchronize(self._obj), "cudaStreamSynchronize")

    def destroy(self) -> None:
        if self.cuda._pycuda is None and self._obj is not None:
            _check(cudart.cudaStreamDestroy(self._obj), "cudaStreamDestroy")
        self._obj = None


class Event:
    def __init__(self, cuda: Cuda) -> None:
        self.cuda = cuda
        if cuda._pycuda is not None:
            self._obj: Any = cuda._pycuda.Event()
        else:
            self._obj = _check(cudart.cudaEventCreate(), "cudaEventCreate")

    def record(self, stream: Stream) -> None:
        if self.cuda._pycuda is not None:
            self._obj.record(stream._obj)
        else:
            _check(cudart.cudaEventRecord(self._obj, stream._obj), "cudaEventRecord")

    def seconds_since(self, start: Event) -> float:
        """Elapsed GPU time from `start` to this event (both recorded, stream synchronised)."""
        if self.cuda._pycuda is not None:
            return float(self._obj.time_since(start._obj)) / 1e3
        ms = _check(cudart.cudaEventElapsedTime(start._obj, self._obj), "cudaEventElapsedTime")
        return float(ms) / 1e3

    def destroy(self) -> None:
        if self.cuda._pycuda is None and self._obj is not None:
            _check(cudart.cudaEventDestroy(self._obj), "cudaEventDestroy")
        self._obj = None


class CudaGraph:
    """Capture what runs on a stream once, then replay it with one launch (cuda-python only)."""

    def __init__(self, stream: Stream) -> None:
        if stream.cuda._pycuda is not None:
            raise VitcError("--cuda-graph needs cuda-python (pycuda is not supported for graphs)")
        self.stream = stream
        self._graph: Any = None
        self._exec: Any = None

    def begin(self) -> None:
        mode = cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        _check(cudart.cudaStreamBeginCapture(self.stream._obj, mode), "cudaStreamBeginCapture")

    def end(self) -> None:
        self._graph = _check(cudart.cudaStreamEndCapture(self.stream._obj), "cudaStreamEndCapture")
        self._exec = _check(cudart.cudaGraphInstantiate(self._graph, 0), "cudaGraphInstantiate")

    def launch(self) -> None:
        _check(cudart.cudaGraphLaunch(self._exec, self.stream._obj), "cudaGraphLaunch")

    def destroy(self) -> None:
        if self._exec is not None:
            _check(cudart.cudaGraphExecDestroy(self._exec), "cudaGraphExecDestroy")
        if self._graph is not None:
            _check(cudart.cudaGraphDestroy(self._graph), "cudaGraphDestroy")
        self._graph = self._exec = None
