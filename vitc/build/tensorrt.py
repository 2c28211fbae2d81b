"""TensorRT: build a plan (plus its JSON sidecar) from an exported ONNX file, for TensorRT 8.5 → 11.x.

The version branches (which network and builder flags each release takes) are decided in
`vitc.engines.tensorrt` (`features`, `precision_plan`); this module applies them to the builder. What a
build is asked for (`BuildOptions`, the input `Profile`) is `vitc.build.options`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vitc._lazy import LazyModule
from vitc.artifacts import ExportManifest, Heldout, Precision
from vitc.artifacts.eval_report import RemovedReports, remove_stale_reports
from vitc.artifacts.manifest import export_target
from vitc.artifacts.sidecar import EngineSidecar, plan_record, sidecar_path
from vitc.build.options import BuildOptions, Profile, make_profile, resolve_options
from vitc.build.trt_child import run_in_child
from vitc.build.trt_precision import check_graph_precision, pin_fp32_layers
from vitc.build.trt_timing_cache import attach_timing_cache, save_timing_cache
from vitc.engines.tensorrt import (
    HARDWARE_COMPAT,
    HARDWARE_LEVELS,
    PrecisionPlan,
    TrtFeatures,
    dims,
    features,
    precision_plan,
)
from vitc.engines.trt_runner import TensorRTRunner, open_engine_machine
from vitc.errors import VitcError

if TYPE_CHECKING:
    import tensorrt as trt
else:
    trt = LazyModule("tensorrt")


# builder_optimization_level: "Valid values include integers from 0 to the maximum optimization level, which
# is currently 5. Setting it to greater than the maximum level results in behavior identical to the maximum
# level" (NvInfer.h, 8.6 to 11.1), so 9 built at 5 while the sidecar said 9.
MAX_OPT_LEVEL = 5


def default_timing_cache(output: Path, version: str) -> Path:
    """engines/timing-trt<version>.cache: one per TensorRT version, shared by every build in engines/."""
    return output.parent / f"timing-trt{version}.cache"


@dataclass
class BuildResult:
    plan: Path
    sidecar: EngineSidecar
    dla_fallback: list[str] = field(default_factory=list)  # every layer of a --dla build that runs on the GPU
    warnings: list[str] = field(default_factory=list)
    dla_pinned: list[str] = field(default_factory=list)  # those of them pinned to FP32 (8.5/8.6), which DLA cannot run
    removed_reports: RemovedReports | None = None  # what build_engine removed of eval's reports of the plan it replaced


def make_sidecar(
    *,
    trt_version: str,
    gpu: dict[str, str] | None,
    jetson: dict[str, str] | None,
    precision: Precision,
    plan: PrecisionPlan,
    profile: Profile,
    onnx_path: Path,
    onnx_sha256: str,
    manifest: ExportManifest | None,
    build_seconds: float,
    options: dict[str, Any],
    dla_fallback: list[str],
    engine_drift: dict[str, Any] | None = None,
    plan_record: dict[str, Any] | None = None,
    fp32_layers: int | None = None,
) -> EngineSidecar:
    """The record written next to a plan (vitc.artifacts.sidecar): what built it, where it runs, how accurate it is."""
    return EngineSidecar(
        tensorrt=trt_version,
        gpu=gpu,
        jetson=jetson,
        precision=precision,
        strongly_typed=plan.strongly_typed,
        network_flags=list(plan.network_flags),
        builder_flags=list(plan.builder_flags),
        fp32_layers=fp32_layers,
        profile=profile.to_dict(),
        onnx={"path": str(onnx_path), "sha256": onnx_sha256},
        model=manifest.model if manifest else None,
        input_name=profile.input_name,
        output_name=manifest.output_name if manifest else None,
        io_dtype=manifest.io_dtype if manifest else None,
        mean=list(manifest.mean) if manifest else None,
        std=list(manifest.std) if manifest else None,
        class_names=manifest.class_names if manifest else None,
        export_drift=manifest.drift if manifest else None,
        engine_drift=engine_drift,
        build_seconds=round(build_seconds, 3),
        built_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        options=options,
        dla_fallback_layers=dla_fallback,
        plan=plan_record,  # the plan this sidecar describes (a sidecar copied beside another plan is refused)
        preprocess=manifest.preprocess if manifest else None,  # `vitc predict` on the plan alone
    )


def _parser_errors(parser: trt.OnnxParser) -> list[str]:
    errors = []
    for i in range(parser.num_errors):
        error = parser.get_error(i)
        errors.append(str(error).strip().replace("\n", " "))
    return errors


def build_engine(opts: BuildOptions) -> BuildResult:
    """Check the machine and inputs, parse the ONNX file, build, check the engine, then write plan + sidecar.

    The options' defaults (the manifest, the precision, the plan path) are decided by `resolve_options`,
    as for `vitc build`: `build_engine(BuildOptions(onnx=Path("export/run/model.int8.onnx")))` writes
    engines/run.int8.plan, checked on the export's held-out set, as `vitc build` on that file does.

    The steps are Polygraphy's loaders, named alike: `_preflight`, `_parse` (NetworkFromOnnxPath),
    `_configure` (CreateConfig), `_engine_bytes` (EngineBytesFromNetwork, with its timing cache) and
    `_save_engine` (SaveEngine, after the drift check). Everything the build needs (TensorRT, CUDA
    bindings, a GPU, the held-out set, a writable output folder) is checked before parsing, so minutes
    of building never end in a missing piece; a failure leaves the files of an earlier build as they were.

    A plan already at the path is replaced, as torch.save and Polygraphy's SaveEngine replace their file
    (`vitc build` asks for --force first), and eval's reports of the old plan (`vitc.artifacts.eval_report`)
    are removed then, as by `vitc build --force`, and named in `removed_reports`: their figures were of an
    engine that is gone. One that cannot be removed is a line of `warnings`.
    """
    from vitc._io import sha256_file
    from vitc.engines.platform import jetson_info

    opts = resolve_options(opts)
    version, gpu, plan_flags, heldout = _preflight(opts)
    cache_path = opts.timing_cache or default_timing_cache(opts.plan, version)
    shape = heldout.sample_shape if heldout is not None else None
    if not features(version).frees_its_builder:  # 8.5: a child process builds (vitc.build.trt_child)
        crashed = f"{opts.onnx}: the TensorRT {version} build (a child process: 8.5 never frees its builder)"
        step = (opts, version, plan_flags, shape, cache_path)
        built = run_in_child(_build_plan, step, crashed, str(opts.plan.parent))
    else:
        built = _build_plan(opts, version, plan_flags, shape, cache_path)
    # the builder, network, parser and config are gone: the drift check has the (shared, on Jetson) memory
    warnings = list(built.warnings)
    options = opts.options_record()
    options["timing_cache"] = str(cache_path)
    sidecar = make_sidecar(
        trt_version=version,
        gpu=gpu,
        jetson=jetson_info(),
        precision=opts.chosen_precision,
        plan=plan_flags,
        profile=built.profile,
        onnx_path=opts.onnx,
        onnx_sha256=sha256_file(opts.onnx),
        manifest=opts.manifest,
        build_seconds=built.seconds,
        options=options,
        dla_fallback=built.dla_fallback,
        plan_record=plan_record(built.plan),
        fp32_layers=built.fp32_layers,
    )
    if opts.manifest is not None and opts.manifest.onnx_sha256 and opts.manifest.onnx_sha256 != sidecar.onnx_sha256:
        warnings.append(f"{opts.onnx}: its sha256 differs from the manifest's; the export folder was modified")
    replacing = opts.plan.exists()  # then eval's reports of the old plan go once the new one is in place
    sidecar = _save_engine(opts.plan, built.plan, sidecar, heldout)
    removed = remove_stale_reports(opts.plan) if replacing else RemovedReports(opts.plan)
    warnings += removed.failed
    pinned = set(built.pinned or ())
    fallback_pinned = [name for name in built.dla_fallback if name in pinned]
    return BuildResult(opts.plan, sidecar, built.dla_fallback, warnings, fallback_pinned, removed)


@dataclass(frozen=True)
class _Built:
    """What a build leaves once its TensorRT objects are released: the plan and what the sidecar records of it."""

    plan: bytes
    profile: Profile
    pinned: list[str] | None  # the layers pinned to FP32 (weakly typed fp16/int8 builds: 8.5/8.6)
    dla_fallback: list[str]
    seconds: float
    warnings: list[str]  # the timing cache's

    @property
    def fp32_layers(self) -> int | None:
        return None if self.pinned is None else len(self.pinned)


def _build_plan(
    opts: BuildOptions,
    version: str,
    plan_flags: PrecisionPlan,
    sample_shape: tuple[int, ...] | None,
    cache_path: Path,
) -> _Built:
    """Parse, configure and build; return plain data only (picklable: on 8.5 a child process runs this,
    `vitc.build.trt_child`). The builder, network, parser (which the network keeps alive: pyOnnx.cpp's
    keep_alive<2, 1>) and config live in this frame alone, so from 8.6 on they are released when it returns,
    before the drift check deserialises the plan: on a Jetson the CPU and GPU share 4-8 GB, and a larger
    model could run out of memory there while they were still held (Polygraphy's loaders let go of them the
    same way). On 8.5 the parser and network also keep each other (keep_alive<1, 2>), in pybind11's table
    that Python's GC does not see: only the end of the child process frees them."""
    started = time.perf_counter()
    warnings: list[str] = []
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network, _parser, profile = _parse(builder, logger, opts, plan_flags, version)  # _parser owns the weights
    check_graph_precision(opts, network)
    if sample_shape is not None:
        _check_heldout_fits(sample_shape, profile, opts.manifest)
    pinned = pin_fp32_layers(network) if plan_flags.pin_fp32 else None  # before DLA asks what runs there
    config = _configure(builder, network, opts, plan_flags, profile)
    dla_fallback = []
    if opts.dla_core is not None:
        dla_fallback = _configure_dla(builder, network, config, opts, profile, set(pinned or ()))
    blob = _engine_bytes(builder, network, config, cache_path, warnings, f"{opts.onnx}: TensorRT {version}")
    return _Built(blob, profile, pinned, dla_fallback, time.perf_counter() - started, warnings)


def _preflight(opts: BuildOptions) -> tuple[str, dict[str, str], PrecisionPlan, Heldout | None]:
    """Everything checked before parsing: the input, the machine, the weight form, the held-out set,
    the output (the input file itself is checked by resolve_options). The machine comes before the output:
    an earlier plan there was refused first, and --force only led to the TensorRT this machine lacks. Returns
    (TensorRT version, GPU, precision flags, held-out set to check)."""
    from vitc._io import refuse_to_replace

    _check_options(opts)
    version, gpu = check_build_machine()
    _check_release_options(opts, features(version), version)
    _check_weight_form(opts, version)
    plan_flags = precision_plan(features(version), opts.chosen_precision, opts.tf32)
    heldout = _heldout_to_check(opts)
    refuse_to_replace((opts.plan, sidecar_path(opts.plan)), opts.replace_plan)  # an earlier build, as export's files
    _check_writable(opts.plan)
    return version, gpu, plan_flags, heldout


def _engine_bytes(
    builder: trt.Builder,
    network: trt.INetworkDefinition,
    config: trt.IBuilderConfig,
    cache_path: Path,
    warnings: list[str],
    what: str,
) -> bytes:
    """EngineBytesFromNetwork: the serialized plan, built with the timing cache at `cache_path` (loaded
    before, merged into the file after the build, even if a later check fails: a rebuild then takes seconds)."""
    keep_cache = attach_timing_cache(config, cache_path, warnings)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise VitcError(f"{what} could not build an engine (see its log above)")
    if keep_cache:
        save_timing_cache(config, cache_path, warnings)
    return bytes(serialized)


def _save_engine(output: Path, blob: bytes, sidecar: EngineSidecar, heldout: Heldout | None) -> EngineSidecar:
    """SaveEngine: the plan, checked on the held-out set while staged, then renamed in together with its
    sidecar (a Ctrl-C between the two renames left the new sidecar beside the old plan, which every
    reader refuses). Returns the sidecar as written (with the engine drift)."""
    from vitc._io import atomic_files, json_text

    with atomic_files() as files:  # renamed over the old pair only when everything below succeeded
        staged = files.stage(output)
        staged.write_bytes(blob)
        if heldout is not None:
            try:
                sidecar = replace(sidecar, engine_drift=engine_drift(staged, heldout, sidecar))
            except VitcError as exc:
                raise VitcError(
                    f"{exc} (the engine drift check failed, so no plan was written; the timing cache is kept, "
                    "so a rebuild is quick; --no-check skips the check)"
                ) from exc
        files.stage(sidecar_path(output)).write_text(json_text(sidecar.to_record()))
    return sidecar


def check_build_machine() -> tuple[str, dict[str, str]]:
    """The TensorRT version and the GPU's properties; one line naming everything missing for a build."""
    version, cuda, gpu = open_engine_machine("vitc build")
    cuda.close()
    return version, gpu


def _heldout_to_check(opts: BuildOptions) -> Heldout | None:
    """The export's held-out set for the post-build check, loaded (and its hash checked) before building."""
    from vitc.artifacts import load_heldout

    if not opts.check or opts.manifest is None or opts.manifest.heldout_path is None:
        return None
    return load_heldout(opts.manifest)


def _check_writable(output: Path) -> None:
    """Fail now, not after the build, when the plan's folder cannot be written."""
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VitcError(f"cannot write {output}: {exc.strerror or exc}") from exc
    if not os.access(output.parent, os.W_OK):
        raise VitcError(f"cannot write {output}: the folder is read-only or not writable")


def _check_heldout_fits(image_shape: tuple[int, ...], profile: Profile, manifest: ExportManifest | None) -> None:
    """The held-out images must have the engine's C×H×W (a held-out set of another export does not)."""
    if tuple(image_shape) != tuple(profile.min[1:]):
        source = manifest.heldout_path if manifest is not None else "the held-out set"
        raise VitcError(
            f"{source}: held-out images are {'×'.join(map(str, image_shape))}, the engine takes "
            f"{'×'.join(map(str, profile.min[1:]))}: the export folder mixes files of different exports"
        )


def _parse(
    builder: trt.Builder, logger: trt.ILogger, opts: BuildOptions, plan_flags: PrecisionPlan, version: str
) -> tuple[trt.INetworkDefinition, trt.OnnxParser, Profile]:
    """NetworkFromOnnxPath: the network with this release's creation flags, its parser, its input profile.

    The parser holds the weights the network points at, so it must live until the build is done.
    """
    network_flags = 0
    for name in plan_flags.network_flags:
        network_flags |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
    network = builder.create_network(network_flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(opts.onnx)):
        raise _unparsed(opts, version, _parser_errors(parser))
    tensor = network.get_input(0)
    profile = make_profile(tensor.name, dims(tensor.shape), opts.manifest, opts.batch)
    return network, parser, profile


def _unparsed(opts: BuildOptions, version: str, errors: list[str]) -> VitcError:
    """The parser's first error and their count (an export for a newer TensorRT can fail once per node,
    e.g. each LayerNorm on JetPack 5's 8.5) and what to run: `vitc check` names every problem, `vitc
    export --trt` avoids them."""
    first = f"{len(errors)} errors, the first: {errors[0]}" if len(errors) > 1 else (errors or ["no reason given"])[0]
    message = f"{opts.onnx}: TensorRT {version} cannot parse it ({first})"
    target = export_target(version)
    if target is None:
        return VitcError(message)
    made_for = opts.manifest.trt_target if opts.manifest is not None else None
    precision = opts.manifest.precision if opts.manifest is not None else "PRECISION"
    origin = {None: " (it was exported without --trt)", target: ""}.get(made_for, f" (it was exported for {made_for})")
    return VitcError(
        f"{message}; `vitc check {opts.onnx} --trt {target}` lists what it rejects{origin}, and "
        f"`vitc export CHECKPOINT -p {precision} --trt {target}` writes one it parses"
    )


def _configure(
    builder: trt.Builder,
    network: trt.INetworkDefinition,
    opts: BuildOptions,
    plan_flags: PrecisionPlan,
    profile: Profile,
) -> trt.IBuilderConfig:
    """The builder config: precision flags (TF32, on by default, cleared unless --tf32), workspace,
    compatibility options, the optimisation profile."""
    config = builder.create_builder_config()
    for name in plan_flags.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    for name in plan_flags.cleared_flags:
        config.clear_flag(getattr(trt.BuilderFlag, name))
    if opts.workspace_mb is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(opts.workspace_mb) << 20)
    _apply_compat_options(config, opts)
    if any(d < 0 for d in dims(network.get_input(0).shape)):
        optimisation = builder.create_optimization_profile()
        optimisation.set_shape(
            profile.input_name, trt.Dims(list(profile.min)), trt.Dims(list(profile.opt)), trt.Dims(list(profile.max))
        )
        config.add_optimization_profile(optimisation)
    return config


def _check_options(opts: BuildOptions) -> None:
    """The option values themselves, refused in one line before TensorRT sees them: it would raise a traceback
    for some, fail the build for others, or clamp them while the sidecar records what was asked."""
    if opts.hardware_compat not in HARDWARE_COMPAT:
        raise VitcError(f"--hardware-compat must be one of {', '.join(HARDWARE_COMPAT)}, got {opts.hardware_compat!r}")
    if opts.workspace_mb is not None and opts.workspace_mb < 1:
        raise VitcError(f"--workspace {opts.workspace_mb}: the workspace limit is in MB, at least 1")
    if opts.opt_level is not None and not 0 <= opts.opt_level <= MAX_OPT_LEVEL:
        raise VitcError(f"--opt-level {opts.opt_level}: TensorRT's optimisation levels are 0 to {MAX_OPT_LEVEL}")
    if opts.dla_core is not None and opts.chosen_precision == "fp32":
        raise VitcError("--dla runs FP16 or INT8 only: build the fp16 or int8 export")


def _check_release_options(opts: BuildOptions, feat: TrtFeatures, version: str) -> None:
    """The options this TensorRT release lacks, refused before parsing."""
    if opts.opt_level is not None and not feat.optimization_level:
        raise VitcError(f"--opt-level needs TensorRT 8.6 or newer (this is {version})")
    if opts.version_compatible and not feat.version_compatible:
        raise VitcError(f"--version-compatible needs TensorRT 8.6 or newer (this is {version})")
    if opts.hardware_compat != "none" and not feat.hardware_compatibility:
        raise VitcError(f"--hardware-compat needs TensorRT 8.6 or newer (this is {version})")
    if opts.hardware_compat == "same-cc" and not feat.same_compute_capability:
        raise VitcError(f"--hardware-compat same-cc needs TensorRT 10.9 or newer (this is {version})")


def _apply_compat_options(config: trt.IBuilderConfig, opts: BuildOptions) -> None:
    """--opt-level, --version-compatible, --hardware-compat (checked against the release by the preflight)."""
    if opts.opt_level is not None:
        config.builder_optimization_level = int(opts.opt_level)
    if opts.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    if opts.hardware_compat != "none":
        # only the requested member is looked up: SAME_COMPUTE_CAPABILITY does not exist before 10.9
        level = getattr(trt.HardwareCompatibilityLevel, HARDWARE_LEVELS[opts.hardware_compat])
        config.hardware_compatibility_level = level


def _configure_dla(
    builder: trt.Builder,
    network: trt.INetworkDefinition,
    config: trt.IBuilderConfig,
    opts: BuildOptions,
    profile: Profile,
    pinned: set[str],
) -> list[str]:
    """Put the network on DLA core N with GPU fallback; return the layers that run on the GPU.

    Those are the layers DLA cannot run (`can_run_on_DLA`) and, on 8.5/8.6, the layers pinned to FP32
    (`pinned`): DLA runs FP16 and INT8 only, and `can_run_on_DLA` looks at the layer, not at the
    precision it is held to. vitc puts those on the GPU itself (`set_device_type`), so the list says
    where they run rather than guessing what the builder will do with them.
    """
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
    config.default_device_type = trt.DeviceType.DLA
    config.DLA_core = core
    config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    fallback = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.name in pinned:
            config.set_device_type(layer, trt.DeviceType.GPU)
        if not config.can_run_on_DLA(layer) or config.get_device_type(layer) != trt.DeviceType.DLA:
            fallback.append(layer.name)
    return fallback


def _check_weight_form(opts: BuildOptions, version: str) -> None:
    """INT8 weights stored as int8 initializers (the default export form) parse from TensorRT 10 on;
    an older TensorRT would fail deep in its parser, so say what to re-export instead."""
    report = opts.manifest.precision_report if opts.manifest is not None else {}
    if report.get("weights") == "int8" and int(version.split(".")[0]) < 10:
        target = ".".join(version.split(".")[:2])
        raise VitcError(
            f"{opts.onnx} stores int8 weights, which TensorRT {version} cannot parse (10 and later can): "
            f"re-export it for this TensorRT with `vitc export CHECKPOINT -p int8 --trt {target}`"
        )


def engine_drift(plan: Path, heldout: Heldout, sidecar: EngineSidecar) -> dict[str, Any]:
    """The post-build check: the export's held-out set through the engine (with its sidecar) vs the reference."""
    from vitc.engines.accuracy import heldout_accuracy

    with TensorRTRunner(plan, sidecar=sidecar) as runner:
        return heldout_accuracy(runner, heldout).to_dict()


__all__ = ["BuildResult", "build_engine", "make_sidecar"]
