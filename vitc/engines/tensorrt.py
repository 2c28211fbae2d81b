"""TensorRT: build a plan from an exported ONNX file, and run plans. One code path for 8.5 → 11.x.

Version branches (see `features` and `precision_plan`; facts from TensorRT's headers per release):
- 8.5 / 8.6 (JetPack 5 / 6.0): networks need the EXPLICIT_BATCH flag; precision-baked graphs get the
  FP16 (and INT8, for Q/DQ graphs) builder flags. 8.5 has no builder_optimization_level, no
  hardware_compatibility_level and no version-compatible engines (8.6 added all three). The 8.5
  runtime path runs through bindings and `execute_async_v2`, which TensorRT 10 removed.
- 10.x (JetPack 6.1/6.2, desktop): precision-baked graphs build as strongly typed networks
  (NetworkDefinitionCreationFlag.STRONGLY_TYPED), no precision flags.
- 11.x: strongly typed only; the precision flags, calibrators and EXPLICIT_BATCH are gone.

Security: a plan is executable content (kernels and, with version-compatible engines, host code).
Load only plans you built or trust; vitc refuses files whose header is not a TensorRT plan, but it
cannot tell a malicious plan from a good one.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vitc.engines.base import BaseRunner, LazyModule, RunnerInfo, TensorMeta
from vitc.engines.manifest import BatchRange, ExportManifest
from vitc.errors import VitcError

if TYPE_CHECKING:
    import tensorrt as trt

    from vitc.engines.cuda import CudaGraph, DeviceBuffer, PinnedArray
else:
    trt = LazyModule("tensorrt")

PLAN_TAG = b"ftrt"  # bytes 0–3 of every serialised engine (0x74727466 little-endian)
PLAN_HEADER_BYTES = 28  # the TensorRT version sits in bytes 24–27 (plans from 8.6 on)
SIDECAR_FORMAT = "vitc.engine"
HARDWARE_COMPAT = ("none", "ampere+", "same-cc")


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
    def precision_flags(self) -> bool:  # BuilderFlag.FP16/INT8: removed in 11
        return self.version[0] < 11

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
    def tensor_execution(self) -> bool:
        """True: set_input_shape/set_tensor_address/execute_async_v3. False (8.5): bindings + execute_async_v2."""
        return self.major_minor >= (8, 6)

    @property
    def plan_header_version(self) -> bool:  # plans carry their version in bytes 24–27 from 8.6
        return self.major_minor >= (8, 6)


def features(version: str) -> TrtFeatures:
    return TrtFeatures(parse_version(version))


@dataclass(frozen=True)
class PrecisionPlan:
    """How a precision-baked ONNX graph is built: network-creation flags and builder flags, by name."""

    network_flags: tuple[str, ...]
    builder_flags: tuple[str, ...]
    strongly_typed: bool


def precision_plan(feat: TrtFeatures, precision: str) -> PrecisionPlan:
    """The flags for an ONNX graph whose precision is baked in (fp32, fp16 via casts, int8 via Q/DQ)."""
    if precision not in ("fp32", "fp16", "int8"):
        raise VitcError(f"unknown precision {precision!r} (fp32, fp16, int8)")
    network = ["EXPLICIT_BATCH"] if feat.explicit_batch_flag else []
    if feat.strongly_typed_only:  # 11.x: types come from the graph, there is nothing to set
        return PrecisionPlan(tuple(network), (), True)
    if precision == "fp32":  # weakly typed: TF32 stays allowed, as TensorRT's default
        return PrecisionPlan(tuple(network), (), False)
    if feat.strongly_typed_flag:  # 10.x: strong typing for precision-baked graphs, no precision flags
        return PrecisionPlan((*network, "STRONGLY_TYPED"), (), True)
    # 8.5 / 8.6: weak typing; the flags allow the reduced-precision kernels the graph asks for
    flags = ("FP16",) if precision == "fp16" else ("INT8", "FP16")
    return PrecisionPlan(tuple(network), flags, False)


def dims(shape: trt.Dims) -> tuple[int, ...]:
    """A TensorRT Dims as a tuple (-1 marks a dynamic dimension)."""
    return tuple(int(shape[i]) for i in range(len(shape)))


NUMPY_DTYPES = {
    "FLOAT": "float32",
    "HALF": "float16",
    "INT8": "int8",
    "INT32": "int32",
    "INT64": "int64",
    "BOOL": "bool",
    "UINT8": "uint8",
    "FP8": "uint8",
    "BF16": "uint16",
}


def numpy_dtype(dtype: trt.DataType) -> str:
    """numpy dtype name of a TensorRT DataType (BF16/FP8 travel as raw 16/8-bit words)."""
    return NUMPY_DTYPES.get(str(dtype.name), "float32")


NOT_INSTALLED = "TensorRT is not installed (pip install tensorrt on a desktop GPU; JetPack ships it on Jetson)"


def tensorrt_available() -> bool:
    """True when a real TensorRT is importable (tensorrt-stubs alone leaves a namespace package)."""
    import importlib

    from vitc._lazy import has_module

    if not has_module("tensorrt"):
        return False
    try:
        return hasattr(importlib.import_module("tensorrt"), "__version__")
    except ImportError:
        return False


def installed_version() -> str:
    if not tensorrt_available():
        raise VitcError(NOT_INSTALLED)
    return str(trt.__version__)


# -- plan header and compatibility -----------------------------------------------------------------
@dataclass(frozen=True)
class PlanHeader:
    serialization: int
    version: tuple[int, int, int, int] | None  # None for plans from before 8.6 (no version bytes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "tag": PLAN_TAG.decode(),
            "serialization": self.serialization,
            "tensorrt": None if self.version is None else version_text(self.version),
        }


def parse_plan_header(data: bytes, source: str = "plan") -> PlanHeader:
    """Read the tag and TensorRT version of a serialised engine without deserialising it."""
    if len(data) < 4:
        raise VitcError(f"{source}: not a TensorRT plan (only {len(data)} bytes)")
    if data[:4] != PLAN_TAG:
        raise VitcError(f"{source}: not a TensorRT plan (header tag {data[:4]!r}, expected {PLAN_TAG!r})")
    if len(data) < PLAN_HEADER_BYTES:
        raise VitcError(f"{source}: truncated TensorRT plan ({len(data)} bytes, the header needs {PLAN_HEADER_BYTES})")
    serialization = int.from_bytes(data[4:8], "little")
    major, minor, patch, build = data[24], data[25], data[26], data[27]
    version = (major, minor, patch, build) if major >= 8 else None
    return PlanHeader(serialization, version)


def read_plan_header(path: str | os.PathLike[str]) -> PlanHeader:
    path = Path(path)
    if not path.is_file():
        raise VitcError(f"{path}: no such file")
    with open(path, "rb") as handle:
        return parse_plan_header(handle.read(PLAN_HEADER_BYTES), str(path))


def sidecar_path(plan: str | os.PathLike[str]) -> Path:
    plan = Path(plan)
    return plan.with_name(plan.name + ".json")


def load_sidecar(plan: str | os.PathLike[str]) -> dict[str, Any] | None:
    path = sidecar_path(plan)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise VitcError(f"{path}: the engine sidecar is not valid JSON ({exc})") from exc
    if not isinstance(record, dict) or record.get("format") != SIDECAR_FORMAT:
        raise VitcError(f"{path}: not a vitc engine sidecar")
    return record


def check_plan_compat(
    header: PlanHeader,
    installed: str,
    sidecar: dict[str, Any] | None = None,
    gpu: dict[str, str] | None = None,
    source: str = "plan",
) -> list[str]:
    """Raise a one-line VitcError when this machine cannot run the plan; return softer warnings."""
    warnings: list[str] = []
    here = parse_version(installed)
    built: tuple[int, int, int, int] | None = header.version
    if built is None and sidecar and sidecar.get("tensorrt"):
        built = parse_version(str(sidecar["tensorrt"]))
    version_compatible = bool(sidecar and sidecar.get("options", {}).get("version_compatible"))
    if built is None:
        warnings.append(f"{source}: the plan predates TensorRT 8.6 and has no sidecar; its version is unknown")
    elif version_compatible:
        if here[:2] < built[:2]:
            raise VitcError(
                f"{source}: built with TensorRT {version_text(built)} (version-compatible), "
                f"this machine has the older {version_text(here)}; rebuild it here with `vitc build`"
            )
    elif built[:3] != here[:3] or (built[3] and here[3] and built[3] != here[3]):
        raise VitcError(
            f"{source}: built with TensorRT {version_text(built)}, this machine has {version_text(here)}; "
            "plans only run on the TensorRT that built them: rebuild it here with `vitc build`"
        )
    if sidecar and gpu and sidecar.get("gpu"):
        want = sidecar["gpu"]
        level = str(sidecar.get("options", {}).get("hardware_compat", "none"))
        want_cc, have_cc = str(want.get("compute_capability")), str(gpu.get("compute_capability"))
        if level == "ampere+":
            if _cc(have_cc) < (8, 0):
                raise VitcError(
                    f"{source}: built for Ampere and newer GPUs; this GPU ({gpu.get('name')}) is sm_{have_cc}"
                )
        elif want_cc != have_cc:
            raise VitcError(
                f"{source}: built on {want.get('name')} (compute capability {want_cc}); this GPU is "
                f"{gpu.get('name')} ({have_cc}): rebuild it here with `vitc build`"
            )
        elif level == "none" and want.get("name") != gpu.get("name"):
            warnings.append(
                f"{source}: built on {want.get('name')}, running on {gpu.get('name')} (same compute capability)"
            )
    return warnings


def _cc(text: str) -> tuple[int, int]:
    try:
        major, minor = text.split(".")
        return int(major), int(minor)
    except ValueError:
        return (0, 0)


# -- build ------------------------------------------------------------------------------------------
@dataclass
class BuildOptions:
    onnx: Path
    output: Path
    precision: str = "fp32"
    batch: BatchRange | None = None  # overrides the manifest's range
    workspace_mb: int | None = None
    opt_level: int | None = None
    dla_core: int | None = None
    timing_cache: Path | None = None
    version_compatible: bool = False
    hardware_compat: str = "none"
    manifest: ExportManifest | None = None
    check: bool = True

    def options_record(self) -> dict[str, Any]:
        return {
            "workspace_mb": self.workspace_mb,
            "opt_level": self.opt_level,
            "dla_core": self.dla_core,
            "timing_cache": None if self.timing_cache is None else str(self.timing_cache),
            "version_compatible": self.version_compatible,
            "hardware_compat": self.hardware_compat,
        }


@dataclass(frozen=True)
class Profile:
    input_name: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"input": self.input_name, "min": list(self.min), "opt": list(self.opt), "max": list(self.max)}


def make_profile(
    input_name: str,
    network_shape: tuple[int, ...],
    manifest: ExportManifest | None,
    override: BatchRange | None,
) -> Profile:
    """Min/opt/max input shapes from the ONNX input (-1 = dynamic), the manifest's batch range and --batch."""
    if len(network_shape) != 4:
        raise VitcError(f"input {input_name!r} has shape {network_shape}; vitc builds N×C×H×W image models")
    chw = list(network_shape[1:])
    if any(d < 0 for d in chw):
        if manifest is None:
            raise VitcError(f"input {input_name!r} has dynamic C/H/W {chw} and there is no manifest to fix them")
        chw = [d if d >= 0 else manifest.input_size[i] for i, d in enumerate(chw)]
    batch = override or (manifest.batch if manifest is not None else None)
    if network_shape[0] >= 0:  # static batch in the graph: the profile must be exactly it
        fixed = network_shape[0]
        if (override is not None and not override.static) or (override is not None and override.min != fixed):
            raise VitcError(f"the ONNX graph has a static batch of {fixed}; --batch {override} cannot change it")
        batch = BatchRange(fixed, fixed, fixed)
    if batch is None:
        batch = BatchRange(1, 1, 1)
    return Profile(
        input_name,
        (batch.min, *chw),
        (batch.opt, *chw),
        (batch.max, *chw),
    )


def default_timing_cache(output: Path, version: str) -> Path:
    """engines/timing-trt<version>.cache: one per TensorRT version, shared by every build in engines/."""
    return output.parent / f"timing-trt{version}.cache"


@dataclass
class BuildResult:
    plan: Path
    sidecar: dict[str, Any]
    dla_fallback: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def make_sidecar(
    *,
    trt_version: str,
    gpu: dict[str, str] | None,
    jetson: dict[str, str] | None,
    precision: str,
    plan: PrecisionPlan,
    profile: Profile,
    onnx_path: Path,
    onnx_sha256: str,
    manifest: ExportManifest | None,
    build_seconds: float,
    options: dict[str, Any],
    dla_fallback: list[str],
    engine_drift: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON written next to a plan: what built it, where it runs, and how accurate it is."""
    return {
        "format": SIDECAR_FORMAT,
        "version": 1,
        "tensorrt": trt_version,
        "gpu": gpu,
        "jetson": jetson,
        "precision": precision,
        "strongly_typed": plan.strongly_typed,
        "network_flags": list(plan.network_flags),
        "builder_flags": list(plan.builder_flags),
        "profile": profile.to_dict(),
        "onnx": {"path": str(onnx_path), "sha256": onnx_sha256},
        "model": manifest.model if manifest else None,
        "input_name": profile.input_name,
        "output_name": manifest.output_name if manifest else None,
        "io_dtype": manifest.io_dtype if manifest else None,
        "mean": list(manifest.mean) if manifest else None,
        "std": list(manifest.std) if manifest else None,
        "class_names": manifest.class_names if manifest else None,
        "export_drift": manifest.drift if manifest else None,
        "engine_drift": engine_drift,
        "build_seconds": round(build_seconds, 3),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "options": options,
        "dla_fallback_layers": dla_fallback,
    }


def _parser_errors(parser: trt.OnnxParser) -> list[str]:
    errors = []
    for i in range(parser.num_errors):
        error = parser.get_error(i)
        errors.append(str(error).strip().replace("\n", " "))
    return errors


def build_engine(opts: BuildOptions) -> BuildResult:
    """Parse the ONNX file, configure the builder for this TensorRT, build, write plan + sidecar."""
    from vitc._io import atomic_write, sha256_file, write_json
    from vitc.engines.platform import jetson_info

    if not opts.onnx.is_file():
        raise VitcError(f"{opts.onnx}: no such file")
    if opts.hardware_compat not in HARDWARE_COMPAT:
        raise VitcError(f"--hardware-compat must be one of {', '.join(HARDWARE_COMPAT)}, got {opts.hardware_compat!r}")
    version = installed_version()
    feat = features(version)
    plan_flags = precision_plan(feat, opts.precision)
    warnings: list[str] = []
    started = time.perf_counter()

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network_flags = 0
    for name in plan_flags.network_flags:
        network_flags |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
    network = builder.create_network(network_flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(opts.onnx)):
        errors = _parser_errors(parser)
        raise VitcError(f"{opts.onnx}: TensorRT {version} cannot parse it ({len(errors)} errors): " + "; ".join(errors))

    config = builder.create_builder_config()
    for name in plan_flags.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    if opts.workspace_mb is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(opts.workspace_mb) << 20)
    _apply_compat_options(config, feat, opts, version)

    tensor = network.get_input(0)
    profile = make_profile(tensor.name, dims(tensor.shape), opts.manifest, opts.batch)
    if any(d < 0 for d in dims(tensor.shape)):
        optimisation = builder.create_optimization_profile()
        optimisation.set_shape(
            profile.input_name, trt.Dims(list(profile.min)), trt.Dims(list(profile.opt)), trt.Dims(list(profile.max))
        )
        config.add_optimization_profile(optimisation)

    dla_fallback = _configure_dla(builder, network, config, opts, profile) if opts.dla_core is not None else []

    cache_path = opts.timing_cache or default_timing_cache(opts.output, version)
    previous = cache_path.read_bytes() if cache_path.is_file() else b""
    cache = config.create_timing_cache(previous)
    if not config.set_timing_cache(cache, False):
        warnings.append(f"{cache_path}: the timing cache does not match this TensorRT/GPU and was not used")

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise VitcError(f"{opts.onnx}: TensorRT {version} could not build an engine (see its log above)")
    seconds = time.perf_counter() - started
    with atomic_write(opts.output) as tmp:
        tmp.write_bytes(bytes(serialized))
    with atomic_write(cache_path) as tmp:
        tmp.write_bytes(bytes(config.get_timing_cache().serialize()))

    from vitc.engines.cuda import Cuda

    options = opts.options_record()
    options["timing_cache"] = str(cache_path)
    sidecar = make_sidecar(
        trt_version=version,
        gpu=Cuda().device_properties(),
        jetson=jetson_info(),
        precision=opts.precision,
        plan=plan_flags,
        profile=profile,
        onnx_path=opts.onnx,
        onnx_sha256=sha256_file(opts.onnx),
        manifest=opts.manifest,
        build_seconds=seconds,
        options=options,
        dla_fallback=dla_fallback,
    )
    if (
        opts.manifest is not None
        and opts.manifest.onnx_sha256
        and opts.manifest.onnx_sha256 != sidecar["onnx"]["sha256"]
    ):
        warnings.append(f"{opts.onnx}: its sha256 differs from the manifest's; the export folder was modified")
    write_json(sidecar_path(opts.output), sidecar)
    if opts.check and opts.manifest is not None and opts.manifest.heldout_path is not None:
        sidecar["engine_drift"] = engine_drift(opts.output, opts.manifest.heldout_path)
        write_json(sidecar_path(opts.output), sidecar)
    return BuildResult(opts.output, sidecar, dla_fallback, warnings)


def _apply_compat_options(config: trt.IBuilderConfig, feat: TrtFeatures, opts: BuildOptions, version: str) -> None:
    if opts.opt_level is not None:
        if not feat.optimization_level:
            raise VitcError(f"--opt-level needs TensorRT 8.6 or newer (this is {version})")
        config.builder_optimization_level = int(opts.opt_level)
    if opts.version_compatible:
        if not feat.version_compatible:
            raise VitcError(f"--version-compatible needs TensorRT 8.6 or newer (this is {version})")
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    if opts.hardware_compat != "none":
        if not feat.hardware_compatibility:
            raise VitcError(f"--hardware-compat needs TensorRT 8.6 or newer (this is {version})")
        if opts.hardware_compat == "same-cc" and not feat.same_compute_capability:
            raise VitcError(f"--hardware-compat same-cc needs TensorRT 10.9 or newer (this is {version})")
        level = {
            "ampere+": trt.HardwareCompatibilityLevel.AMPERE_PLUS,
            "same-cc": trt.HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY,
        }[opts.hardware_compat]
        config.hardware_compatibility_level = level


def _configure_dla(
    builder: trt.Builder,
    network: trt.INetworkDefinition,
    config: trt.IBuilderConfig,
    opts: BuildOptions,
    profile: Profile,
) -> list[str]:
    """Put the network on DLA core N with GPU fallback; return the layers that fall back to the GPU."""
    cores = int(builder.num_DLA_cores)
    core = int(opts.dla_core or 0)
    if cores == 0:
        raise VitcError("--dla: this machine has no DLA cores (DLA exists on Jetson AGX/NX Orin and Xavier)")
    if not 0 <= core < cores:
        raise VitcError(f"--dla {core}: this machine has DLA cores 0..{cores - 1}")
    if profile.min != profile.max:
        raise VitcError(
            f"--dla needs a static batch (min = opt = max), got {profile.min[0]}:{profile.opt[0]}:{profile.max[0]}"
        )
    if opts.precision == "fp32":
        raise VitcError("--dla runs FP16 or INT8 only: build the fp16 or int8 export")
    config.default_device_type = trt.DeviceType.DLA
    config.DLA_core = core
    config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    fallback = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if not config.can_run_on_DLA(layer) or config.get_device_type(layer) != trt.DeviceType.DLA:
            fallback.append(layer.name)
    return fallback


def engine_drift(plan: Path, heldout_path: Path) -> dict[str, Any]:
    """The post-build check: the export's held-out set through the engine vs the reference logits."""
    from vitc.bench.runner import accuracy
    from vitc.engines.manifest import load_heldout

    with TensorRTRunner(plan) as runner:
        return accuracy(runner, load_heldout(heldout_path)).to_dict()


# -- runtime ------------------------------------------------------------------------------------------
@dataclass
class _Tensor:
    meta: TensorMeta
    index: int
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
    ) -> None:
        self.path = Path(path)
        super().__init__(name or self.path.name)
        self.cuda_graph = cuda_graph
        self.dla_core = dla_core
        self.sidecar: dict[str, Any] | None = None
        self.warnings: list[str] = []
        self._tensors: list[_Tensor] = []
        self._engine: trt.ICudaEngine | None = None
        self._context: trt.IExecutionContext | None = None
        self._runtime: trt.Runtime | None = None
        self._feat: TrtFeatures | None = None
        self._graph: CudaGraph | None = None
        self._graph_shapes: tuple[tuple[int, ...], ...] | None = None
        self._warm_shapes: tuple[tuple[int, ...], ...] | None = None
        self._cuda: Any = None
        self._stream: Any = None
        self._events: Any = None

    def activate_impl(self) -> None:
        from vitc.engines.cuda import Cuda

        header = read_plan_header(self.path)  # refuse non-plans before TensorRT sees a byte
        self.sidecar = load_sidecar(self.path)
        version = installed_version()
        self._feat = features(version)
        self._cuda = Cuda()
        gpu = self._cuda.device_properties()
        self.warnings = check_plan_compat(header, version, self.sidecar, gpu, str(self.path))
        logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(logger)
        dla = self.dla_core if self.dla_core is not None else (self.sidecar or {}).get("options", {}).get("dla_core")
        if dla is not None:
            self._runtime.DLA_core = int(dla)
        if (self.sidecar or {}).get("options", {}).get("version_compatible"):
            self._runtime.engine_host_code_allowed = True  # version-compatible plans embed a lean runtime
        engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if engine is None:
            raise VitcError(f"{self.path}: TensorRT {version} could not deserialise the plan (see its log above)")
        self._engine = engine
        context = engine.create_execution_context()
        if context is None:
            raise VitcError(f"{self.path}: TensorRT could not create an execution context (out of GPU memory?)")
        self._context = context
        self._tensors = []
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            dtype = numpy_dtype(engine.get_tensor_dtype(name))
            shape = tuple(None if d < 0 else d for d in dims(engine.get_tensor_shape(name)))
            profile = None
            if is_input and None in shape:
                low, opt, high = engine.get_tensor_profile_shape(name, 0)
                profile = (dims(low), dims(opt), dims(high))
            self._tensors.append(_Tensor(TensorMeta(name, shape, dtype), i, is_input, profile))
        self._stream = self._cuda.stream()
        self._events = (self._cuda.event(), self._cuda.event())

    def supports_batch(self, batch: int) -> bool:
        for tensor in self._tensors:
            if tensor.is_input and tensor.profile is not None:
                if not tensor.profile[0][0] <= batch <= tensor.profile[2][0]:
                    return False
            elif tensor.is_input and tensor.meta.static_batch not in (None, batch):
                return False
        return True

    def _ensure(self, tensor: _Tensor, nbytes: int, shape: tuple[int, ...]) -> None:
        if tensor.capacity < nbytes:
            self._free(tensor)
            tensor.device = self._cuda.malloc(nbytes)
            tensor.host = self._cuda.pinned(
                (max(nbytes // np.dtype(tensor.meta.dtype).itemsize, 1),), tensor.meta.dtype
            )
            tensor.capacity = nbytes
            self._drop_graph()

    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        assert self._context is not None and self._feat is not None
        context = self._context
        shapes = []
        for tensor in self._tensors:
            if not tensor.is_input:
                continue
            array = np.ascontiguousarray(feed[tensor.meta.name], dtype=tensor.meta.dtype)
            shapes.append(array.shape)
            if self._feat.tensor_execution:
                if not context.set_input_shape(tensor.meta.name, array.shape):
                    raise VitcError(f"{self.path}: input shape {array.shape} is outside the engine's profile")
            else:
                # TensorRT 8.5: binding shapes (set_binding_shape was removed in TensorRT 10).
                context.set_binding_shape(tensor.index, array.shape)  # type: ignore[attr-defined]
            self._ensure(tensor, array.nbytes, array.shape)
            assert tensor.host is not None and tensor.device is not None
            tensor.host.array[: array.size] = array.ravel()
            self._stream.htod(tensor.device, tensor.host, array.nbytes)
        out_shapes: dict[str, tuple[int, ...]] = {}
        for tensor in self._tensors:
            if tensor.is_input:
                continue
            if self._feat.tensor_execution:
                shape = dims(context.get_tensor_shape(tensor.meta.name))
            else:
                shape = dims(context.get_binding_shape(tensor.index))  # type: ignore[attr-defined]  # 8.5 only
            out_shapes[tensor.meta.name] = shape
            self._ensure(tensor, int(np.prod(shape)) * np.dtype(tensor.meta.dtype).itemsize, shape)
        start, end = self._events
        start.record(self._stream)
        self._execute(tuple(shapes))
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

    def _execute(self, shapes: tuple[tuple[int, ...], ...]) -> None:
        assert self._context is not None and self._feat is not None
        context = self._context
        if not self._feat.tensor_execution:
            # TensorRT 8.5 branch: pointer list in binding order + execute_async_v2. TensorRT 10 removed
            # execute_async_v2, so the 10.x stubs do not know it: the ignore is deliberate.
            bindings = [int(t.device.ptr) if t.device is not None else 0 for t in self._tensors]
            ok = context.execute_async_v2(bindings, self._stream.handle)  # type: ignore[attr-defined]
        else:
            for tensor in self._tensors:
                assert tensor.device is not None
                context.set_tensor_address(tensor.meta.name, tensor.device.ptr)
            if self.cuda_graph and self._warm_shapes == shapes:
                self._launch_graph(shapes)
                return
            ok = context.execute_async_v3(self._stream.handle)
            self._warm_shapes = shapes  # TensorRT needs one plain launch per shape before a capture
        if not ok:
            raise VitcError(f"{self.path}: TensorRT failed to enqueue the inference")

    def _launch_graph(self, shapes: tuple[tuple[int, ...], ...]) -> None:
        from vitc.engines.cuda import CudaGraph

        assert self._context is not None
        if self._graph is None or self._graph_shapes != shapes:
            self._drop_graph()
            graph = CudaGraph(self._stream)
            graph.begin()
            self._context.execute_async_v3(self._stream.handle)
            graph.end()
            self._graph, self._graph_shapes = graph, shapes
        assert self._graph is not None
        self._graph.launch()

    def _drop_graph(self) -> None:
        if self._graph is not None:
            self._graph.destroy()
        self._graph = None
        self._graph_shapes = None

    def _free(self, tensor: _Tensor) -> None:
        if tensor.device is not None:
            tensor.device.free()
        if tensor.host is not None:
            tensor.host.free()
        tensor.device = tensor.host = None
        tensor.capacity = 0

    def deactivate_impl(self) -> None:
        self._drop_graph()
        for tensor in self._tensors:
            self._free(tensor)
        if self._events is not None:
            for event in self._events:
                event.destroy()
        if self._stream is not None:
            self._stream.destroy()
        self._context = None
        self._engine = None
        self._runtime = None

    def get_input_metadata(self) -> list[TensorMeta]:
        return [t.meta for t in self._tensors if t.is_input]

    def get_output_metadata(self) -> list[TensorMeta]:
        return [t.meta for t in self._tensors if not t.is_input]

    def info(self) -> RunnerInfo:
        sidecar = self.sidecar or {}
        return RunnerInfo(
            backend=self.backend,
            device="dla" if sidecar.get("options", {}).get("dla_core") is not None else "cuda",
            precision=str(sidecar.get("precision", "?")),
            detail={
                "tensorrt": installed_version() if self._feat else None,
                "cuda_graph": self.cuda_graph,
                "gpu": sidecar.get("gpu"),
                "times": "e2e includes H2D/D2H copies; gpu = CUDA events around the launch",
            },
        )


def plan_summary(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Header and sidecar of a plan, for `vitc info` (no TensorRT needed)."""
    header = read_plan_header(path)
    return {"header": header.to_dict(), "size_bytes": Path(path).stat().st_size, "sidecar": load_sidecar(path)}


__all__ = [
    "BuildOptions",
    "PlanHeader",
    "PrecisionPlan",
    "Profile",
    "TensorRTRunner",
    "TrtFeatures",
    "asdict",
    "build_engine",
    "check_plan_compat",
    "features",
    "make_profile",
    "make_sidecar",
    "parse_plan_header",
    "precision_plan",
]
