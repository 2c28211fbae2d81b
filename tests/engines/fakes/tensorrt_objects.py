"""The objects of the fake `tensorrt` modules (tests/engines/fakes/tensorrt_fake.py): strictness and behaviour.

Each class here models one TensorRT class; `make_tensorrt` derives, per release, a class that exposes
exactly the members NVIDIA's bindings of that release define. See tensorrt_fake.py for what is
modelled and from which documentation.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import warnings
import weakref
from pathlib import Path
from typing import Any

import numpy as np

from tests.engines.fakes.cuda_fakes import FakeCudaError, cudaError_t
from vitc.export.trt_rules import supported_ops

PLAN_BODY = b"FAKEPLAN"
CACHE_TAG = b"FAKETC"
ONNX_TYPES = {1: "FLOAT", 10: "HALF", 16: "BF16", 3: "INT8", 2: "UINT8", 6: "INT32", 7: "INT64", 9: "BOOL", 17: "FP8"}
NUMPY = {
    "FLOAT": np.float32,
    "HALF": np.float16,
    "INT8": np.int8,
    "UINT8": np.uint8,
    "INT32": np.int32,
    "INT64": np.int64,
    "BOOL": np.bool_,
}
PRECISION_FLAGS = ("FP16", "INT8", "BF16", "FP8", "INT4", "FP4")
NOT_ON_DLA = ("Softmax",)  # layer types the fake DLA refuses (they fall back to the GPU)


class FakeGap(AssertionError):
    """The real TensorRT has this name, the fake does not model it."""


# pybind11's keep_alive<Nurse, Patient>: a table in pybind11's internals holds a strong reference to the
# patient until the nurse is deallocated. Python's GC does not see it, so a nurse and a patient that keep
# each other (8.5's OnnxParser and network) are never freed.
PATIENTS: dict[int, list[Any]] = {}


def keep_alive(nurse: Any, patient: Any) -> None:
    PATIENTS.setdefault(id(nurse), []).append(patient)


class Nurse:
    """An object that keeps others alive through PATIENTS: they are let go when it is deallocated."""

    def __del__(self) -> None:
        PATIENTS.pop(id(self), None)


# -- strictness --------------------------------------------------------------------------------------
class StrictMeta(type):
    def __getattribute__(cls, name: str) -> Any:
        if name.startswith("_"):
            return super().__getattribute__(name)
        if name not in type.__getattribute__(cls, "_api"):
            raise AttributeError(f"type object 'tensorrt.{cls.__name__}' has no attribute '{name}'")
        try:
            return super().__getattribute__(name)
        except AttributeError:
            raise FakeGap(f"the fake does not model tensorrt.{cls.__name__}.{name}") from None

    def __call__(cls, *args: Any, _internal: bool = False, **kwargs: Any) -> Any:
        if not _internal and "__init__" not in cls._api:
            raise TypeError(f"tensorrt.{cls.__name__}: No constructor defined!")
        return super().__call__(*args, **kwargs)


class Strict(metaclass=StrictMeta):
    """Instances expose exactly the members of their class in this release (bases included)."""

    _api: frozenset[str] = frozenset()
    _deprecated: frozenset[str] = frozenset()
    _trt: Any = None

    def __getattribute__(self, name: str) -> Any:
        if name.startswith("_"):
            return object.__getattribute__(self, name)
        cls = type(self)
        if name not in cls._api:
            raise AttributeError(f"'tensorrt.{cls.__name__}' object has no attribute '{name}'")
        if name in cls._deprecated:
            warnings.warn(f"tensorrt.{cls.__name__}.{name} is deprecated", DeprecationWarning, stacklevel=2)
        try:
            return object.__getattribute__(self, name)
        except AttributeError:
            raise FakeGap(f"the fake does not model tensorrt.{cls.__name__}.{name}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        if not name.startswith("_") and name not in type(self)._api:
            raise AttributeError(f"'tensorrt.{type(self).__name__}' object has no attribute '{name}'")
        object.__setattr__(self, name, value)

    def _new(self, cls_name: str, *args: Any) -> Any:
        """An instance of this release's class `cls_name` (made by TensorRT, not by the user)."""
        return getattr(self._trt, cls_name)(*args, _internal=True)

    def _error(self, message: str) -> None:
        self._trt._log.append(message)


# -- behaviour -----------------------------------------------------------------------------------------
class Dims(tuple, Strict):  # type: ignore[misc]
    def __new__(cls, shape: Any = ()) -> Dims:
        return tuple.__new__(cls, [int(d) for d in shape])

    def __init__(self, shape: Any = ()) -> None:
        pass


class HostMemory(bytes, Strict):  # type: ignore[misc]
    """IHostMemory: bytes(memory) is the blob (the real one exposes the buffer protocol)."""

    @property
    def nbytes(self) -> int:
        return len(self)


class Logger(Strict):
    def __init__(self, min_severity: Any = None) -> None:
        self.min_severity = min_severity

    def log(self, severity: Any, msg: str) -> None:
        self._error(msg)


class Tensor(Strict):
    def __init__(self, name: str, shape: tuple[int, ...], dtype: Any) -> None:
        object.__setattr__(self, "_state", (name, shape, dtype))

    name = property(lambda self: self._state[0])
    shape = property(lambda self: self._new("Dims", self._state[1]))

    @property
    def dtype(self) -> Any:
        if self._state[2] is None:
            raise FakeGap(f"the fake could not type tensor {self._state[0]!r} (ONNX type inference left it untyped)")
        return self._state[2]


class Network(Strict, Nurse):
    def __init__(self, flags: set[str]) -> None:
        self._flags, self._onnx, self._inputs, self._outputs, self._layers = flags, b"", [], [], []
        self._trt._live.add(self)

    num_inputs = property(lambda self: len(self._inputs))
    num_outputs = property(lambda self: len(self._outputs))
    num_layers = property(lambda self: len(self._layers))

    def get_input(self, index: int) -> Any:
        return self._inputs[index]

    def get_output(self, index: int) -> Any:
        return self._outputs[index]

    def get_layer(self, index: int) -> Any:
        return self._layers[index]

    @property
    def _strongly_typed(self) -> bool:
        return self._trt._major >= 11 or "STRONGLY_TYPED" in self._flags


class ParserError(Strict):
    def __init__(self, text: str) -> None:
        self._text = text

    def desc(self) -> str:
        return self._text

    def __str__(self) -> str:
        return self._text


class OnnxParser(Strict, Nurse):
    def __init__(self, network: Network, logger: Any) -> None:
        # the C++ parser refers to the network; the Python objects are tied by keep_alive alone (pyOnnx.cpp)
        self._network, self._errors = weakref.ref(network), []
        keep_alive(network, self)  # py::keep_alive<2, 1>: the network (argument 2) keeps the parser
        keep_alive(self, logger)  # <1, 3>
        if [int(x) for x in self._trt.__version__.split(".")[:2]] < [8, 6]:
            keep_alive(self, network)  # 8.5's <1, 2> (release/8.5 pyOnnx.cpp:79-80; 8.6 dropped it): a cycle
        self._trt._live.add(self)

    num_errors = property(lambda self: len(self._errors))

    def get_error(self, index: int) -> Any:
        return self._new("ParserError", self._errors[index])

    def parse_from_file(self, path: str) -> bool:
        import onnx

        net = self._network()
        if self._trt._major < 10 and "EXPLICIT_BATCH" not in net._flags:
            self._errors.append(
                "Network must have the explicit batch flag (NetworkDefinitionCreationFlag::kEXPLICIT_BATCH)"
            )
            return False
        try:
            data = Path(path).read_bytes()
            model = onnx.load_from_string(data)
        except Exception as exc:  # the real parser reports any unreadable file the same way
            self._errors.append(f"ModelImporter.cpp: Failed to parse ONNX model: {exc}")
            return False
        dtypes = self._trt.DataType
        tensors = []
        for info in [*model.graph.input, *model.graph.output]:
            kind = ONNX_TYPES.get(info.type.tensor_type.elem_type)
            if kind is None or kind not in dtypes.__members__:
                self._errors.append(f"{info.name}: data type not supported by TensorRT {self._trt.__version__}")
                return False
            shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in info.type.tensor_type.shape.dim)
            tensors.append(self._new("ITensor", info.name, shape, dtypes[kind]))
        supported = supported_ops(self._trt.__version__)  # onnx-tensorrt's docs/operators.md for this release
        for i, node in enumerate(model.graph.node):
            if node.domain in ("", "ai.onnx") and node.op_type not in supported:
                self._errors.append(  # the real parser's wording for an op it has no importer for
                    f"In node {i} with name: {node.name} and operator: {node.op_type} (importFallbackPluginImporter): "
                    'UNSUPPORTED_NODE: Assertion failed: creator && "Plugin not found, are the plugin name, version, '
                    'and namespace correct?"'
                )
        if self._errors:
            return False
        from tests.engines.fakes.tensorrt_layers import parse_layers  # it builds on this module's classes

        n_in = len(model.graph.input)
        net._inputs, net._outputs, net._onnx = tensors[:n_in], tensors[n_in:], data
        net._layers = parse_layers(self, model)
        return True


class OptimizationProfile(Strict):
    def __init__(self) -> None:
        self._shapes: dict[str, list[tuple[int, ...]]] = {}

    def set_shape(self, input: str, min: Any, opt: Any, max: Any) -> None:
        self._shapes[input] = [tuple(int(d) for d in s) for s in (min, opt, max)]


class TimingCache(Strict):
    """Entries are keys (a layer of a network); a build adds its network's, a rebuild finds them all."""

    def __init__(self, origin: Any, entries: Any) -> None:
        self._origin, self._entries = origin, set(entries)

    def serialize(self) -> Any:
        record = {"origin": self._origin, "entries": sorted(self._entries)}
        return self._new("IHostMemory", CACHE_TAG + json.dumps(record).encode())

    def combine(self, input_cache: Any, ignore_mismatch: bool) -> bool:
        """NvInfer.h: "The input cache must be generated by a TensorRT build of exact same version, otherwise
        combine will be skipped and return false. ignoreMismatch must be set to true if combining a timing
        cache created from a different device"; conflicting entries are skipped (here: a set union)."""
        if not isinstance(input_cache, TimingCache):  # pybind11 binds ITimingCache const& only
            raise TypeError("combine(): incompatible function arguments")
        version, device = input_cache._origin
        if version != self._origin[0] or (device != self._origin[1] and not ignore_mismatch):
            return False
        self._entries |= input_cache._entries
        return True


class BuilderConfig(Strict):
    def __init__(self) -> None:
        self._trt._live.add(self)
        # a fresh config has TF32 set: "Enabled by default" (NvInfer.h BuilderFlag::kTF32, 8.5 to 11.1)
        self._flags: set[str] = {"TF32"} & set(self._trt.BuilderFlag.__members__)
        self._profiles: list[OptimizationProfile] = []
        self._cache: TimingCache | None = None
        self._pools: dict[str, int] = {}
        self._devices: dict[str, Any] = {}  # set_device_type, by layer name
        object.__setattr__(self, "default_device_type", self._trt.DeviceType.GPU)
        object.__setattr__(self, "DLA_core", -1)
        if "hardware_compatibility_level" in self._api:
            object.__setattr__(self, "hardware_compatibility_level", self._trt.HardwareCompatibilityLevel.NONE)
        if "builder_optimization_level" in self._api:
            object.__setattr__(self, "builder_optimization_level", 3)

    def set_flag(self, flag: Any) -> None:
        self._flags.add(self._flag(flag))

    def clear_flag(self, flag: Any) -> None:
        self._flags.discard(self._flag(flag))

    def _flag(self, flag: Any) -> str:
        if not isinstance(flag, self._trt.BuilderFlag):  # pybind11 takes only its enum
            raise TypeError(f"incompatible function arguments: {flag!r} is not a tensorrt.BuilderFlag")
        return str(flag.name)

    def get_flag(self, flag: Any) -> bool:
        return flag.name in self._flags

    def set_memory_pool_limit(self, pool: Any, pool_size: int) -> None:
        if not isinstance(pool_size, int) or pool_size < 0:  # pybind11 cannot make a std::size_t of it
            raise TypeError(
                "set_memory_pool_limit(): incompatible function arguments. The following argument types are "
                f"supported: (self, pool: tensorrt.MemoryPoolType, pool_size: int) -> None; got {pool_size!r}"
            )
        self._pools[pool.name] = int(pool_size)

    def add_optimization_profile(self, profile: OptimizationProfile) -> int:
        self._profiles.append(profile)
        return len(self._profiles) - 1

    num_optimization_profiles = property(lambda self: len(self._profiles))

    def create_timing_cache(self, serialized_timing_cache: bytes) -> Any:
        blob = bytes(serialized_timing_cache)
        if not blob:
            return self._new("ITimingCache", self._trt._origin(), ())
        try:
            assert blob.startswith(CACHE_TAG)
            record = json.loads(blob[len(CACHE_TAG) :])
            return self._new("ITimingCache", record["origin"], [str(key) for key in record["entries"]])
        except (AssertionError, ValueError, KeyError, TypeError):
            return None  # createTimingCache's nullptr: what a corrupt blob gives is undocumented

    def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> bool:
        if cache is None:  # pybind11 cannot bind None to `ITimingCache const&`
            raise TypeError("set_timing_cache(): incompatible function arguments")
        if cache._origin != self._trt._origin() and not ignore_mismatch:
            self._error("Timing cache is not compatible with this TensorRT/device; it was not used")
            return False
        self._cache = cache
        return True

    def get_timing_cache(self) -> Any:
        return self._cache

    def can_run_on_DLA(self, layer: Any) -> bool:  # the layer's type and parameters, not its precision
        return layer._state[1] not in NOT_ON_DLA

    def set_device_type(self, layer: Any, device_type: Any) -> None:
        if not isinstance(device_type, self._trt.DeviceType):  # pybind11 takes only its enum
            raise TypeError(f"incompatible function arguments: {device_type!r} is not a tensorrt.DeviceType")
        self._devices[layer.name] = device_type

    def get_device_type(self, layer: Any) -> Any:
        return self._devices.get(layer.name, self.default_device_type)

    def _on_gpu(self, network: Network) -> list[str]:
        """The layers of a DLA build that run on the GPU: those put there, those DLA cannot run, and those
        held to FP32 (DLA runs FP16 and INT8 only: "DLA support is limited to networks running in FP16
        and INT8 mode", TensorRT developer guide; with GPU_FALLBACK they fall back)."""
        return [
            layer.name
            for layer in network._layers
            if self.get_device_type(layer).name != "DLA"
            or not self.can_run_on_DLA(layer)
            or (layer._precision is not None and layer._precision.name == "FLOAT")
        ]


class Builder(Strict):
    def __init__(self, logger: Any) -> None:
        self._logger = logger
        self._trt._live.add(self)

    num_DLA_cores = property(lambda self: self._trt._dla_cores)

    def create_network(self, flags: int = 0) -> Any:
        known = {m.name for m in self._trt.NetworkDefinitionCreationFlag if int(flags) >> int(m) & 1}
        network = self._new("INetworkDefinition", known)
        keep_alive(network, self)  # py::keep_alive<0, 1>: the network (the result) keeps its builder (pyCore.cpp)
        return network

    def create_builder_config(self) -> Any:
        return self._new("IBuilderConfig")

    def create_optimization_profile(self) -> Any:
        return self._new("IOptimizationProfile")

    def build_serialized_network(self, network: Network, config: BuilderConfig) -> Any:
        problem = self._check(network, config)
        if problem:
            self._error(problem)
            return None
        if config._cache is not None:
            model = hashlib.sha256(network._onnx).hexdigest()[:12]  # a layer of this network: one entry
            config._cache._entries |= {f"{model}/{layer.name}" for layer in network._layers}
        trt = self._trt
        level = config.hardware_compatibility_level if "hardware_compatibility_level" in config._api else None
        payload = {
            "version": trt.__version__,
            "gpu": list(trt._gpu.cc),
            "hardware_compat": None if level is None else level.name,
            "version_compatible": "VERSION_COMPATIBLE" in config._flags,
            "flags": sorted(config._flags),
            "strongly_typed": network._strongly_typed,
            "dla_core": config.DLA_core if config.default_device_type.name == "DLA" else None,
            "on_gpu": config._on_gpu(network) if config.default_device_type.name == "DLA" else None,
            "io": [[t.name, "INPUT", t.dtype.name, list(t._state[1])] for t in network._inputs]
            + [[t.name, "OUTPUT", t.dtype.name, list(t._state[1])] for t in network._outputs],
            "profile": {
                name: [list(s) for s in shapes] for p in config._profiles for name, shapes in p._shapes.items()
            },
            "onnx": base64.b64encode(network._onnx).decode(),
            "constraints": {  # what the build was asked to hold layers to (precision, output types)
                layer.name: {
                    "precision": None if layer._precision is None else layer._precision.name,
                    "outputs": {str(i): t.name for i, t in sorted(layer._output_types.items())},
                }
                for layer in network._layers
                if layer._precision is not None or layer._output_types
            },
        }
        return self._new("IHostMemory", plan_header(trt.__version__) + PLAN_BODY + json.dumps(payload).encode())

    def _check(self, network: Network, config: BuilderConfig) -> str | None:
        if not network._inputs:
            return "Network has no inputs (was the ONNX file parsed?)"
        profiles = {name: shapes for p in config._profiles for name, shapes in p._shapes.items()}
        for tensor in network._inputs:
            shape = tensor._state[1]
            if -1 in shape and tensor.name not in profiles:
                return f"{tensor.name}: dynamic input needs an optimization profile"
            for s in profiles.get(tensor.name, []):
                if len(s) != len(shape) or any(d not in (-1, v) for d, v in zip(shape, s)):
                    return f"{tensor.name}: profile dimensions {s} do not match the network's {shape}"
            low, opt, high = profiles.get(tensor.name, [shape] * 3)
            if not all(a <= b <= c for a, b, c in zip(low, opt, high)):
                return f"{tensor.name}: profile needs min <= opt <= max"
        if {"OBEY_PRECISION_CONSTRAINTS", "PREFER_PRECISION_CONSTRAINTS"} <= config._flags:
            return "set exactly one of OBEY_PRECISION_CONSTRAINTS and PREFER_PRECISION_CONSTRAINTS"
        precision = sorted(config._flags & set(PRECISION_FLAGS))
        if network._strongly_typed and precision:
            return f"precision flags {precision} are not allowed on a strongly typed network"
        ops = {layer._state[1] for layer in network._layers}
        if not network._strongly_typed and "QuantizeLinear" in ops and "INT8" not in config._flags:
            return "the network has Q/DQ layers: set BuilderFlag.INT8 (or build it strongly typed)"
        if config.default_device_type.name == "DLA":
            if not 0 <= config.DLA_core < self._trt._dla_cores:
                return f"DLA core {config.DLA_core} does not exist"
            if any(-1 in t._state[1] for t in network._inputs) and any(s[0] != s[2] for s in profiles.values()):
                return "DLA needs static shapes"
            if "GPU_FALLBACK" not in config._flags and any(not config.can_run_on_DLA(x) for x in network._layers):
                return "a layer cannot run on DLA and GPU_FALLBACK is not set"
        return None


class Runtime(Strict):
    def __init__(self, logger: Any) -> None:
        self._logger = logger
        object.__setattr__(self, "DLA_core", -1)
        if "engine_host_code_allowed" in self._api:
            object.__setattr__(self, "engine_host_code_allowed", False)

    def deserialize_cuda_engine(self, serialized_engine: bytes) -> Any:
        trt, blob = self._trt, bytes(serialized_engine)
        at = blob.find(PLAN_BODY)
        if not blob.startswith(b"ftrt") or at < 0:
            self._error("Serialization assertion failed: magic tag does not match")
            return None
        try:
            plan = json.loads(blob[at + len(PLAN_BODY) :])
        except ValueError:  # a truncated or corrupt engine: deserializeCudaEngine returns nullptr
            self._error("Serialization assertion failed: the engine is truncated or corrupt")
            return None
        built, here = plan["version"].split("."), trt.__version__.split(".")
        if built[:3] != here[:3]:
            newer = [int(x) for x in here[:2]] >= [int(x) for x in built[:2]]
            majors = (int(built[0]), int(here[0]))
            # support matrix 11.4.1: within a major, and across majors only 8 -> 10 and 10 -> 11
            supported = majors[0] == majors[1] or majors in ((8, 10), (10, 11))
            host_code = "engine_host_code_allowed" in self._api and self.engine_host_code_allowed
            if not (plan["version_compatible"] and newer and supported and host_code):
                self._error(f"The engine plan file is not compatible with this version of TensorRT ({plan['version']})")
                return None
        cc = tuple(trt._gpu.cc)
        if plan["hardware_compat"] in (None, "NONE") and list(cc) != plan["gpu"]:
            self._error("The engine plan file is generated on an incompatible device")
            return None
        if plan["hardware_compat"] == "AMPERE_PLUS" and cc < (8, 0):
            self._error("The engine plan file needs an Ampere or newer device")
            return None
        return self._new("ICudaEngine", plan)


class Engine(Strict):
    def __init__(self, plan: dict[str, Any]) -> None:
        self._plan = plan
        self._io = {name: (mode, dtype, tuple(shape)) for name, mode, dtype, shape in plan["io"]}

    num_io_tensors = property(lambda self: len(self._plan["io"]))
    num_optimization_profiles = property(lambda self: 1)

    def get_tensor_name(self, index: int) -> str:
        return str(self._plan["io"][index][0])

    def get_tensor_mode(self, name: str) -> Any:
        return self._trt.TensorIOMode[self._io[name][0]]

    def get_tensor_dtype(self, name: str) -> Any:
        return self._trt.DataType[self._io[name][1]]

    def get_tensor_shape(self, name: str) -> Any:
        return self._new("Dims", self._io[name][2])

    def get_tensor_profile_shape(self, name: str, profile_index: int) -> Any:
        shapes = self._plan["profile"].get(name) or [self._io[name][2]] * 3
        return [self._new("Dims", s) for s in shapes]

    def create_execution_context(self) -> Any:
        return self._new("IExecutionContext", self)


class Context(Strict):
    def __init__(self, engine: Engine) -> None:
        self._engine, self._shapes, self._addresses = engine, {}, {}
        self._calls: list[str] = []

    def set_input_shape(self, name: str, shape: Any) -> bool:
        self._calls.append("set_input_shape")
        low, _, high = self._engine.get_tensor_profile_shape(name, 0)
        shape = tuple(int(d) for d in shape)
        if len(shape) != len(low) or not all(a <= s <= b for a, s, b in zip(low, shape, high)):
            self._error(f"IExecutionContext::setInputShape: {name} {shape} is outside the profile [{low}, {high}]")
            return False
        self._shapes[name] = shape
        return True

    def get_tensor_shape(self, name: str) -> Any:
        mode, _, shape = self._engine._io[name]
        if mode == "INPUT":
            return self._new("Dims", self._shapes.get(name, shape))
        batch = next(iter(self._shapes.values()), (-1,))[0]
        return self._new("Dims", tuple(batch if d < 0 else d for d in shape))

    def set_tensor_address(self, name: str, memory: int) -> bool:
        self._calls.append("set_tensor_address")
        self._addresses[name] = int(memory)
        return True

    def execute_async_v3(self, stream_handle: int) -> bool:
        self._calls.append("execute_async_v3")
        io = self._engine._io
        if set(self._addresses) != set(io) or not all(n in self._shapes for n, v in io.items() if v[0] == "INPUT"):
            self._error("IExecutionContext::enqueueV3: input shapes or tensor addresses not set")
            return False
        gpu, session = self._trt._gpu, _session(self._engine._plan["onnx"])

        def run() -> None:
            feed = {}
            for name, (mode, dtype, _) in io.items():
                if mode == "INPUT":
                    shape = self._shapes[name]
                    count = int(np.prod(shape)) * np.dtype(NUMPY[dtype]).itemsize
                    feed[name] = np.frombuffer(gpu.view(self._addresses[name], count), NUMPY[dtype]).reshape(shape)
            for out, value in zip(session.get_outputs(), session.run(None, feed)):
                raw = np.ascontiguousarray(value, NUMPY[io[out.name][1]]).tobytes()
                gpu.view(self._addresses[out.name], len(raw))[:] = raw

        try:
            gpu.launch_kernel(stream_handle, run)
        except FakeCudaError as exc:  # e.g. a stream whose capture was invalidated
            gpu.last_error = exc.err
        error, gpu.last_error = gpu.last_error, cudaError_t.cudaSuccess  # checked after its launches: a
        if error != cudaError_t.cudaSuccess:  # pending error, its own or one left before, fails the enqueue
            self._error(f"IExecutionContext::enqueueV3: CUDA error {error.name}")
            return False
        return True


@functools.lru_cache(maxsize=8)
def _session(onnx_b64: str) -> Any:
    import onnxruntime

    return onnxruntime.InferenceSession(base64.b64decode(onnx_b64), providers=["CPUExecutionProvider"])


BEHAVIOUR: dict[str, type] = {
    "Dims": Dims,
    "IHostMemory": HostMemory,
    "Logger": Logger,
    "ITensor": Tensor,
    "INetworkDefinition": Network,
    "ParserError": ParserError,
    "OnnxParser": OnnxParser,
    "IOptimizationProfile": OptimizationProfile,
    "ITimingCache": TimingCache,
    "IBuilderConfig": BuilderConfig,
    "Builder": Builder,
    "Runtime": Runtime,
    "ICudaEngine": Engine,
    "IExecutionContext": Context,
}


SERIALIZATION_8_5 = 232  # the serialization version of 8.5.3.1 (NVIDIA/TensorRT#3073), at byte 8 of its plans


def plan_header(version: str) -> bytes:
    """28 bytes: "ftrt", the safe-version word 0 (bytes 4-7) and, from 8.6, the version in bytes 24-27.

    An 8.5 plan has 0 in bytes 4-7 too (NVIDIA/TensorRT#2105: "Current Version: 0"; trtexec takes 0 there
    as the ordinary case), its serialization version at byte 8, and bytes 24-27 that are no version:
    here 40 1f 00 00, which the 8.6+ layout reads as 64.31.0.0."""
    numbers = [int(x) for x in version.split(".")]
    if numbers[:2] < [8, 6]:
        return b"ftrt" + bytes(4) + SERIALIZATION_8_5.to_bytes(4, "little") + bytes(12) + bytes([0x40, 0x1F, 0, 0])
    return b"ftrt" + bytes(20) + bytes(numbers[:4])
