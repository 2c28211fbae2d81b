"""Device memory, pinned host memory, streams, events and CUDA graphs for the TensorRT runner.

Which Python bindings, chosen by the driver (`choose_bindings`, shown by `vitc doctor`):
- cuda-python: `cuda.bindings.runtime` (cuda-bindings 12.9+ and 13.x) or the older `cuda.cudart`
  (cuda-python 11.x and ≤ 12.6.0, a deprecated alias in 12.9, gone in 13). On JetPack 5 (CUDA 11.4,
  Python 3.8) that is cuda-python 11.8.2, the last release with Python 3.8 wheels, built for CUDA 11.8:
  CUDA's minor-version compatibility lets it run on any 11.x driver. cuda-python 13 is built for the
  CUDA 13 runtime and needs a CUDA 13 driver: on JetPack 6 (CUDA 12.6) or an older desktop driver
  its calls fail with cudaErrorInsufficientDriver. The bindings are used only when the driver's CUDA
  major version (cudaDriverGetVersion) is at least the bindings' one (cudaRuntimeGetVersion).
- pycuda (driver API, built against the local toolkit; older JetPack images): the fallback. Its
  `memcpy_*_async` copy the whole buffer object they are given (src/wrapper/wrap_cudadrv.cpp), so
  they get a view of exactly the bytes to copy. No CUDA graphs here.

cuda-python calls return a tuple (error, *values); `_check` turns a non-success error into a
CudaError (a VitcError) naming the call. pycuda raises pycuda.driver.Error (MemoryError, LogicError,
LaunchError ... derive from it, and it from Exception: neither a RuntimeError nor a VitcError), which
`Cuda.call` turns into the same CudaError; either says whether it was for lack of memory, so that
`vitc bench` names the batch and suggests a smaller one (errors.gpu_failure). No torch.
"""

from __future__ import annotations

import ctypes
import importlib
import os
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Callable

import numpy as np

from vitc._lazy import broken_text
from vitc.errors import CudaError, VitcError, first_line, named_first_line

CUDA_PYTHON_MODULES = ("cuda.bindings.runtime", "cuda.cudart")
INSTALL_HINT = (
    "pip install 'vitc[trt-cu11]' (CUDA 11 drivers, JetPack 5), 'vitc[trt-cu12]' (CUDA 12 drivers, JetPack 6) "
    "or 'vitc[trt-cu13]' (CUDA 13 drivers)"
)


def install_hint() -> str:
    """What to install for CUDA bindings that work here: on a Jetson, the extra for its L4T; else INSTALL_HINT.
    The one remedy `vitc doctor`, `vitc build` and `vitc bench --engine x.plan` name."""
    from vitc.engines.platform import jetson_cuda_remedy, jetson_info

    return jetson_cuda_remedy(jetson_info()) or INSTALL_HINT


def cuda_version(code: int | None) -> str:
    """12060 → '12.6' (the encoding of cudaDriverGetVersion / cudaRuntimeGetVersion)."""
    return "none" if not code else f"{code // 1000}.{code % 1000 // 10}"


@dataclass(frozen=True)
class BindingChoice:
    """The bindings `Cuda` uses and why; `rejected` says why the others were not taken."""

    kind: str | None  # "cuda-python", "pycuda" or None
    module: str | None = None
    driver: int | None = None  # CUDA version the driver supports, e.g. 12060
    built_for: int | None = None  # CUDA runtime version the bindings are built for
    reason: str = ""
    rejected: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "module": self.module,
            "driver_cuda": cuda_version(self.driver) if self.driver is not None else None,
            "bindings_cuda": cuda_version(self.built_for) if self.built_for is not None else None,
            "reason": self.reason,
            "rejected": list(self.rejected),
        }


def _import(name: str) -> tuple[ModuleType | None, str | None]:
    """(module, None); (None, None) when it is not installed; (None, why) when it is but fails to import (an
    ImportError, or OSError/RuntimeError from a library the module loads), as `vitc doctor` says it."""
    from vitc._lazy import has_module, import_optional

    return import_optional(name) if has_module(name) else (None, None)


def _try_cuda_python() -> tuple[BindingChoice | None, str]:
    broken = None
    for name in CUDA_PYTHON_MODULES:
        rt, why = _import(name)
        broken = broken or why
        if rt is not None:
            break
    else:
        if broken is not None:
            return None, f"cuda-python: {broken_text('cuda-python', broken)}"
        return None, f"cuda-python: not installed ({install_hint()})"
    try:
        err, driver = rt.cudaDriverGetVersion()
        err2, built = rt.cudaRuntimeGetVersion()
    except Exception as exc:  # no driver library (cuda-python 11.x raises), or not the (err, value) API
        if "libcuda.so" in str(exc):
            return None, f"cuda-python ({name}): no NVIDIA driver here ({first_line(exc)})"
        return None, f"cuda-python ({name}): version query failed ({named_first_line(exc)})"
    if int(err) != 0 or not driver:
        why = getattr(err, "name", err) if int(err) != 0 else "cudaDriverGetVersion gave 0"
        return None, f"cuda-python ({name}): no CUDA driver ({why})"
    if int(err2) != 0 or not built:
        return None, f"cuda-python ({name}): cudaRuntimeGetVersion failed ({getattr(err2, 'name', err2)})"
    if driver // 1000 < built // 1000:
        return None, (
            f"cuda-python ({name}) is built for CUDA {cuda_version(built)} but the driver supports "
            f"CUDA {cuda_version(driver)}: every call would fail with cudaErrorInsufficientDriver "
            f"({install_hint()})"
        )
    reason = (
        f"built for CUDA {cuda_version(built)}; the driver supports CUDA {cuda_version(driver)} "
        "(a same or newer major version)"
    )
    return BindingChoice("cuda-python", name, driver, built, reason), ""


def _try_pycuda() -> tuple[BindingChoice | None, str]:
    drv, broken = _import("pycuda.driver")
    if broken is not None:
        return None, f"pycuda: {broken_text('pycuda', broken)}"
    if drv is None:
        return None, "pycuda: not installed"
    try:
        driver = int(drv.get_driver_version())
    except Exception as exc:  # pycuda raises its own LogicError/RuntimeError without a driver
        return None, f"pycuda: no CUDA driver ({first_line(exc)})"
    if not driver:
        return None, "pycuda: no CUDA driver (cuDriverGetVersion gave 0)"
    reason = f"driver API through pycuda (driver supports CUDA {cuda_version(driver)})"
    return BindingChoice("pycuda", "pycuda.driver", driver, None, reason), ""


def choose_bindings(prefer: str | None = None) -> BindingChoice:
    """cuda-python when the driver is new enough for it, else pycuda, else kind=None with the reasons.

    This imports the candidate modules (cheap: neither creates a CUDA context).
    """
    order = {"cuda-python": _try_cuda_python, "pycuda": _try_pycuda}
    if prefer is not None and prefer not in order:
        raise VitcError(f"unknown CUDA bindings {prefer!r} (choose cuda-python or pycuda)")
    rejected: list[str] = []
    for kind in [prefer] if prefer else list(order):
        choice, why = order[kind]()
        if choice is not None:
            if rejected:
                choice = BindingChoice(
                    choice.kind, choice.module, choice.driver, choice.built_for, choice.reason, tuple(rejected)
                )
            return choice
        rejected.append(why)
    return BindingChoice(None, reason="; ".join(rejected), rejected=tuple(rejected))


def _check(result: Any, call: str) -> Any:
    """Unpack a cuda-python result tuple; raise on a CUDA error."""
    if isinstance(result, tuple):
        err, rest = result[0], result[1:]
    else:
        err, rest = result, ()
    if int(err) != 0:
        name = getattr(err, "name", str(err))
        raise CudaError(f"CUDA error in {call}: {name}", out_of_memory=name == "cudaErrorMemoryAllocation")
    if not rest:
        return None
    return rest[0] if len(rest) == 1 else rest


def _bytes_view(array: np.ndarray, nbytes: int) -> np.ndarray:
    """The first `nbytes` bytes of a contiguous array, as a uint8 view (no copy)."""
    flat = array.reshape(-1).view(np.uint8)
    if nbytes > flat.size:
        raise VitcError(f"copy of {nbytes} bytes from a {flat.size}-byte host buffer")
    return flat[:nbytes]


_RETAINED: dict[tuple[Any, int], Any] = {}  # pycuda's primary context per (module, device), retained once


class Cuda:
    """The CUDA calls the runner needs, on the bindings `choose_bindings` picks."""

    def __init__(self, prefer: str | None = None) -> None:
        choice = choose_bindings(prefer)
        if choice.kind is None or choice.module is None:
            raise VitcError(f"TensorRT inference needs CUDA bindings that work with this driver: {choice.reason}")
        self.choice = choice
        self.kind = choice.kind
        self.rt: Any = None
        self._pycuda: Any = None
        self._context: Any = None  # pycuda: the device's primary context, current until close()
        self.device = 0  # the device in use: the runtime's current one, or pycuda's
        if choice.kind == "pycuda":
            self._pycuda = importlib.import_module("pycuda.driver")
            self._push_primary_context()
        else:
            self.rt = importlib.import_module(choice.module)
            self.device = int(_check(self.rt.cudaGetDevice(), "cudaGetDevice"))

    def _push_primary_context(self) -> None:
        """Make the device's primary context current, the one the CUDA runtime (TensorRT, PyTorch) works in.

        pycuda.autoinit creates a context of its own (Device.make_context in pycuda/tools.py), so TensorRT's
        engine and a PyTorch tensor of the same process lived in two contexts, each with its own memory. The
        device is autoinit's: CUDA_DEVICE when set, else 0."""
        drv = self._pycuda
        self.call("init", drv.init)
        text = os.environ.get("CUDA_DEVICE", "").strip()
        if text and not text.isdigit():
            raise VitcError(f"CUDA_DEVICE={text!r} is not a device number (pycuda's choice of GPU, as 0 or 1)")
        self.device = int(text or 0)
        context = _RETAINED.get((drv, self.device))
        if context is None:
            device = self.call("Device", drv.Device, self.device)
            context = self.call("Device.retain_primary_context", device.retain_primary_context)
            _RETAINED[(drv, self.device)] = context
        self.call("Context.push", context.push)
        self._context = context

    def close(self) -> None:
        """Pop pycuda's primary context (cuda-python's runtime keeps its own: nothing to do). It stays retained
        for the process, as pycuda.autoprimaryctx keeps it: pycuda's detach of a primary context pushes it,
        releases it and pops nothing (src/cpp/cuda.hpp, context::detach, primary_context::detach_internal),
        which would leave a released context current."""
        context, self._context = self._context, None
        if context is not None:
            self.call("Context.pop", context.pop)

    def call(self, name: str, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(*args)`, a pycuda call, with its pycuda.driver.Error raised as a CudaError naming `name`."""
        try:
            return fn(*args)
        except self._pycuda.Error as exc:  # "cuMemAlloc failed: out of memory" is a pycuda._driver.MemoryError
            out_of_memory = type(exc).__name__ == "MemoryError" or "out of memory" in str(exc)
            raise CudaError(f"CUDA error in {name}: {first_line(exc)}", out_of_memory=out_of_memory) from exc

    # -- device facts ---------------------------------------------------------------------
    def device_properties(self, device: int | None = None) -> dict[str, str]:
        """{"name", "compute_capability"} of a device: the one in use unless given."""
        device = self.device if device is None else device
        if self._pycuda is not None:
            dev = self.call("Device", self._pycuda.Device, device)
            major, minor = self.call("Device.compute_capability", dev.compute_capability)
            return {"name": str(self.call("Device.name", dev.name)), "compute_capability": f"{major}.{minor}"}
        props = _check(self.rt.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
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
            self._alloc = cuda.call("mem_alloc", cuda._pycuda.mem_alloc, nbytes)
            self.ptr = int(self._alloc)
        else:
            self.ptr = int(_check(cuda.rt.cudaMalloc(nbytes), "cudaMalloc"))

    def free(self) -> None:
        ptr, self.ptr = self.ptr, 0  # tried once: a failed free (a sticky CUDA error) is not retried
        if ptr:
            if self._alloc is not None:
                self.cuda.call("DeviceAllocation.free", self._alloc.free)
            else:
                _check(self.cuda.rt.cudaFree(ptr), "cudaFree")


class PinnedArray:
    """A numpy array in page-locked host memory (fast, asynchronous copies)."""

    def __init__(self, cuda: Cuda, shape: tuple[int, ...], dtype: np.dtype[Any]) -> None:
        self.cuda = cuda
        count = int(np.prod(shape))
        nbytes = max(count * dtype.itemsize, 1)
        self.nbytes = nbytes
        if cuda._pycuda is not None:
            self.array: np.ndarray = cuda.call("pagelocked_empty", cuda._pycuda.pagelocked_empty, shape, dtype)
            self.ptr = int(self.array.ctypes.data)
            self._owned = False
        else:
            self.ptr = int(_check(cuda.rt.cudaMallocHost(nbytes), "cudaMallocHost"))
            raw = (ctypes.c_byte * nbytes).from_address(self.ptr)
            self.array = np.frombuffer(memoryview(raw).cast("B"), dtype=dtype, count=count).reshape(shape)
            self._owned = True

    def free(self) -> None:
        """Free the memory; `array` becomes an empty array, not a view of freed memory that a later write would
        corrupt (pycuda's array keeps its own memory alive until it is dropped)."""
        ptr, self.ptr = self.ptr, 0
        self.array = np.empty((0,), self.array.dtype)
        if self._owned and ptr:
            _check(self.cuda.rt.cudaFreeHost(ptr), "cudaFreeHost")


class Stream:
    def __init__(self, cuda: Cuda) -> None:
        self.cuda = cuda
        self._obj: Any = None
        if cuda._pycuda is not None:
            self._obj = cuda.call("Stream", cuda._pycuda.Stream)
            self.handle = int(self._obj.handle)
        else:
            self._obj = _check(cuda.rt.cudaStreamCreate(), "cudaStreamCreate")
            # int() is the handle, without a warning, in cuda-python 11.8 to cuda-bindings 13.5 (getPtr() is
            # the address of the wrapper's copy of it; cuda.bindings.utils.get_cuda_native_handle is 12.9.1+)
            self.handle = int(self._obj)

    def htod(self, dst: DeviceBuffer, src: PinnedArray, nbytes: int) -> None:
        """Copy the first `nbytes` of `src` to `dst` (asynchronous on this stream)."""
        if nbytes > dst.nbytes:
            raise VitcError(f"copy of {nbytes} bytes into a {dst.nbytes}-byte device buffer")
        if self.cuda._pycuda is not None:
            view = _bytes_view(src.array, nbytes)
            self.cuda.call("memcpy_htod_async", self.cuda._pycuda.memcpy_htod_async, dst.ptr, view, self._obj)
            return
        kind = self.cuda.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        _check(self.cuda.rt.cudaMemcpyAsync(dst.ptr, src.ptr, nbytes, kind, self._obj), "cudaMemcpyAsync H2D")

    def dtoh(self, dst: PinnedArray, src: DeviceBuffer, nbytes: int) -> None:
        """Copy the first `nbytes` of `src` into `dst` (asynchronous on this stream)."""
        if nbytes > src.nbytes:
            raise VitcError(f"copy of {nbytes} bytes from a {src.nbytes}-byte device buffer")
        if self.cuda._pycuda is not None:
            view = _bytes_view(dst.array, nbytes)
            self.cuda.call("memcpy_dtoh_async", self.cuda._pycuda.memcpy_dtoh_async, view, src.ptr, self._obj)
            return
        if nbytes > dst.nbytes:
            raise VitcError(f"copy of {nbytes} bytes into a {dst.nbytes}-byte host buffer")
        kind = self.cuda.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        _check(self.cuda.rt.cudaMemcpyAsync(dst.ptr, src.ptr, nbytes, kind, self._obj), "cudaMemcpyAsync D2H")

    def synchronize(self) -> None:
        if self.cuda._pycuda is not None:
            self.cuda.call("Stream.synchronize", self._obj.synchronize)
        else:
            _check(self.cuda.rt.cudaStreamSynchronize(self._obj), "cudaStreamSynchronize")

    def destroy(self) -> None:
        obj, self._obj = self._obj, None
        if self.cuda._pycuda is None and obj is not None:
            _check(self.cuda.rt.cudaStreamDestroy(obj), "cudaStreamDestroy")


class Event:
    def __init__(self, cuda: Cuda) -> None:
        self.cuda = cuda
        if cuda._pycuda is not None:
            self._obj: Any = cuda.call("Event", cuda._pycuda.Event)
        else:
            self._obj = _check(cuda.rt.cudaEventCreate(), "cudaEventCreate")

    def record(self, stream: Stream) -> None:
        if self.cuda._pycuda is not None:
            self.cuda.call("Event.record", self._obj.record, stream._obj)
        else:
            _check(self.cuda.rt.cudaEventRecord(self._obj, stream._obj), "cudaEventRecord")

    def seconds_since(self, start: Event) -> float:
        """Elapsed GPU time from `start` to this event (both recorded, stream synchronised)."""
        if self.cuda._pycuda is not None:
            return float(self.cuda.call("Event.time_since", self._obj.time_since, start._obj)) / 1e3
        ms = _check(self.cuda.rt.cudaEventElapsedTime(start._obj, self._obj), "cudaEventElapsedTime")
        return float(ms) / 1e3

    def destroy(self) -> None:
        obj, self._obj = self._obj, None
        if self.cuda._pycuda is None and obj is not None:
            _check(self.cuda.rt.cudaEventDestroy(obj), "cudaEventDestroy")


class CudaGraph:
    """Capture what runs on a stream once, then replay it with one launch (cuda-python only)."""

    def __init__(self, stream: Stream) -> None:
        if stream.cuda._pycuda is not None:
            raise VitcError("--cuda-graph needs cuda-python (pycuda is not supported for graphs)")
        self.stream = stream
        self.rt = stream.cuda.rt
        self._graph: Any = None
        self._exec: Any = None
        self.instantiate_error: str | None = None  # why the captured graph could not be instantiated

    def begin(self) -> None:
        mode = self.rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        _check(self.rt.cudaStreamBeginCapture(self.stream._obj, mode), "cudaStreamBeginCapture")

    def end(self, enqueued: bool = True) -> bool:
        """End the capture and instantiate its graph; False, with no graph, when the capture failed.

        As trtexec's endCaptureOnError (samples/common/sampleDevice.h): CUDA invalidates a capture in
        which an illegal call was made, and cudaStreamEndCapture then returns
        cudaErrorStreamCaptureInvalidated and a NULL graph (cuda-python ≤ 12.6 wraps NULL, 12.9+ gives
        None); a capture whose work failed to enqueue (`enqueued` False) ends with a graph that must
        not be used, only destroyed. A graph CUDA cannot instantiate (out of memory, a node it does not
        support) is destroyed too, with the reason in `instantiate_error`. Each way the stream has left
        capture mode, and the error the failure left behind is cleared (cudaGetLastError), or the next
        launch would report it.
        """
        result = self.rt.cudaStreamEndCapture(self.stream._obj)
        if int(result[0]) == int(self.rt.cudaError_t.cudaErrorStreamCaptureInvalidated):
            self._graph = None
        else:
            self._graph = _check(result, "cudaStreamEndCapture")
            if enqueued:
                # cudaGraphInstantiateWithFlags(graph, flags) is the one form in cuda-python 11.x (JetPack 5),
                # 12.x and 13.x: 11.x's cudaGraphInstantiate takes (graph, pLogBuffer, bufferSize) instead.
                err, graph_exec = self.rt.cudaGraphInstantiateWithFlags(self._graph, 0)
                if int(err) == 0:
                    self._exec = graph_exec
                    return True
                self.instantiate_error = f"cudaGraphInstantiateWithFlags: {getattr(err, 'name', err)}"
            self.destroy()
        self.rt.cudaGetLastError()  # returns (and so clears) that error: not a failure of this call
        return False

    def launch(self) -> None:
        _check(self.rt.cudaGraphLaunch(self._exec, self.stream._obj), "cudaGraphLaunch")

    def destroy(self) -> None:
        """Destroy both, the graph even when destroying its executable failed (a sticky CUDA error)."""
        graph_exec, graph, self._exec, self._graph = self._exec, self._graph, None, None
        try:
            if graph_exec is not None:
                _check(self.rt.cudaGraphExecDestroy(graph_exec), "cudaGraphExecDestroy")
        finally:
            if graph is not None:
                _check(self.rt.cudaGraphDestroy(graph), "cudaGraphDestroy")
