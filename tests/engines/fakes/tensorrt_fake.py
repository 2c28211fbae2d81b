"""Strict fake `tensorrt` modules, one per release, generated from tests/engines/trt_api/trt_<X.Y>.json.

    trt = make_tensorrt("10.3", gpu)        # gpu: the FakeGpu of tests/engines/fakes/cuda_fakes.py
    install_tensorrt(monkeypatch, "10.3", gpu)  # the same, put in sys.modules["tensorrt"]

Every class, enum, member and module name comes from the API data extracted from NVIDIA's
pybind11 sources of that release: a name the release lacks raises AttributeError (as the real
module does), setting an unknown attribute raises AttributeError (pybind11 objects have no
__dict__), a class without `py::init` cannot be constructed, and a member the bindings wrap in
`utils::deprecate*` emits DeprecationWarning. A real name the fake does not model raises `FakeGap`
(so a test never passes by accident through an unmodelled call).

Behaviour the vitc code depends on, modelled from the API documentation (pyCoreDoc.h, NvInfer.h):
- lifetimes: `trt._live` holds (weakly) every Builder, INetworkDefinition, OnnxParser and
  IBuilderConfig still referenced. pybind11's keep_alive is a table of strong references Python's GC
  does not see (tensorrt_objects.PATIENTS): a network keeps its builder (create_network's
  `keep_alive<0, 1>`) and its parser (pyOnnx.cpp's `keep_alive<2, 1>`), so `del parser` frees nothing
  while it lives; on 8.5 the parser also keeps its network (`keep_alive<1, 2>`, dropped in 8.6), a
  cycle nothing frees before the process ends.
- a child process vitc starts (the 8.5 build) imports the same fake (install_tensorrt puts
  tests/engines/fakes/child/ on sys.path and describes it in VITC_TEST_FAKE_TENSORRT); `trt._log`
  is a file both write.
- `create_network(flags)`: bits are `1 << int(NetworkDefinitionCreationFlag.X)`; the ONNX parser
  needs EXPLICIT_BATCH before 10.0; 11.x networks are strongly typed whatever the flags.
- `OnnxParser.parse_from_file` reads the file with `onnx` (errors: num_errors / get_error) and makes
  a layer per initializer and ONNX node, whose precision and output types are checked and recorded
  (tests/engines/fakes/tensorrt_layers.py); the plan records them under "constraints".
- `build_serialized_network` returns None (and logs an error) on failure: a dynamic input without a
  profile, a profile outside the network's static dimensions, precision flags on a strongly typed
  network, Q/DQ in a weakly typed network without INT8, DLA layers without GPU_FALLBACK.
- `set_timing_cache(cache, ignore_mismatch)` returns False for a cache from another TensorRT/GPU;
  `get_timing_cache()` returns None while no cache is set. A cache holds one entry per layer of each
  network built with it; `combine(other, ignore_mismatch)` adds other's entries and returns True, or
  returns False for another TensorRT, or another GPU unless ignore_mismatch (NvInfer.h).
- `Runtime.deserialize_cuda_engine` returns None for a plan of another version (unless it is
  version-compatible, newer-runtime within its major or from 8 to 10 or 10 to 11 (support matrix
  11.4.1), and `engine_host_code_allowed`) or of another GPU.
- `set_input_shape` returns False outside the profile; `execute_async_v3` runs the ONNX file with
  ONNX Runtime on the fake device memory, as a kernel on the given stream, and returns False (with an
  error logged) when its launch fails or the CUDA last error is pending after it (trtexec clears that
  error after a failed capture: sampleInference.cpp, "Ensure any CUDA error has been cleaned up").

The plan layout: bytes 0-3 "ftrt"; from 8.6 on, bytes 4-7 the serialization word 0 and bytes 24-27
the version (what trtexec's printPlanVersion reads, samples/common/sampleEngines.cpp, 9.0+). The
8.5 fake writes what real 8.5 plans hold: 0 at bytes 4-7, its serialization version (232) at byte 8
and bytes 24-27 that are no version but read as 64.31 in the 8.6+ layout (tensorrt_objects.plan_header).
"""

from __future__ import annotations

import enum
import functools
import json
import os
import sys
import tempfile
import weakref
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.engines.fakes.tensorrt_layers import Layer
from tests.engines.fakes.tensorrt_objects import BEHAVIOUR as OBJECTS
from tests.engines.fakes.tensorrt_objects import FakeGap, Strict, StrictMeta

__all__ = ["VERSIONS", "FakeGap", "FakeTensorRT", "install_tensorrt", "make_tensorrt"]

API_DIR = Path(__file__).resolve().parents[1] / "trt_api"
VERSIONS = ("8.5", "8.6", "10.3", "10.16", "11.1")  # JetPack 5, 6.0, 6.1/6.2, newest 10.x, newest 11.x


# TensorRT 8.4 (JetPack 5.0.2), which vitc refuses (vitc.engines.tensorrt.OLDEST_RELEASE): trt_api/ starts at 8.5,
# so its fake is 8.5's API less what release/8.4's bindings lack of the engine and the context, the name-based
# I/O API 8.5 introduced (python/src/infer/pyCore.cpp at 3e345efc, 8.4.3.1, against release/8.5's); its version is
# JetPack 5.0.2's. It exists to show that vitc stops before it uses any of these.
BEFORE_8_5 = {
    "version": "8.4.1.5",
    "classes": {
        "ICudaEngine": (
            *("get_tensor_bytes_per_component", "get_tensor_components_per_element", "get_tensor_dtype"),
            *("get_tensor_format", "get_tensor_format_desc", "get_tensor_location", "get_tensor_mode"),
            *("get_tensor_name", "get_tensor_profile_shape", "get_tensor_shape", "get_tensor_vectorized_dim"),
            *("is_shape_inference_io", "num_io_tensors"),
        ),
        "IExecutionContext": (
            *("execute_async_v3", "get_input_consumed_event", "get_max_output_size", "get_output_allocator"),
            *("get_tensor_address", "get_tensor_shape", "get_tensor_strides", "infer_shapes", "nvtx_verbosity"),
            *("persistent_cache_limit", "set_input_consumed_event", "set_input_shape", "set_output_allocator"),
            *("set_tensor_address", "temporary_allocator"),
        ),
    },
    "enums": ("TensorIOMode",),
}


@functools.lru_cache(maxsize=None)
def load_api(version: str) -> dict[str, Any]:
    if version == "8.4":
        api = json.loads((API_DIR / "trt_8.5.json").read_text())
        api["version"] = BEFORE_8_5["version"]
        for name, members in BEFORE_8_5["classes"].items():
            entry = api["classes"][name]
            entry["members"] = [m for m in entry["members"] if m not in members]
            entry["deprecated"] = [m for m in entry.get("deprecated", ()) if m not in members]
        for name in BEFORE_8_5["enums"]:
            del api["enums"][name]
        return api
    return json.loads((API_DIR / f"trt_{version}.json").read_text())


BEHAVIOUR: dict[str, type] = {**OBJECTS, "ILayer": Layer}


# -- the module ---------------------------------------------------------------------------------------
class FakeTensorRT(ModuleType):
    def __getattr__(self, name: str) -> Any:
        raise AttributeError(f"module 'tensorrt' has no attribute '{name}'")

    def _origin(self) -> list[Any]:
        return [self.__version__, list(self._gpu.cc)]


def _members(api: dict[str, Any], name: str) -> set[str]:
    entry = api["classes"][name]
    out = set(entry["members"])
    for base in entry["bases"]:
        out |= _members(api, base)
    return out


def make_tensorrt(version: str, gpu: Any, dla_cores: int = 0) -> FakeTensorRT:
    """The fake `tensorrt` of release `version` ('10.3'), running its engines on `gpu`."""
    api = load_api(version)
    trt = FakeTensorRT("tensorrt")
    trt.__spec__ = ModuleSpec("tensorrt", None)
    trt.__version__ = api["version"]
    trt._gpu, trt._dla_cores, trt._log, trt._major = gpu, dla_cores, [], int(version.split(".")[0])
    trt._live = weakref.WeakSet()  # the builders, networks, parsers and configs not yet released
    enums = {name: enum.IntEnum(name.split(".")[-1], members) for name, members in api["enums"].items() if members}
    for name in api["classes"]:
        if "." in name:
            continue
        deprecated = set(api["classes"][name].get("deprecated", ()))
        namespace = {
            "_api": frozenset(_members(api, name)),
            "_deprecated": frozenset(deprecated),
            "_trt": trt,
            "__module__": "tensorrt",
            "__qualname__": name,
        }
        cls = StrictMeta(name, (BEHAVIOUR.get(name, Strict),), namespace)
        for enum_name, values in enums.items():  # nested enums and their exported members
            owner, _, short = enum_name.rpartition(".")
            if owner and (owner == name or owner in _bases(api, name)):
                type.__setattr__(cls, short, values)
                for member in values:
                    if member.name in cls._api:
                        type.__setattr__(cls, member.name, member)
        setattr(trt, name, cls)
    for name, values in enums.items():
        if "." not in name:
            setattr(trt, name, values)
    for name in api["module"]:
        if not hasattr(ModuleType, name) and name not in trt.__dict__:
            setattr(trt, name, _gap(name))
    return trt


def _bases(api: dict[str, Any], name: str) -> set[str]:
    out: set[str] = set()
    for base in api["classes"][name]["bases"]:
        out |= {base} | _bases(api, base)
    return out


def _gap(name: str) -> Any:
    def missing(*args: Any, **kwargs: Any) -> Any:
        raise FakeGap(f"the fake does not model tensorrt.{name}")

    return missing


class FileLog(list):  # type: ignore[type-arg]
    """`trt._log` kept in a file: what the fake logs in a child process (vitc builds on 8.5 in one) is in the
    parent's log too."""

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self._path = Path(path)

    def _sync(self) -> None:
        lines = self._path.read_text().splitlines() if self._path.exists() else []
        list.clear(self)
        list.extend(self, (json.loads(line) for line in lines))

    def append(self, message: Any) -> None:
        with open(self._path, "a") as sink:
            sink.write(json.dumps(message) + "\n")

    def __eq__(self, other: object) -> bool:
        self._sync()
        return list.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __len__(self) -> int:
        self._sync()
        return list.__len__(self)

    def __iter__(self) -> Any:
        self._sync()
        return list.__iter__(self)

    def __getitem__(self, index: Any) -> Any:
        self._sync()
        return list.__getitem__(self, index)

    def __repr__(self) -> str:
        self._sync()
        return list.__repr__(self)


CHILD_ENV = "VITC_TEST_FAKE_TENSORRT"  # the fake a child process makes (tests/engines/fakes/child/tensorrt.py)
CHILD_DIR = Path(__file__).resolve().parent / "child"
ROOT = Path(__file__).resolve().parents[3]  # where the child's `import tests.engines.fakes` finds this package


def install_tensorrt(monkeypatch: pytest.MonkeyPatch, version: str, gpu: Any, dla_cores: int = 0) -> FakeTensorRT:
    """Put the fake in sys.modules["tensorrt"] and point vitc's lazy `trt` handles at it; a child process vitc
    starts (the 8.5 build) imports the same release's fake on the same GPU, logging into this one's log."""
    from vitc.build import tensorrt as trt_build
    from vitc.build import trt_precision
    from vitc.engines import tensorrt, trt_runner

    trt = make_tensorrt(version, gpu, dla_cores)
    handle, log = tempfile.mkstemp(prefix="vitc-fake-trt-", suffix=".log")
    os.close(handle)
    weakref.finalize(trt, os.remove, log)
    trt._log = FileLog(log)
    spec = {"version": version, "driver": gpu.driver, "name": gpu.name, "cc": list(gpu.cc), "dla_cores": dla_cores}
    monkeypatch.setenv(CHILD_ENV, json.dumps({**spec, "log": log}))
    monkeypatch.syspath_prepend(str(ROOT))  # not on sys.path where pytest runs as `pytest`, not `python -m pytest`
    monkeypatch.syspath_prepend(str(CHILD_DIR))
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    for module in (tensorrt, trt_build, trt_precision, trt_runner):
        monkeypatch.setattr(module, "trt", trt)
    return trt
