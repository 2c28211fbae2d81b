"""TensorRT: run a plan through named I/O tensors (set_input_shape, set_tensor_address, execute_async_v3).

That API is in every supported release (release/8.5 pyCore.cpp has it; the binding-index API it
replaces is deprecated in 8.5 and gone in 10.0), so there is one path for 8.5 → 11.x. 8.4 and older
lack it and are refused before any TensorRT call (`vitc.engines.tensorrt.check_release`).

Security: a plan is executable content; see `vitc.engines.trt_plan`. The runner refuses files whose
header is not a TensorRT plan, and plans this machine's TensorRT/GPU cannot run, before deserialising.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Tuple

import numpy as np

from vitc._lazy import LazyModule
from vitc.artifacts.sidecar import EngineSidecar, check_sidecar_matches, load_sidecar, sidecar_path
from vitc.engines.base import BaseRunner, RunnerInfo, TensorMeta
from vitc.engines.tensorrt import TrtFeatures, dims, features, installed_version, numpy_dtype
from vitc.engines.trt_plan import PlanHeader, built_with, check_plan_compat, read_plan_header
from vitc.errors import VitcError, first_line

if TYPE_CHECKING:
    import tensorrt as trt

    from vitc.engines.cuda import Cuda, CudaGraph, DeviceBuffer, PinnedArray
else:
    trt = LazyModule("tensorrt")


# -- the machine ----------------------------------------------------------------------------------------
ENGINE_NEEDS = "TensorRT, CUDA bindings and an NVIDIA GPU"


def open_engine_machine(task: str) -> tuple[str, Cuda, dict[str, str]]:
    """What building or running a plan needs: the installed TensorRT's version, CUDA on the GPU in use (open:
    the caller closes it) and that GPU's properties. Otherwise one line, `<task> needs TensorRT, CUDA bindings
    and an NVIDIA GPU; missing: ...`, naming every missing piece with its remedy, for `vitc build` and for a
    plan run by bench, predict and eval alike (those named TensorRT alone, then the bindings on the next try).
    A TensorRT older than 8.5 is refused before anything else (`check_release`)."""
    from vitc._lazy import broken_text
    from vitc.engines.cuda import Cuda, choose_bindings
    from vitc.engines.tensorrt import check_release, tensorrt_available, tensorrt_broken, tensorrt_remedy

    check_release()  # first and alone: a newer JetPack brings another CUDA too, so its bindings would change
    missing = []
    if not tensorrt_available():  # installed but failing to import: why, as `vitc doctor` says; else the remedy
        broken = tensorrt_broken()
        missing.append(f"TensorRT ({broken_text('tensorrt', broken) if broken else tensorrt_remedy()})")
    cuda: Cuda | None = None
    gpu: dict[str, str] | None = None
    choice = choose_bindings()
    if choice.kind is None:
        missing.append(f"CUDA bindings ({choice.reason})")  # with what to install (cuda.install_hint)
    else:
        try:
            cuda = Cuda()
            gpu = cuda.device_properties()
        except Exception as exc:  # pycuda raises its own errors without a GPU; cuda-python a VitcError
            missing.append(f"an NVIDIA GPU ({first_line(exc)})")
    if missing or cuda is None or gpu is None:
        if cuda is not None:
            with contextlib.suppress(Exception):  # the line below says what is missing; a failed pop adds nothing
                cuda.close()
        raise VitcError(f"{task} needs {ENGINE_NEEDS}; missing: " + "; ".join(missing))
    return installed_version(), cuda, gpu


# -- runtime ------------------------------------------------------------------------------------------
Shapes = Tuple[Tuple[int, ...], ...]  # the input shapes of one call, in I/O order (a CUDA graph's key)


@dataclass
class _Tensor:
    meta: TensorMeta
    is_input: bool
    profile: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] | None = None
    capacity: int = 0  # bytes allocated
    host: PinnedArray | None = None
    device: DeviceBuffer | None = None


class TensorRTRunner(BaseRunner):
    """Runs a .plan: named I/O tensors, cuda-python buffers, pinned host memory, CUDA-event GPU time."""

    backend = "tensorrt"

    def __init__(
        self,
        path: str | Path,
        *,
        cuda_graph: bool = False,
        dla_core: int | None = None,
        name: str | None = None,
        sidecar: EngineSidecar | None = None,
    ) -> None:
        """`sidecar` replaces the file beside the plan (`vitc build` checks a plan before writing either)."""
        self.path = Path(path)
        super().__init__(name or self.path.name)
        self.cuda_graph = cuda_graph
        self.dla_core = dla_core
        self._given_sidecar = sidecar
        self.sidecar: EngineSidecar | None = None
        self._tensors: list[_Tensor] = []
        self._engine: trt.ICudaEngine | None = None
        self._context: trt.IExecutionContext | None = None
        self._runtime: trt.Runtime | None = None
        self._feat: TrtFeatures | None = None
        self._graph: CudaGraph | None = None  # one graph, of the shapes the context is set to (_graph_shapes)
        self._graph_shapes: Shapes | None = None
        self._cuda: Any = None
        self._stream: Any = None
        self._events: Any = None

    def activate_impl(self) -> None:
        header = read_plan_header(self.path)  # refuse non-plans before TensorRT sees a byte
        self.sidecar = self._given_sidecar if self._given_sidecar is not None else load_sidecar(self.path)
        blob = self.path.read_bytes()
        check_sidecar_matches(self.path, self.sidecar, blob)
        version, self._cuda, gpu = open_engine_machine(f"running {self.path}")
        header = built_with(header, self.sidecar, version)  # an 8.5 plan's bytes 24-27 are no version
        self._feat = features(version)
        self.warnings = check_plan_compat(header, version, self.sidecar, gpu, str(self.path))
        if self.cuda_graph and self._cuda.kind == "pycuda":  # said now, not at the second warm-up call
            self.cuda_graph = False
            self.warnings.append(
                f"{self.path}: CUDA graphs need cuda-python and these CUDA bindings are pycuda, "
                "so it runs without CUDA graphs"
            )
        if self.sidecar is None and header.version is not None:
            self.warnings.append(
                f"{self.path}: no sidecar ({sidecar_path(self.path).name}): its precision, GPU and drift are unknown"
            )
        logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(logger)
        dla = self.dla_core if self.dla_core is not None else (self.sidecar.dla_core if self.sidecar else None)
        if dla is not None:
            self._runtime.DLA_core = int(dla)
            if self.cuda_graph:  # trtexec turns them off too: "CUDA graphs and DLA offloading are not
                self.cuda_graph = False  # simultaneously supported" (samples/common/sampleOptions.cpp, 10.10+)
                self.warnings.append(
                    f"{self.path}: a DLA plan runs without CUDA graphs (TensorRT does not support both)"
                )
        if self.sidecar is not None and self.sidecar.version_compatible:
            self._runtime.engine_host_code_allowed = True  # version-compatible plans embed a lean runtime
        engine = self._runtime.deserialize_cuda_engine(blob)
        if engine is None:
            raise VitcError(f"{self.path}: TensorRT {version} could not deserialise the plan{self._why_not(header)}")
        self._engine = engine
        context = engine.create_execution_context()
        if context is None:
            raise VitcError(f"{self.path}: TensorRT could not create an execution context (out of GPU memory?)")
        self._context = context
        self._tensors = []
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            dtype = numpy_dtype(engine.get_tensor_dtype(name), name, str(self.path))
            shape = tuple(None if d < 0 else d for d in dims(engine.get_tensor_shape(name)))
            profile = None
            if is_input and None in shape:
                low, opt, high = engine.get_tensor_profile_shape(name, 0)
                profile = (dims(low), dims(opt), dims(high))
            self._tensors.append(_Tensor(TensorMeta(name, shape, dtype), is_input, profile))
        self._stream = self._cuda.stream()
        self._events = (self._cuda.event(), self._cuda.event())

    def _why_not(self, header: PlanHeader) -> str:
        """The likeliest reason a plan that passed vitc's checks still does not deserialise."""
        if self.sidecar is None:
            return (
                f"; it has no sidecar ({sidecar_path(self.path).name}) to say how it was built (a --version-compatible "
                "or --dla plan needs it): copy the sidecar along with the plan, or rebuild it here with `vitc build`"
            )
        built = header.version or self.sidecar.tensorrt
        if self.sidecar.version_compatible:
            return (
                f" (a version-compatible plan of TensorRT {built}; see the TensorRT log above): "
                "rebuild it here with `vitc build`"
            )
        return " (see the TensorRT log above): rebuild it here with `vitc build`"

    def min_batch(self) -> int:
        """The smallest batch the engine takes: its profile's min (dynamic) or its static batch."""
        inputs = [t for t in self._tensors if t.is_input]
        limits = [t.profile[0][0] if t.profile is not None else t.meta.static_batch for t in inputs]
        return max([limit for limit in limits if limit is not None], default=1)

    def max_batch(self) -> int | None:
        """The largest batch the engine takes: its profile's max (dynamic) or its static batch."""
        inputs = [t for t in self._tensors if t.is_input]
        limits = [t.profile[2][0] if t.profile is not None else t.meta.static_batch for t in inputs]
        known = [limit for limit in limits if limit is not None]
        return min(known) if known else None

    def supports_batch(self, batch: int) -> bool:
        for tensor in self._tensors:
            if tensor.is_input and tensor.profile is not None:
                if not tensor.profile[0][0] <= batch <= tensor.profile[2][0]:
                    return False
            elif tensor.is_input and tensor.meta.static_batch not in (None, batch):
                return False
        return True

    def _ensure(self, tensor: _Tensor, nbytes: int) -> None:
        """Buffers of at least `nbytes` for a tensor, grown as a larger batch comes (never shrunk)."""
        if tensor.host is None or tensor.host.nbytes < nbytes:
            if tensor.host is not None:
                tensor.host.free()
                tensor.host = None
            count = max(nbytes // np.dtype(tensor.meta.dtype).itemsize, 1)
            tensor.host = self._cuda.pinned((count,), tensor.meta.dtype)
        if tensor.capacity < nbytes:
            self._drop_graph()  # it holds the old addresses
            if tensor.device is not None:
                tensor.device.free()
                tensor.device = None
                tensor.capacity = 0
            tensor.device = self._cuda.malloc(nbytes)
            tensor.capacity = nbytes

    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        assert self._context is not None and self._feat is not None
        context = self._context
        shapes = []
        for tensor in self._tensors:
            if not tensor.is_input:
                continue
            # float to float only: infer() refused integer pixels (check_feed_dtype)
            array = np.ascontiguousarray(feed[tensor.meta.name], dtype=tensor.meta.dtype)
            shapes.append(array.shape)
            if not context.set_input_shape(tensor.meta.name, array.shape):
                raise VitcError(f"{self.path}: input shape {array.shape} is outside the engine's profile")
            self._ensure(tensor, array.nbytes)
            assert tensor.host is not None and tensor.device is not None
            tensor.host.array[: array.size] = array.ravel()
            self._stream.htod(tensor.device, tensor.host, array.nbytes)
        out_shapes: dict[str, tuple[int, ...]] = {}
        for tensor in self._tensors:
            if tensor.is_input:
                continue
            shape = dims(context.get_tensor_shape(tensor.meta.name))
            out_shapes[tensor.meta.name] = shape
            self._ensure(tensor, int(np.prod(shape)) * np.dtype(tensor.meta.dtype).itemsize)
        for tensor in self._tensors:
            assert tensor.device is not None
            if not context.set_tensor_address(tensor.meta.name, tensor.device.ptr):
                raise VitcError(f"{self.path}: TensorRT refused the buffer of {tensor.meta.name!r} (see its log)")
        key = tuple(shapes)
        if self.cuda_graph and (self._graph is None or self._graph_shapes != key):
            # a graph holds the context as it was at its capture, so one is kept, for the shapes the context is set
            # to: a new shape recaptures (as Torch-TensorRT; NVIDIA documents no replay after the context ran at
            # another shape). As trtexec: a plain launch first (TensorRT's set-up for this shape), then the
            # capture, both before the start event, so this call's GPU time is the graph's launch alone
            self._drop_graph()
            self._enqueue()
            self._capture(key)
        start, end = self._events
        start.record(self._stream)
        if self.cuda_graph and self._graph is not None:
            self._graph.launch()
        else:
            self._enqueue()
        end.record(self._stream)
        outputs = {}
        for tensor in self._tensors:
            if tensor.is_input:
                continue
            assert tensor.host is not None and tensor.device is not None
            shape = out_shapes[tensor.meta.name]
            nbytes = int(np.prod(shape)) * np.dtype(tensor.meta.dtype).itemsize
            self._stream.dtoh(tensor.host, tensor.device, nbytes)
        self._stream.synchronize()
        self.gpu_time = end.seconds_since(start)
        for tensor in self._tensors:
            if not tensor.is_input:
                assert tensor.host is not None
                shape = out_shapes[tensor.meta.name]
                outputs[tensor.meta.name] = tensor.host.array[: int(np.prod(shape))].reshape(shape).copy()
        return outputs

    def _enqueue(self) -> None:
        assert self._context is not None
        if not self._context.execute_async_v3(self._stream.handle):
            raise VitcError(f"{self.path}: TensorRT failed to enqueue the inference")

    def _capture(self, key: Shapes) -> None:
        """Capture the launch at these shapes into the graph kept for them; if CUDA or TensorRT cannot, warn once
        and run without CUDA graphs from now on (as trtexec)."""
        from vitc.engines.cuda import CudaGraph

        assert self._context is not None
        graph = CudaGraph(self._stream)
        graph.begin()
        enqueued = False
        try:
            enqueued = bool(self._context.execute_async_v3(self._stream.handle))
        finally:
            captured = graph.end(enqueued)  # a stream left capturing would fail every call after
        if captured:
            self._graph, self._graph_shapes = graph, key
            return
        self.cuda_graph = False
        if not enqueued:
            why = (
                "TensorRT could not enqueue this engine inside a CUDA graph capture (some of its layers "
                "cannot be captured)"
            )
        elif graph.instantiate_error is not None:
            why = f"CUDA could not instantiate the CUDA graph of this engine ({graph.instantiate_error})"
        else:
            why = (
                "CUDA invalidated the CUDA graph capture of this engine (TensorRT made a call that is not "
                "permitted during capture)"
            )
        self.warnings.append(f"{self.path}: {why}, so it runs without CUDA graphs")

    def _drop_graph(self) -> None:
        graph, self._graph, self._graph_shapes = self._graph, None, None
        if graph is not None:
            graph.destroy()

    def deactivate_impl(self) -> None:
        """Free every buffer, graph, event and the stream, and drop the TensorRT objects, each whatever the
        others did: after a sticky CUDA error (a kernel's illegal address) every CUDA call fails, and the first
        failure ended the cleanup, leaking the rest. The first failure is raised once all were tried."""
        failures: list[Exception] = []

        def attempt(release: Callable[[], None]) -> None:
            try:
                release()
            except Exception as exc:  # a CudaError; the others are tried all the same
                failures.append(exc)

        try:
            graph, self._graph, self._graph_shapes = self._graph, None, None
            if graph is not None:
                attempt(graph.destroy)
            for tensor in self._tensors:
                for buffer in (tensor.device, tensor.host):
                    if buffer is not None:
                        attempt(buffer.free)
                tensor.device = tensor.host = None
                tensor.capacity = 0
            for event in self._events or ():
                attempt(event.destroy)
            if self._stream is not None:
                attempt(self._stream.destroy)
        finally:
            self._events = self._stream = None
            self._context = None  # TensorRT's objects in the order they must go: context, engine, runtime
            self._engine = None
            self._runtime = None
            if self._cuda is not None:  # last: pycuda's context, which TensorRT's objects were made in
                attempt(self._cuda.close)
            self._cuda = None
        if failures:
            raise failures[0]

    def get_input_metadata(self) -> list[TensorMeta]:
        return [t.meta for t in self._tensors if t.is_input]

    def get_output_metadata(self) -> list[TensorMeta]:
        return [t.meta for t in self._tensors if not t.is_input]

    def info(self) -> RunnerInfo:
        sidecar = self.sidecar or EngineSidecar()
        return RunnerInfo(
            backend=self.backend,
            device="dla" if sidecar.dla_core is not None else "cuda",
            precision=sidecar.precision or "?",
            detail={
                "tensorrt": installed_version() if self._feat else None,
                "cuda_graph": self.cuda_graph,
                "gpu": sidecar.gpu,
                "times": "e2e includes H2D/D2H copies; gpu = CUDA events around the launch",
            },
        )


__all__ = ["ENGINE_NEEDS", "TensorRTRunner", "open_engine_machine"]
