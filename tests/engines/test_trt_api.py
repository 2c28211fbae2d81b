"""The TensorRT API data (tests/engines/trt_api/) and the strict fakes made from it.

The extractor is checked on a small pybind11 source with the constructs NVIDIA's bindings use, and
its 10.13 output against tensorrt-stubs 10.13 (an independent source of the same API) when installed.
"""

from __future__ import annotations

import itertools
import json
import re

import pytest

from tests.engines.fakes.tensorrt_fake import API_DIR, VERSIONS, FakeGap, load_api, make_tensorrt
from tests.engines.repair_trt_stubs import stubs_root
from tests.engines.trt_api.extract_trt_api import extract, history, names

SOURCE = """
#if EXPORT_ALL_BINDINGS
void bindCore(py::module& m)
{
    py::class_<ILogger, PyLogger> baseBinding{m, "ILogger", py::module_local()};
    py::enum_<ILogger::Severity>(
        baseBinding, "Severity", py::arithmetic())
        .value("ERROR", ILogger::Severity::kERROR)
        .value("WARNING", ILogger::Severity::kWARNING)
        .export_values();
    baseBinding.def(py::init<>()).def("log", &ILogger::log);
    py::class_<DefaultLogger, ILogger>(m, "Logger")
        .def(py::init<ILogger::Severity>())
        .def_readwrite("min_severity", &DefaultLogger::mMinSeverity);
    py::class_<IExecutionContext>(m, "IExecutionContext") /* .def("in_a_comment") */
        .def("execute_v2", [](IExecutionContext& self) { self.def("in_a_lambda"); return true; })
        .def("set_binding_shape", utils::deprecateMember(&IExecutionContext::setBindingDimensions, "x"), "b"_a)
        .def("get_timing_cache", utils::deprecateMemberInTrtRtxOnly(&IExecutionContext::getX, "y"))
        .def_property_readonly("engine", &IExecutionContext::getEngine); // .def("after_a_comment")
    m.def("get_plugin_registry", &getPluginRegistry);
    m.attr("float32") = DataType::kFLOAT;
}
#endif
#if ENABLE_INETWORK_SERIALIZE
    py::class_<Hidden>(m, "Hidden").def("x", &Hidden::x);
#endif
"""
INIT_PY = """
def volume(iterable):
    pass
IExecutionContext.__enter__ = common_enter
for attr, value in ILogger.Severity.__members__.items():
    setattr(Logger, attr, value)
"""


def test_extractor_reads_the_binding_constructs():
    api = extract({"python/src/infer/pyCore.cpp": SOURCE}, INIT_PY)
    classes = api["classes"]
    assert set(classes) == {"ILogger", "Logger", "IExecutionContext"}
    assert classes["ILogger"]["members"] == ["ERROR", "Severity", "WARNING", "__init__", "log"]
    assert classes["Logger"] == {"bases": ["ILogger"], "members": ["ERROR", "WARNING", "__init__", "min_severity"]}
    context = classes["IExecutionContext"]
    assert context["members"] == ["__enter__", "engine", "execute_v2", "get_timing_cache", "set_binding_shape"]
    assert context["deprecated"] == ["set_binding_shape"]  # the TensorRT-RTX-only wrapper does not count
    assert api["enums"] == {"ILogger.Severity": ["ERROR", "WARNING"]}
    assert {"get_plugin_registry", "float32", "volume", "__version__", "Logger"} <= set(api["module"])


def test_history_names_when_each_name_came_and_went():
    apis = {v: load_api(v) for v in ("8.5", "8.6", "10.8", "10.9", "10.16", "11.1")}
    changed = history(apis)
    assert changed["HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY"] == ["10.9", None]
    assert changed["HardwareCompatibilityLevel"] == ["8.6", None]
    assert changed["IExecutionContext.execute_async_v2"] == ["8.5", "8.6"]
    assert changed["NetworkDefinitionCreationFlag.EXPLICIT_BATCH"] == ["8.5", "10.16"]
    assert changed["BuilderFlag.FP16"] == ["8.5", "10.16"]
    every = set.intersection(*(names(api) for api in apis.values()))
    assert {"IExecutionContext.execute_async_v3", "IExecutionContext.set_input_shape"} <= every  # 8.5 has them
    committed = json.loads((API_DIR / "history.json").read_text())
    assert committed["HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY"] == ["10.9", None]


def test_the_data_agrees_with_tensorrt_stubs():
    """tensorrt-stubs 10.13 (written from the wheel) lists no name that the 10.13 data lacks."""
    root = stubs_root()
    if root is None:
        pytest.skip("tensorrt-stubs is not installed")
    text = (root / "tensorrt_bindings" / "tensorrt.pyi").read_text()
    stub: dict[str, set[str]] = {}
    current = None
    for line in text.splitlines():
        if match := re.match(r"class (\w+)", line):
            current = stub.setdefault(match.group(1), set())
        elif match := re.match(r"    (?:def )?(\w+)\s*[:(=]", line):
            if current is not None:
                current.add(match.group(1))
        elif line and not line.startswith((" ", "@")):
            current = None
    api = load_api("10.13")
    ours = {name.rpartition(".")[2]: set(members) for name, members in api["enums"].items()}
    for name in api["classes"]:
        ours[name] = {n.partition(".")[2] for n in names(api) if n.startswith(name + ".")} | _inherited(api, name)
    assert set(stub) <= set(ours)
    generic = {"Members", "itemsize", "name", "value", "__doc__", "__members__", "__module__", "__annotations__"}
    generic |= {"__hash__", "__int__", "__index__", "__getstate__", "__setstate__", "__eq__", "__ne__", "__repr__"}
    generic |= {"__str__", "__ge__", "__gt__", "__le__", "__lt__", "__buffer__", "__release_buffer__"}
    enums = {name.rpartition(".")[2] for name in api["enums"]}  # pybind11 enums take an int: __init__
    missing = {
        cls: sorted(members - ours[cls] - generic - ({"__init__"} if cls in enums else set()))
        for cls, members in stub.items()
    }
    assert not {cls: m for cls, m in missing.items() if m}


def _inherited(api: dict, name: str) -> set[str]:
    out: set[str] = set()
    for base in api["classes"][name]["bases"]:
        out |= set(api["classes"][base]["members"]) | _inherited(api, base)
    return out


# -- the strict fakes -----------------------------------------------------------------------------------
def test_fake_is_strict_like_the_real_module():
    trt = make_tensorrt("10.3", gpu=None)
    assert trt.__version__ == "10.3.0.26" and trt.BuilderFlag.FP16.name == "FP16"
    with pytest.raises(AttributeError, match="SAME_COMPUTE_CAPABILITY"):
        trt.HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY  # noqa: B018 (10.9+)
    with pytest.raises(AttributeError, match="execute_async_v2"):
        trt.IExecutionContext.execute_async_v2  # noqa: B018 (removed in 10.0)
    with pytest.raises(AttributeError):
        trt.NoSuchThing  # noqa: B018
    with pytest.raises(TypeError, match="No constructor"):
        trt.ICudaEngine()
    with pytest.raises(FakeGap):  # real, but not modelled: a test cannot pass through it by accident
        trt.volume([1, 2])
    config = trt.Builder(trt.Logger(trt.Logger.WARNING)).create_builder_config()
    with pytest.raises(AttributeError):
        config.no_such_option = 1
    with pytest.raises(TypeError, match="incompatible function arguments"):  # std::size_t pool_size
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, -1 << 20)
    with pytest.raises(TypeError, match="incompatible function arguments"):
        config.set_flag(6)  # an int is not a BuilderFlag
    assert config.get_flag(trt.BuilderFlag.TF32)  # "Enabled by default"
    old = make_tensorrt("8.5", gpu=None)
    old_config = old.Builder(old.Logger(old.Logger.WARNING)).create_builder_config()
    with pytest.raises(AttributeError, match="hardware_compatibility_level"):
        old_config.hardware_compatibility_level = None  # 8.6+
    with pytest.warns(DeprecationWarning, match="max_workspace_size"), pytest.raises(FakeGap):
        old_config.max_workspace_size  # noqa: B018 (deprecated in 8.5, gone in 10)
    newest = make_tensorrt("11.1", gpu=None)
    for gone in ("FP16", "INT8"):
        with pytest.raises(AttributeError):
            getattr(newest.BuilderFlag, gone)
    with pytest.raises(AttributeError):
        newest.NetworkDefinitionCreationFlag.EXPLICIT_BATCH  # noqa: B018


@pytest.mark.parametrize("version", VERSIONS)
def test_every_fake_release_loads(version):
    trt = make_tensorrt(version, gpu=None)
    assert trt.__version__.startswith(version + ".") and trt.Logger.WARNING.name == "WARNING"


# -- every release, not only the faked ones ---------------------------------------------------------------
ALL = sorted((p.stem[len("trt_") :] for p in API_DIR.glob("trt_*.json")), key=lambda v: tuple(map(int, v.split("."))))
ADAPTERS = (
    "vitc/engines/tensorrt.py",
    "vitc/build/tensorrt.py",
    "vitc/build/trt_precision.py",
    "vitc/build/trt_timing_cache.py",
    "vitc/engines/trt_runner.py",
)
# What vitc/build/trt_precision.py calls on layers and tensors, where a build pins float32 layers (8.x)
PINNING_MEMBERS = {
    "ILayer": {"name", "type", "num_inputs", "num_outputs", "get_input", "get_output", "precision", "set_output_type"},
    "ITensor": {"name", "dtype"},
}
GATED = {  # names the adapters use only when a feature says the release has them
    "HardwareCompatibilityLevel": "hardware_compatibility",
    "BuilderFlag.VERSION_COMPATIBLE": "version_compatible",
}


@pytest.mark.parametrize("version", ALL)
def test_adapter_names_exist_in_every_release(version):
    """Each `trt.X[.Y]` in the adapters, and each flag name they pick by version, exists in that release."""
    from pathlib import Path

    from vitc.engines import tensorrt as T

    api = load_api(version)
    feat = T.features(api["version"])
    known = names(api) | {n[len("tensorrt.") :] if n.startswith("tensorrt.") else n for n in names(api)}
    known |= {f"{cls}.{member}" for cls in api["classes"] for member in _inherited(api, cls)}
    root = Path(__file__).resolve().parents[2]
    used = {m for path in ADAPTERS for m in re.findall(r"\btrt\.(\w+(?:\.[A-Z]\w*)?)", (root / path).read_text())}
    for name in sorted(used - {"__version__"}):
        gate = GATED.get(name) or GATED.get(name.split(".")[0])
        if gate is None or getattr(feat, gate):
            assert name in known, f"TensorRT {version} has no {name}"
    enums = api["enums"]
    for precision, tf32 in itertools.product(("fp32", "fp16", "int8"), (False, True)):
        plan = T.precision_plan(feat, precision, tf32)
        assert set(plan.network_flags) <= set(enums["NetworkDefinitionCreationFlag"])
        assert set(plan.builder_flags) | set(plan.cleared_flags) <= set(enums["BuilderFlag"])
        assert not plan.cleared_flags or "clear_flag" in api["classes"]["IBuilderConfig"]["members"]
        if plan.pin_fp32:
            from vitc.build.trt_precision import MOVES_DATA, UNPINNED_LAYERS

            for cls, members in PINNING_MEMBERS.items():
                assert members <= set(api["classes"][cls]["members"]) | _inherited(api, cls), f"{version} {cls}"
            assert set(enums["LayerType"]) >= UNPINNED_LAYERS | MOVES_DATA and "FLOAT" in enums["DataType"]
    levels = {"ampere+": feat.hardware_compatibility, "same-cc": feat.same_compute_capability}
    for option, member in T.HARDWARE_LEVELS.items():
        assert levels[option] is (member in enums.get("HardwareCompatibilityLevel", [])), option
    assert feat.optimization_level is ("builder_optimization_level" in api["classes"]["IBuilderConfig"]["members"])
    assert feat.version_compatible is ("engine_host_code_allowed" in api["classes"]["Runtime"]["members"])
    assert feat.strongly_typed_flag <= ("STRONGLY_TYPED" in enums["NetworkDefinitionCreationFlag"])
    assert feat.explicit_batch_flag <= ("EXPLICIT_BATCH" in enums["NetworkDefinitionCreationFlag"])
