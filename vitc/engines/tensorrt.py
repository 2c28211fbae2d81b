"""TensorRT: which release is installed, whether vitc runs it, and what it offers. One code path for 8.5 → 11.x.

Building plans lives in `vitc.build.tensorrt`, running them in `vitc.engines.trt_runner`, a plan file's header
and whether this machine runs it in `vitc.engines.trt_plan`.

Version branches (see `features` and `precision_plan`; facts from TensorRT's headers per release):
- 8.5 / 8.6 (JetPack 5 / 6.0): networks need the EXPLICIT_BATCH flag; precision-baked graphs are
  built weakly typed with the FP16 (and INT8, for Q/DQ graphs) builder flags, which let TensorRT run
  any layer in FP16, so every layer the graph keeps in float32 is pinned to FP32 under
  OBEY_PRECISION_CONSTRAINTS (`vitc.build.trt_precision`). 8.5 has no builder_optimization_level, no
  hardware_compatibility_level and no version-compatible engines (8.6 added all three). Every
  release from 8.5 on runs named I/O tensors (set_input_shape, set_tensor_address,
  execute_async_v3: release/8.5 pyCore.cpp), the only path vitc uses.
- 10.x (JetPack 6.1/6.2, desktop): precision-baked graphs build as strongly typed networks
  (NetworkDefinitionCreationFlag.STRONGLY_TYPED), no precision flags.
- 11.x: strongly typed only; the precision flags, calibrators and EXPLICIT_BATCH are gone.

docs/tensorrt.md has the whole table and its sources; tests/engines/trt_api/ holds the API of every
release (extracted from NVIDIA's bindings) that the strict fakes in the engine tests are made from.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from vitc._lazy import OPTIONAL, LazyModule
from vitc.artifacts.precision import Precision, parse_precision
from vitc.errors import VitcError

if TYPE_CHECKING:
    import tensorrt as trt
else:
    trt = LazyModule("tensorrt")

HARDWARE_COMPAT = ("none", "ampere+", "same-cc")
# --hardware-compat → HardwareCompatibilityLevel member, looked up only when asked for (SAME_... is 10.9+)
HARDWARE_LEVELS = {"ampere+": "AMPERE_PLUS", "same-cc": "SAME_COMPUTE_CAPABILITY"}


# -- versions --------------------------------------------------------------------------------------
def parse_version(text: str) -> tuple[int, int, int, int]:
    """'10.3.0.26' → (10, 3, 0, 26); missing parts are 0."""
    parts = []
    for piece in str(text).split(".")[:4]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    if not parts or parts[0] == 0:
        raise VitcError(f"cannot read the TensorRT version {text!r}")
    while len(parts) < 4:
        parts.append(0)
    return parts[0], parts[1], parts[2], parts[3]


def version_text(version: tuple[int, ...]) -> str:
    return ".".join(str(v) for v in version)


@dataclass(frozen=True)
class TrtFeatures:
    """What the installed TensorRT offers, decided from its version alone."""

    version: tuple[int, int, int, int]

    @property
    def major_minor(self) -> tuple[int, int]:
        return self.version[0], self.version[1]

    @property
    def explicit_batch_flag(self) -> bool:  # must be passed for ONNX before 10; removed in 11
        return self.version[0] < 10

    @property
    def strongly_typed_flag(self) -> bool:  # exists from 10.0; deprecated and ignored in 11 (always on)
        return self.version[0] == 10

    @property
    def strongly_typed_only(self) -> bool:
        return self.version[0] >= 11

    @property
    def optimization_level(self) -> bool:  # builder_optimization_level: 8.6+
        return self.major_minor >= (8, 6)

    @property
    def hardware_compatibility(self) -> bool:  # AMPERE_PLUS: 8.6+
        return self.major_minor >= (8, 6)

    @property
    def same_compute_capability(self) -> bool:  # HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY: 10.9+
        return self.major_minor >= (10, 9)

    @property
    def version_compatible(self) -> bool:  # BuilderFlag.VERSION_COMPATIBLE: 8.6+
        return self.major_minor >= (8, 6)

    @property
    def frees_its_builder(self) -> bool:  # 8.5's OnnxParser and network keep each other alive (keep_alive<1,2>
        return self.major_minor >= (8, 6)  # and <2,1>, release/8.5 pyOnnx.cpp): a child process builds there


def features(version: str) -> TrtFeatures:
    return TrtFeatures(parse_version(version))


# OBEY, not PREFER: every layer has an FP32 GPU kernel (FP32 is TensorRT's default precision), so OBEY
# fails no build for want of one, while PREFER falls back to FP16 with only a warning (pyCoreDoc.h), the
# overflow the pinning is there to prevent, and the sidecar would record a guarantee that did not hold.
PIN_FLAG = "OBEY_PRECISION_CONSTRAINTS"


# TF32 (BuilderFlag.TF32) is on in a fresh builder config ("Enabled by default", NvInfer.h of 8.5 to 11.1):
# an fp32 plan would then round matmul/conv inputs to 10-bit mantissas on Ampere+ and Orin. vitc is exact
# before fast, so every build clears it, as Polygraphy's CreateConfig does unless tf32=True and trtexec
# with --noTF32; `vitc build --tf32` sets it instead. TF32 is not one of the precision flags a strongly
# typed network refuses: trtexec 10.16 drops --fp16/--int8/--bf16/--fp8/--int4 under --stronglyTyped but
# keeps --noTF32, 11.x (strongly typed only) keeps BuilderFlag.TF32 and clears it for --noTF32, and
# Polygraphy clears it on strongly typed networks too.
TF32_FLAG = "TF32"


@dataclass(frozen=True)
class PrecisionPlan:
    """How a precision-baked ONNX graph is built: network-creation flags, builder flags set and cleared, by
    name, and whether the layers the graph keeps in float32 are pinned to FP32 (weakly typed reduced precision)."""

    network_flags: tuple[str, ...]
    builder_flags: tuple[str, ...]
    strongly_typed: bool
    pin_fp32: bool = False
    cleared_flags: tuple[str, ...] = ()  # on by default in TensorRT, cleared by the build


def precision_plan(feat: TrtFeatures, precision: Precision, tf32: bool = False) -> PrecisionPlan:
    """The flags for an ONNX graph whose precision is baked in (fp32, fp16 via casts, int8 via Q/DQ);
    TF32 is cleared unless `tf32` (then it is a builder flag, recorded as the others)."""
    plan = _precision_flags(feat, precision)
    if tf32:
        return replace(plan, builder_flags=(*plan.builder_flags, TF32_FLAG))
    return replace(plan, cleared_flags=(TF32_FLAG,))


def _precision_flags(feat: TrtFeatures, precision: Precision) -> PrecisionPlan:
    parse_precision(precision)
    network = ["EXPLICIT_BATCH"] if feat.explicit_batch_flag else []
    if feat.strongly_typed_only:  # 11.x: types come from the graph, there is nothing to set
        return PrecisionPlan(tuple(network), (), True)
    if precision == "fp32":  # weakly typed, no precision flag: FP32 kernels (TF32 only with --tf32)
        return PrecisionPlan(tuple(network), (), False)
    if feat.strongly_typed_flag:  # 10.x: strong typing for precision-baked graphs, no precision flags
        return PrecisionPlan((*network, "STRONGLY_TYPED"), (), True)
    # 8.5 / 8.6: weak typing. FP16 (INT8 + FP16 for Q/DQ) lets TensorRT pick FP16 for ANY layer, the
    # float32 LayerNorm, Softmax and head the export kept included: only layers given a precision under
    # OBEY_PRECISION_CONSTRAINTS keep it (NvInfer.h ILayer::setPrecision), so the build pins those.
    flags = ("FP16",) if precision == "fp16" else ("INT8", "FP16")
    return PrecisionPlan(tuple(network), (*flags, PIN_FLAG), False, pin_fp32=True)


def dims(shape: trt.Dims) -> tuple[int, ...]:
    """A TensorRT Dims as a tuple (-1 marks a dynamic dimension)."""
    return tuple(int(shape[i]) for i in range(len(shape)))


# I/O types with an exact numpy twin. BF16, FP8, INT4, FP4 and E8M0 have none: feeding them from
# numpy would cast floats to integers or mis-size the buffers, so they are refused.
NUMPY_DTYPES = {
    "FLOAT": "float32",
    "HALF": "float16",
    "INT8": "int8",
    "INT32": "int32",
    "INT64": "int64",
    "BOOL": "bool",
    "UINT8": "uint8",
}


def numpy_dtype(dtype: trt.DataType, tensor: str = "tensor", source: str = "plan") -> str:
    """numpy dtype name of a TensorRT I/O DataType; a one-line VitcError for types numpy cannot hold."""
    name = str(dtype.name)
    if name not in NUMPY_DTYPES:
        raise VitcError(
            f"{source}: I/O tensor {tensor!r} is {name}; vitc runs fp32/fp16 I/O "
            "(export the model with float32 or float16 inputs and outputs)"
        )
    return NUMPY_DTYPES[name]


NO_SYSTEM_SITE_PACKAGES = (
    "this venv was created without --system-site-packages, where JetPack's TensorRT is: recreate it with "
    "`python3 -m venv --system-site-packages ...`"
)


def tensorrt_remedy() -> str:
    """What makes TensorRT importable here; the one remedy `vitc doctor`, `vitc build` and `vitc bench --engine`
    name. On a Jetson TensorRT comes from JetPack (python3-libnvinfer, in the system Python's dist-packages),
    not from pip: a venv that cannot see those is the usual cause."""
    from vitc.engines.platform import jetson_info, venv_without_system_site_packages

    if jetson_info() is None:
        return OPTIONAL["tensorrt"]
    if venv_without_system_site_packages():
        return NO_SYSTEM_SITE_PACKAGES
    if not sys.base_prefix.startswith("/usr"):  # pyenv, conda: their site-packages are not JetPack's
        return f"JetPack's TensorRT is for the system /usr/bin/python3, not this Python ({sys.base_prefix})"
    return "JetPack's python3-libnvinfer, for the system python3: sudo apt-get install python3-libnvinfer"


def not_installed() -> str:
    """Why TensorRT cannot be used here, as `vitc doctor` says it: installed but failing to import (a libnvinfer
    that does not load: its error), else not installed, with the remedy."""
    from vitc._lazy import broken_text

    broken = tensorrt_broken()
    return broken_text("tensorrt", broken) if broken else f"TensorRT is not installed ({tensorrt_remedy()})"


def tensorrt_broken() -> str | None:
    """The import error of a TensorRT that is installed but fails to import; None otherwise."""
    from vitc._lazy import has_module, import_optional

    return import_optional("tensorrt")[1] if has_module("tensorrt") else None


def tensorrt_available() -> bool:
    """True when a real TensorRT is importable (tensorrt-stubs alone leaves a namespace package)."""
    from vitc._lazy import has_module, import_optional

    return has_module("tensorrt") and hasattr(import_optional("tensorrt")[0], "__version__")


# The distributions that install the `tensorrt` package or the bindings it imports its version from, in the
# order read: `pip install tensorrt` (a meta package from 10.x on), the frontend it pulls in, named for the
# CUDA major (release/10.3 python/packaging/frontend_sdist/setup.py: tensorrt-cu12), then the bindings wheels
# (the module tensorrt_bindings: tensorrt-cuXX-bindings, 8.6's tensorrt-bindings).
TENSORRT_DISTRIBUTIONS = (
    "tensorrt",
    "tensorrt-cu13",
    "tensorrt-cu12",
    "tensorrt-cu11",
    "tensorrt-cu13-bindings",
    "tensorrt-cu12-bindings",
    "tensorrt-cu11-bindings",
    "tensorrt-bindings",
)


def installed_release() -> str | None:
    """The installed TensorRT's version without importing it (its import loads libnvinfer and CUDA): the
    `__version__` line of the tensorrt package (JetPack's python3-libnvinfer, which has no dist-info, and the
    8.x wheels), else of tensorrt_bindings (the 10.x wheels' tensorrt/__init__.py imports its version from
    there), else a TensorRT distribution's metadata (`pip install tensorrt-cu12` has no `tensorrt` one);
    None when there is no tensorrt package (tensorrt-stubs alone has no version either)."""
    from vitc._lazy import has_module

    loaded = sys.modules.get("tensorrt")
    if loaded is not None and hasattr(loaded, "__version__"):  # already imported: what it says
        return str(loaded.__version__)
    if not has_module("tensorrt"):
        return None
    for module in ("tensorrt", "tensorrt_bindings"):
        found = _version_line(module)
        if found:
            return found
    return _distribution_version(TENSORRT_DISTRIBUTIONS)


def _version_line(module: str) -> str | None:
    """The literal `__version__ = "..."` of a top-level package's __init__.py, read, not imported."""
    import importlib.util
    import re

    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    origin = getattr(spec, "origin", None)
    if not origin or not origin.endswith(".py"):
        return None
    try:
        source = Path(origin).read_text(errors="replace")
    except OSError:
        return None
    found = re.search(r"""^__version__\s*=\s*["']([^"']+)["']""", source, re.M)
    return found.group(1) if found else None


def _distribution_version(names: tuple[str, ...]) -> str | None:
    """The version of the first of these distributions installed. Python 3.8's importlib.metadata matches a
    name to its dist-info folder literally (pip writes tensorrt_cu12-10.3.0.dist-info), so both spellings."""
    import importlib.metadata

    for name in names:
        for spelling in dict.fromkeys((name, name.replace("-", "_"))):
            try:
                return importlib.metadata.version(spelling)
            except importlib.metadata.PackageNotFoundError:
                continue
    return None


def installed_version() -> str:
    if not tensorrt_available():
        raise VitcError(not_installed())
    return str(trt.__version__)


# The oldest TensorRT vitc runs. 8.5 introduced the name-based I/O API, the only one the runner uses
# (ICudaEngine.num_io_tensors, get_tensor_name/mode/dtype/shape/profile_shape; IExecutionContext.set_input_shape,
# set_tensor_address, execute_async_v3): release/8.4's bindings (python/src/infer/pyCore.cpp, 8.4.3.1) have none
# of it, only the binding-index API. It is also the oldest release in tests/engines/trt_api/. On a Jetson
# TensorRT comes with JetPack: 5.0.2 (L4T 35.1) ships 8.4.1, 5.1 (L4T 35.2) 8.5.2.
OLDEST_RELEASE = (8, 5)
OLDEST_JETPACK = "5.1"


def too_old(version: str) -> bool:
    """Whether TensorRT `version` predates OLDEST_RELEASE (a version that does not read as one is left to the
    checks that read it)."""
    try:
        return parse_version(version)[:2] < OLDEST_RELEASE
    except VitcError:
        return False


def upgrade_remedy() -> str:
    """How a newer TensorRT comes here: with JetPack on a Jetson (JetPack's TensorRT matches its CUDA), else pip."""
    from vitc.engines.platform import jetson_info

    return "upgrade JetPack" if jetson_info() is not None else "upgrade TensorRT (pip install --upgrade tensorrt)"


def unsupported_release(version: str) -> str | None:
    """Why vitc cannot use TensorRT `version`, in the one line `vitc doctor`, `vitc build` and a plan's runner
    say; None for OLDEST_RELEASE and later. JetPack is named on a Jetson only."""
    from vitc.engines.platform import jetson_info

    if not too_old(version):
        return None
    oldest = f"TensorRT {version_text(OLDEST_RELEASE)} or newer"
    jetson = jetson_info()
    if jetson is None:
        return f"vitc needs {oldest}; this machine has TensorRT {version}: {upgrade_remedy()}"
    known = jetson.get("jetpack") not in (None, "unknown")
    release = f"JetPack {jetson['jetpack']}" if known else f"L4T {jetson.get('l4t')}"
    return (
        f"vitc needs {oldest} (JetPack {OLDEST_JETPACK} or later on a Jetson); this machine has TensorRT {version} "
        f"({release}): {upgrade_remedy()}"
    )


def check_release() -> None:
    """Refuse an installed TensorRT older than OLDEST_RELEASE in one line, before any TensorRT call: its engines
    have no named I/O tensors, and building or running one failed with an AttributeError after minutes of work.
    The version is read without importing TensorRT (`installed_release`); no TensorRT passes."""
    release = installed_release()
    why = unsupported_release(release) if release else None
    if why:
        raise VitcError(why)


__all__ = [
    "PrecisionPlan",
    "TrtFeatures",
    "check_release",
    "features",
    "precision_plan",
]
