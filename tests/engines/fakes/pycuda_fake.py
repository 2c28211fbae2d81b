"""The strict pycuda fake (`pycuda.driver`, `pycuda.autoinit`) on a FakeGpu; installed by cuda_fakes.install_cuda.

Copy semantics from src/wrapper/wrap_cudadrv.cpp: `memcpy_htod_async(dest, src, stream)` copies the
whole buffer `src` (m_buf.len), `memcpy_dtoh_async(dest, src, stream)` fills the whole buffer `dest`.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from tests.engines.fakes.cuda_fakes import FakeGpu, _spec, _Stream


def make_pycuda(gpu: FakeGpu) -> dict[str, ModuleType]:
    """pycuda.driver (the calls vitc makes, with pycuda's copy semantics) and pycuda.autoinit."""
    drv = _spec(ModuleType("pycuda.driver"))

    class Error(Exception):
        pass

    class DeviceAllocation:
        def __init__(self, nbytes: int) -> None:
            self.ptr = gpu.alloc(nbytes)

        def __int__(self) -> int:
            return self.ptr

        def free(self) -> None:
            gpu.device.pop(self.ptr, None)

    class Context:
        """A device's primary context (cuDevicePrimaryCtxRetain); `gpu.contexts` is the thread's context stack
        and `gpu.retained` counts each device's retains, as the driver does."""

        def __init__(self, ordinal: int) -> None:
            self.ordinal = ordinal
            self.valid = True

        def push(self) -> None:
            gpu.contexts.append(self)

        @staticmethod
        def pop() -> None:  # a static method in pycuda: pops whatever context is current
            if not gpu.contexts:
                raise Error("cuCtxPopCurrent failed: invalid context")
            gpu.contexts.pop()

        def detach(self) -> None:
            """pycuda's context::detach of a primary context that is not current: cuCtxPushCurrent, then
            primary_context::detach_internal (cuDevicePrimaryCtxRelease), which pops nothing."""
            if self.valid:
                if not gpu.contexts or gpu.contexts[-1] is not self:
                    gpu.contexts.append(self)
                gpu.retained[self.ordinal] -= 1
                self.valid = False

    class Device:
        def __init__(self, ordinal: int) -> None:
            if not 0 <= ordinal < gpu.device_count:
                raise Error("cuDeviceGet failed: invalid device ordinal")
            self.ordinal = ordinal

        def name(self) -> str:
            return gpu.name if self.ordinal == 0 else f"{gpu.name} #{self.ordinal}"

        def compute_capability(self) -> tuple[int, int]:
            return gpu.cc

        def retain_primary_context(self) -> Context:
            gpu.retained[self.ordinal] = gpu.retained.get(self.ordinal, 0) + 1
            return Context(self.ordinal)

    class Stream:
        def __init__(self, flags: int = 0) -> None:
            self.handle = gpu.new_handle()
            gpu.streams[self.handle] = _Stream(self.handle)

        def synchronize(self) -> None:
            gpu.synchronize(self.handle)

    class Event:
        def __init__(self, flags: int = 0) -> None:
            self.handle = gpu.new_handle()
            gpu.events[self.handle] = None

        def record(self, stream: Stream | None = None) -> Event:
            gpu.events[self.handle] = None
            stamp = lambda: gpu.events.__setitem__(self.handle, gpu.clock)  # noqa: E731
            gpu.enqueue(None if stream is None else stream.handle, stamp)
            return self

        def time_since(self, start: Event) -> float:
            t0, t1 = gpu.events[start.handle], gpu.events[self.handle]
            if t0 is None or t1 is None:
                raise Error("cuEventElapsedTime failed: device not ready")
            return float(t1 - t0)

    def _buffer(obj: Any, writable: bool) -> memoryview:
        view = memoryview(obj)
        if not view.contiguous or (writable and view.readonly):
            raise TypeError("pycuda needs a contiguous (writable) buffer")
        return view.cast("B")

    def _handle(stream: Stream | None) -> int:
        return 0 if stream is None else stream.handle

    def memcpy_htod_async(dest: Any, src: Any, stream: Stream | None = None) -> None:
        data = _buffer(src, False)  # the whole buffer: m_buf.len in wrap_cudadrv.cpp
        host = gpu.host_view(_address(src), len(data))
        gpu.copy(_handle(stream), "H2D", gpu.view(int(dest), len(data)), host)

    def memcpy_dtoh_async(dest: Any, src: Any, stream: Stream | None = None) -> None:
        data = _buffer(dest, True)
        host = gpu.host_view(_address(dest), len(data))
        gpu.copy(_handle(stream), "D2H", host, gpu.view(int(src), len(data)))

    def pagelocked_empty(shape: Any, dtype: Any, order: str = "C", mem_flags: int = 0) -> np.ndarray:
        array = np.empty(shape, dtype, order=order)
        gpu.register_host(array)
        return array

    for key, value in {
        "Error": Error,
        "LogicError": Error,
        "init": lambda flags=0: None,
        "get_driver_version": lambda: gpu.driver,
        "Device": Device,
        "Context": Context,
        "Stream": Stream,
        "Event": Event,
        "mem_alloc": DeviceAllocation,
        "memcpy_htod_async": memcpy_htod_async,
        "memcpy_dtoh_async": memcpy_dtoh_async,
        "pagelocked_empty": pagelocked_empty,
    }.items():
        setattr(drv, key, value)
    autoinit = _spec(ModuleType("pycuda.autoinit"))  # importing the real one makes a context of its own
    autoinit.device = Device(0)  # type: ignore[attr-defined]
    package = _spec(ModuleType("pycuda"), package=True)
    package.driver = drv  # type: ignore[attr-defined]
    return {"pycuda": package, "pycuda.driver": drv, "pycuda.autoinit": autoinit}


def _address(obj: Any) -> int:
    return int(np.frombuffer(obj, dtype=np.uint8).ctypes.data) if not isinstance(obj, np.ndarray) else obj.ctypes.data
