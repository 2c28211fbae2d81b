"""`vitc build` and `vitc bench --engine` end to end against the strict fake of each TensorRT release.

The fakes (tests/engines/fakes/tensorrt_fake.py) expose exactly the API that NVIDIA's bindings of
that release define (tests/engines/trt_api/), on the CUDA fakes of tests/engines/fakes/cuda_fakes.py.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import json
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.engines.conftest import make_tiny_onnx, manifest_record
from tests.engines.fakes.cuda_fakes import cudaError_t
from tests.engines.fakes.tensorrt_fake import VERSIONS
from tests.engines.fakes.tensorrt_objects import PLAN_BODY, PRECISION_FLAGS
from vitc.artifacts import BatchRange
from vitc.artifacts.sidecar import sidecar_path
from vitc.build import tensorrt as B
from vitc.build.options import BuildOptions
from vitc.cli.main import app
from vitc.engines import tensorrt as T
from vitc.engines import trt_plan as P
from vitc.engines.trt_runner import TensorRTRunner
from vitc.errors import VitcError

cli = CliRunner()


def add_precision(folder: Path, precision: str, batch: int | str = "batch") -> Path:
    """model.<precision>.onnx and its manifest in an export folder (the held-out set is shared)."""
    onnx = make_tiny_onnx(folder / f"model.{precision}.onnx", batch, precision)
    static = {"batch": {"min": batch, "opt": batch, "max": batch}} if isinstance(batch, int) else {}
    (folder / f"manifest.{precision}.json").write_text(json.dumps(manifest_record(precision=precision, **static)))
    return onnx


def build(*args: object) -> str:
    result = cli.invoke(app, ["build", *map(str, args)])
    assert result.exit_code == 0, result.output
    return result.output


def sidecar(plan: Path) -> dict:
    return json.loads(sidecar_path(plan).read_text())


# Precision flags a precision-baked graph is built with: weak typing before 10 (the flags allow the
# kernels the graph asks for; Q/DQ graphs keep FP16 for their float islands), none from 10 on.
WEAK_TYPING_FLAGS = {"fp32": set(), "fp16": {"FP16"}, "int8": {"INT8", "FP16"}}


# -- the whole path per release -----------------------------------------------------------------------
@pytest.mark.parametrize("version", VERSIONS)
def test_build_and_bench_every_precision(version, fake, export_dir, tmp_path):
    """fp32/fp16/int8, dynamic (1:4:8, more held-out images than the max) and static batch, then bench."""
    trt = fake(version)
    feat = T.features(trt.__version__)
    for precision, batch in (("fp32", "batch"), ("fp16", "batch"), ("int8", "batch"), ("fp16", 4)):
        onnx = export_dir / "model.fp32.onnx" if precision == "fp32" else add_precision(export_dir, precision, batch)
        plan = tmp_path / f"{precision}-{batch}.plan"
        out = build(onnx, "--out", plan, "--workspace", 64)
        side = sidecar(plan)
        flags = T.precision_plan(feat, precision)
        assert side["tensorrt"] == trt.__version__ and f"TensorRT {trt.__version__}" in out
        assert side["builder_flags"] == list(flags.builder_flags) and side["network_flags"] == list(flags.network_flags)
        built = json.loads(plan.read_bytes().split(PLAN_BODY, 1)[1])  # what reached the fake builder
        precision_flags = set(built["flags"]) & set(PRECISION_FLAGS)
        assert precision_flags == (WEAK_TYPING_FLAGS[precision] if feat.version[0] < 10 else set())
        assert built["strongly_typed"] is (feat.version[0] >= 11 or (feat.version[0] == 10 and precision != "fp32"))
        drift = side["engine_drift"]  # 12 held-out images through an engine whose profile stops at 8
        assert drift["samples"] == 12 and drift["agreement"] == 100.0
        assert drift["max_abs_diff"] < {"fp32": 1e-6, "fp16": 1e-2, "int8": 0.2}[precision]  # vs fp32 logits
        assert P.plan_summary(plan)["header"]["tensorrt"] == (
            "unknown version (8.5 or older)" if version == "8.5" else trt.__version__
        )
    report = tmp_path / "bench.json"
    result = cli.invoke(
        app,
        [
            "bench",
            "-e",
            tmp_path / "fp32-batch.plan",
            "-e",
            tmp_path / "fp16-4.plan",
            "-b",
            "1,4,8",
            "-n",
            "2",
            "--warmup",
            "1",
            "--data",
            export_dir,
            "--json",
            report,
        ],
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(report.read_text())
    assert "fp32-batch.plan" in result.output and "fp16-4.plan" in result.output
    assert rows and str(rows).count("'agreement': 100.0") >= 2


@pytest.mark.parametrize("version", VERSIONS)
def test_tf32_is_cleared_unless_asked_for(version, fake, export_dir, tmp_path):
    """TensorRT sets BuilderFlag.TF32 in every fresh config ("Enabled by default"): an "fp32" plan computed
    its matmuls in TF32 on Ampere+ and Orin. Every build clears it, as Polygraphy does; --tf32 keeps it,
    and the sidecar records the choice (builder_flags and options)."""
    fake(version)
    onnx16 = add_precision(export_dir, "fp16")
    for onnx, extra in ((export_dir / "model.fp32.onnx", []), (onnx16, []), (onnx16, ["--tf32"])):
        plan = tmp_path / f"{onnx.stem}{''.join(extra)}.plan"
        build(onnx, "--out", plan, *extra)
        built = json.loads(plan.read_bytes().split(PLAN_BODY, 1)[1])  # the flags the fake builder was given
        side = sidecar(plan)
        if extra:
            assert "TF32" in built["flags"] and "TF32" in side["builder_flags"] and side["options"]["tf32"] is True
        else:
            assert "TF32" not in built["flags"] and "TF32" not in side["builder_flags"]
            assert side["options"]["tf32"] is False
        assert P.plan_summary(plan)["tf32"] == ("allowed (--tf32)" if extra else "off")  # as `vitc info` shows it
    del side["options"]["tf32"]  # a sidecar of an earlier vitc, which left TensorRT's default on
    sidecar_path(plan).write_text(json.dumps(side))
    assert P.plan_summary(plan)["tf32"].startswith("allowed: built before vitc turned TensorRT's default off")


@pytest.mark.parametrize("version", ["8.5", "10.3", "11.1"])
def test_the_builder_is_released_before_the_drift_check(version, fake, export_dir, tmp_path, monkeypatch):
    """The builder, network, parser (which the network keeps alive) and config stayed referenced by
    build_engine's frame while the drift check deserialised and ran the plan: on a Jetson's shared memory
    a larger model ran out of it there. They are gone when the check runs. (The fake ties them as
    pybind11's keep_alive does, in a table the GC does not see; on 8.5 the parser and network keep each
    other there, so only a child process's end frees them: vitc builds in one on 8.5.)"""
    trt = fake(version)
    held: list[list[str]] = []
    check = B.engine_drift

    def drift(*args: Any) -> dict:
        gc.collect()
        held.append(sorted(type(obj).__name__ for obj in trt._live))
        return check(*args)

    monkeypatch.setattr(B, "engine_drift", drift)
    out = build(export_dir / "model.fp32.onnx", "--out", tmp_path / "m.plan")
    assert held == [[]] and "engine drift" in out
    assert sidecar(tmp_path / "m.plan")["engine_drift"]["samples"] == 12


@pytest.mark.parametrize("version", VERSIONS)
def test_timing_cache_new_reused_and_foreign(version, fake, tiny_onnx, tmp_path):
    fake(version)
    cache = tmp_path / "timing.cache"
    opts = dict(onnx=tiny_onnx, batch=BatchRange.parse("1:2:4"), timing_cache=cache, check=False)
    first = B.build_engine(BuildOptions(output=tmp_path / "a.plan", **opts))
    assert cache.is_file() and not first.warnings
    entries = json.loads(cache.read_bytes()[6:])["entries"]  # one per layer of the network
    second = B.build_engine(BuildOptions(output=tmp_path / "b.plan", **opts))
    assert entries and not second.warnings and json.loads(cache.read_bytes()[6:])["entries"] == entries  # all found
    # a cache from another GPU: set_timing_cache returns False; the build uses a fresh cache, the
    # plan and its sidecar are written, and the foreign file is kept as it was
    foreign = b"FAKETC" + json.dumps({"origin": ["10.3.0.26", [7, 2]], "entries": ["k"]}).encode()
    cache.write_bytes(foreign)
    third = B.build_engine(BuildOptions(output=tmp_path / "c.plan", **opts))
    assert any("does not match" in w for w in third.warnings)
    assert (tmp_path / "c.plan").is_file() and sidecar(tmp_path / "c.plan")["tensorrt"] == third.sidecar.tensorrt
    assert cache.read_bytes() == foreign


# 8.6 for the weakly typed 8.x builder: 8.5 builds in a child process (vitc.build.trt_child), where this
# process's patch of the fake Builder cannot interleave a second build; the merge is the same code
@pytest.mark.parametrize("version", ["8.6", "10.3", "11.1"])
def test_builds_sharing_a_timing_cache_merge_their_entries(version, fake, tmp_path):
    """Two builds into one cache file at once (engines/timing-trt<ver>.cache is shared): the one that
    saved last wrote its own cache over the file and lost the other's entries. A save now merges what
    the file holds (ITimingCache.combine, under a lock), as Polygraphy's EngineBytesFromNetwork does."""
    from tests.engines.fakes.tensorrt_objects import Builder

    fake(version)
    models = [make_tiny_onnx(tmp_path / f"{name}.onnx", classes=n) for name, n in (("a", 10), ("b", 5))]
    opts = dict(batch=BatchRange.parse("1:2:4"), check=False)

    def entries(cache: Path) -> set:
        return set(json.loads(cache.read_bytes()[6:])["entries"])

    alone = []
    for onnx in models:  # each model's entries, built on its own
        B.build_engine(BuildOptions(onnx=onnx, output=tmp_path / "x.plan", timing_cache=tmp_path / "x.cache", **opts))
        alone.append(entries(tmp_path / "x.cache"))
        (tmp_path / "x.cache").unlink()
    assert alone[0] and alone[1] and not alone[0] & alone[1]
    cache = tmp_path / "shared.cache"
    build = Builder.__dict__["build_serialized_network"]

    def build_a(during: Callable[[], None]) -> Any:
        """Build model a into the shared cache, `during` running while its network is built."""

        def building(self: Any, network: Any, config: Any) -> Any:
            type.__setattr__(Builder, "build_serialized_network", build)
            during()
            return build(self, network, config)

        type.__setattr__(Builder, "build_serialized_network", building)
        try:
            return B.build_engine(BuildOptions(onnx=models[0], output=tmp_path / "a.plan", timing_cache=cache, **opts))
        finally:
            type.__setattr__(Builder, "build_serialized_network", build)

    result = build_a(  # b is built and saved while a builds
        lambda: B.build_engine(BuildOptions(onnx=models[1], output=tmp_path / "b.plan", timing_cache=cache, **opts))
    )
    assert not result.warnings and entries(cache) == alone[0] | alone[1]
    foreign = b"FAKETC" + json.dumps({"origin": ["10.3.0.26", [7, 2]], "entries": ["k"]}).encode()
    result = build_a(lambda: cache.write_bytes(foreign))  # the file becomes another GPU's meanwhile
    assert cache.read_bytes() == foreign and any("left it as it is" in w for w in result.warnings)


def test_the_timing_cache_lock_excludes_other_processes(tmp_path):
    """vitc._io.file_lock: a second process cannot take the lock while a save holds it."""
    import subprocess

    pytest.importorskip("fcntl")  # POSIX: elsewhere file_lock yields False, unlocked

    from vitc._io import file_lock

    cache = tmp_path / "timing.cache"
    probe = (
        "import fcntl, sys; f = open(sys.argv[1], 'a+b')\n"
        "try:\n    fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)\nexcept BlockingIOError:\n    sys.exit(3)"
    )
    lock = str(tmp_path / "timing.cache.lock")
    with file_lock(cache) as locked:
        assert locked and subprocess.run([sys.executable, "-c", probe, lock]).returncode == 3
    assert subprocess.run([sys.executable, "-c", probe, lock]).returncode == 0


def test_a_file_system_without_locks_saves_the_timing_cache_unlocked(fake, tiny_onnx, tmp_path, monkeypatch):
    """flock raising ENOLCK (NFS without lockd, some FUSE and SMB mounts) escaped the save: a traceback after the
    build, and no plan written. The cache is saved unlocked, as where no lock file can be made."""
    fcntl = pytest.importorskip("fcntl")

    def no_locks(*args: object) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    fake("10.3")
    monkeypatch.setattr(fcntl, "flock", no_locks)
    cache = tmp_path / "timing.cache"
    opts = BuildOptions(output=tmp_path / "a.plan", onnx=tiny_onnx, timing_cache=cache, check=False)
    assert B.build_engine(opts).plan.is_file() and cache.is_file()


@pytest.mark.parametrize("version", VERSIONS)
def test_compatibility_options(version, fake, tiny_onnx, tmp_path):
    """--hardware-compat, --opt-level and --version-compatible where the release has them, errors elsewhere."""
    trt = fake(version)
    feat = T.features(trt.__version__)
    opts = dict(onnx=tiny_onnx, batch=BatchRange.parse("1:2:4"), check=False)
    for level, supported in (("ampere+", feat.hardware_compatibility), ("same-cc", feat.same_compute_capability)):
        build_opts = BuildOptions(output=tmp_path / f"{level}.plan", hardware_compat=level, **opts)
        if supported:
            assert sidecar(B.build_engine(build_opts).plan)["options"]["hardware_compat"] == level
        else:
            with pytest.raises(VitcError, match="needs TensorRT"):
                B.build_engine(build_opts)
    level = BuildOptions(output=tmp_path / "o.plan", opt_level=5, **opts)
    if feat.optimization_level:
        assert sidecar(B.build_engine(level).plan)["options"]["opt_level"] == 5
    else:
        with pytest.raises(VitcError, match=r"--opt-level needs TensorRT 8\.6"):
            B.build_engine(level)
    vc = BuildOptions(output=tmp_path / "vc.plan", version_compatible=True, **opts)
    if feat.version_compatible:
        B.build_engine(vc)
        with TensorRTRunner(vc.output) as runner:  # the runner allows the plan's embedded host code
            assert runner.infer({"input": np.ones((2, 3, 8, 8), np.float32)})["logits"].shape == (2, 10)
    else:
        with pytest.raises(VitcError, match=r"8\.6 or newer"):
            B.build_engine(vc)


@pytest.mark.parametrize(
    ("version", "args", "message"),
    [
        ("10.3", ["--workspace", "-1"], "--workspace -1: the workspace limit is in MB, at least 1"),
        ("10.3", ["--workspace", "0"], "--workspace 0: the workspace limit is in MB, at least 1"),
        ("10.3", ["--opt-level", "9"], "--opt-level 9: TensorRT's optimisation levels are 0 to 5"),
        ("10.3", ["--opt-level", "-1"], "--opt-level -1: TensorRT's optimisation levels are 0 to 5"),
        ("8.5", ["--opt-level", "3"], "--opt-level needs TensorRT 8.6 or newer (this is 8.5.3.1)"),
        ("8.5", ["--version-compatible"], "--version-compatible needs TensorRT 8.6 or newer (this is 8.5.3.1)"),
        ("8.6", ["--hardware-compat", "same-cc"], "--hardware-compat same-cc needs TensorRT 10.9 or newer"),
        ("10.3", ["--dla", "0"], "--dla runs FP16 or INT8 only: build the fp16 or int8 export"),
    ],
)
def test_bad_build_options_are_refused_before_parsing(version, args, message, fake, export_dir, monkeypatch):
    """One line, exit 2, before the ONNX file is parsed: --workspace -1 ended in pybind11's TypeError
    traceback after parsing, --workspace 0 in a failed build, --opt-level 9 built at 5 and recorded 9, and the
    options a release lacks were refused only after parsing."""
    fake(version)

    def parse(*args: Any) -> Any:
        raise AssertionError("the ONNX file was parsed")

    monkeypatch.setattr(B, "_parse", parse)
    result = cli.invoke(app, ["build", str(export_dir / "model.fp32.onnx"), *args])
    assert result.exit_code == 2 and result.output.startswith(f"error: {message}"), result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("version", ["8.5", "8.6", "10.3"])  # the JetPack releases with DLA
def test_dla_with_gpu_fallback(version, fake, tmp_path):
    """The fallback list is where the layers run: on 8.5/8.6 the layers pinned to FP32 (the fp16 graph's
    float32 Reshape, Cast back and Softmax) run on the GPU, DLA running FP16/INT8 only, while
    can_run_on_DLA, which looks at the layer alone, named only the Softmax."""
    fake(version, dla_cores=2)
    onnx = make_tiny_onnx(tmp_path / "m.fp16.onnx", 4, "fp16")
    result = B.build_engine(BuildOptions(onnx=onnx, output=tmp_path / "d.plan", precision="fp16", dla_core=1))
    on_gpu = json.loads(result.plan.read_bytes().split(PLAN_BODY, 1)[1])["on_gpu"]  # what the fake builder did
    pinned = ["Reshape_0", "Cast_3", "Softmax_4"] if version.startswith("8.") else []
    assert result.dla_fallback == on_gpu == (pinned or ["Softmax_4"]) and result.dla_pinned == pinned
    assert result.sidecar.dla_fallback_layers == on_gpu and result.sidecar.dla_core == 1
    out = build(onnx, "--out", tmp_path / "c.plan", "--dla", "1")
    expected = (
        "3 layers fall back to the GPU: Reshape_0, Cast_3, Softmax_4 (pinned to FP32, which DLA does not run: "
        "it runs FP16 and INT8)"
        if pinned
        else "1 layer falls back to the GPU: Softmax_4 (DLA cannot run it)"
    )
    assert expected in " ".join(out.split()), out
    with TensorRTRunner(result.plan) as runner:  # the runtime is put on the plan's DLA core
        assert runner._runtime.DLA_core == 1 and runner.info().device == "dla"
        assert runner.infer({"input": np.ones((4, 3, 8, 8), np.float32)})["logits"].shape == (4, 10)
    with TensorRTRunner(result.plan, cuda_graph=True) as runner:  # as trtexec: DLA and CUDA graphs exclude
        assert not runner.cuda_graph and "runs without CUDA graphs" in runner.warnings[-1]
    for bad, message in (({"dla_core": 2}, "cores 0..1"), ({"precision": "fp32", "dla_core": 0}, "FP16 or INT8")):
        with pytest.raises(VitcError, match=message):
            B.build_engine(BuildOptions(onnx=onnx, output=tmp_path / "x.plan", **{"precision": "fp16", **bad}))


def test_plans_from_another_release_or_gpu_are_refused(fake, tiny_onnx, tmp_path):
    fake("10.3")
    plan = B.build_engine(BuildOptions(onnx=tiny_onnx, output=tmp_path / "m.plan", check=False)).plan
    fake("10.16")
    with pytest.raises(VitcError, match=r"built with TensorRT 10\.3\.0\.26"):
        TensorRTRunner(plan).activate()
    sidecar_path(plan).unlink()  # no sidecar: vitc still reads the header; without it the fake refuses too
    with pytest.raises(VitcError, match=r"10\.3\.0\.26"):
        TensorRTRunner(plan).activate()
    fake("10.3", cc=(8, 9), name="RTX 4090")
    plan = B.build_engine(BuildOptions(onnx=tiny_onnx, output=tmp_path / "n.plan", check=False)).plan
    fake("10.3", cc=(8, 7))
    with pytest.raises(VitcError, match=r"compute capability 8\.9"):
        TensorRTRunner(plan).activate()


# -- the defects of issue 11, each against the fakes ----------------------------------------------------
@pytest.mark.parametrize("version", ["8.6", "10.3", "10.8"])
def test_ampere_plus_before_10_9(version, fake, tiny_onnx, tmp_path):
    """Defect 1: SAME_COMPUTE_CAPABILITY exists from 10.9; ampere+ must not touch it."""
    trt = fake(version)
    with pytest.raises(AttributeError):
        trt.HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY  # noqa: B018
    opts = BuildOptions(onnx=tiny_onnx, output=tmp_path / "m.plan", hardware_compat="ampere+", check=False)
    assert B.build_engine(opts).sidecar.hardware_compat == "ampere+"


def test_a_renamed_attribute_fails_on_the_releases_without_it(fake, tiny_onnx, monkeypatch, tmp_path):
    """The harness catches what the review caught by reading: adapter code using a 10.9-only name."""
    monkeypatch.setitem(B.HARDWARE_LEVELS, "ampere+", "SAME_COMPUTE_CAPABILITY")
    opts = BuildOptions(onnx=tiny_onnx, output=tmp_path / "m.plan", hardware_compat="ampere+", check=False)
    fake("10.9")
    B.build_engine(opts)
    fake("10.3")
    with pytest.raises(AttributeError, match="SAME_COMPUTE_CAPABILITY"):
        B.build_engine(opts)
    monkeypatch.setattr(T.TrtFeatures, "explicit_batch_flag", property(lambda self: True))
    fake("11.1")  # EXPLICIT_BATCH is gone in 11
    with pytest.raises(AttributeError, match="EXPLICIT_BATCH"):
        B.build_engine(BuildOptions(onnx=tiny_onnx, output=tmp_path / "n.plan", check=False))


def test_timing_cache_rejected_keeps_the_sidecar(fake, tiny_onnx, tmp_path):
    """Defect 2: a rejected cache left get_timing_cache() None; the plan was written, the sidecar lost."""
    fake("10.3")
    cache = tmp_path / "foreign.cache"
    cache.write_bytes(b"not a timing cache")
    result = B.build_engine(BuildOptions(onnx=tiny_onnx, output=tmp_path / "m.plan", timing_cache=cache))
    assert sidecar_path(result.plan).is_file() and result.warnings
    assert cache.read_bytes() == b"not a timing cache"


def test_drift_chunks_at_the_profile_max(fake, export_dir, tmp_path):
    """Defect 3: 12 held-out images, profile 1:2:3: the drift check sends chunks of at most 3."""
    fake("10.3")
    plan = tmp_path / "m.plan"
    build(export_dir / "model.fp32.onnx", "--out", plan, "--batch", "1:2:3")
    assert sidecar(plan)["engine_drift"]["samples"] == 12
    with TensorRTRunner(plan) as runner:
        assert runner.max_batch() == 3
        with pytest.raises(VitcError, match="outside the engine's profile"):
            runner.infer({"input": np.ones((4, 3, 8, 8), np.float32)})


def test_tensorrt_8_5_runs_named_tensors(fake, tiny_onnx, tmp_path):
    """Defect 5: 8.5 has execute_async_v3; its binding API is deprecated (the bindings warn)."""
    fake("8.5")
    opts = BuildOptions(onnx=tiny_onnx, output=tmp_path / "m.plan", batch=BatchRange.parse("1:2:4"), check=False)
    plan = B.build_engine(opts).plan
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        with TensorRTRunner(plan) as runner:
            out = runner.infer({"input": np.ones((2, 3, 8, 8), np.float32)})
            assert runner._context._calls[-1] == "execute_async_v3"
    assert out["logits"].shape == (2, 10) and np.allclose(out["logits"].sum(1), 1.0, atol=1e-5)


def test_engines_refuse_integer_pixels(fake, tiny_onnx, tmp_path):
    """A TensorRT engine cast uint8 pixels to its float32 input and ran them unnormalised; float64 still runs."""
    fake("10.3")
    plan = B.build_engine(BuildOptions(onnx=tiny_onnx, output=tmp_path / "m.plan", check=False)).plan
    pixels = np.full((1, 3, 8, 8), 200, np.uint8)
    with TensorRTRunner(plan) as runner:
        with pytest.raises(VitcError, match="takes normalised float32 pixels, got a uint8 array: normalise"):
            runner.infer({"input": pixels})
        assert runner.infer({"input": np.ones((1, 3, 8, 8), np.float64)})["logits"].shape == (1, 10)


def test_bf16_io_is_refused_clearly(fake, tmp_path):
    """Defect 6: BF16 I/O used to become uint16 and cast float inputs to integers."""
    fake("10.3")
    onnx = make_tiny_onnx(tmp_path / "m.onnx", io_type=16)
    plan = B.build_engine(BuildOptions(onnx=onnx, output=tmp_path / "m.plan", check=False)).plan
    with pytest.raises(VitcError, match="'input' is BF16; vitc runs fp32/fp16 I/O") as err:
        TensorRTRunner(plan).activate()
    assert "\n" not in str(err.value)
    fake("8.5")  # 8.5 has no BF16 at all: its parser refuses the file
    with pytest.raises(VitcError, match="cannot parse"):
        B.build_engine(BuildOptions(onnx=onnx, output=tmp_path / "n.plan", check=False))


def _with_layer_norms(path: Path, count: int, precision: str = "fp32") -> Path:
    """The tiny model (of that precision) with `count` LayerNormalization nodes (opset 17, as the default export
    has) after its Reshape."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(make_tiny_onnx(path, precision=precision)))
    graph = model.graph
    graph.initializer.extend([numpy_helper.from_array(np.ones(192, np.float32), n) for n in ("gamma", "beta")])
    layer_norms = [
        helper.make_node("LayerNormalization", [f"ln{i}", "gamma", "beta"], [f"ln{i + 1}"], name=f"/blocks.{i}/norm")
        for i in range(count)
    ]
    graph.node[0].output[0] = "ln0"
    layer_norms[-1].output[0] = "flat"  # what the MatMul reads
    for node in reversed(layer_norms):
        graph.node.insert(1, node)
    onnx.save(model, str(path))
    return path


def test_an_export_for_a_newer_tensorrt_says_what_to_run(fake, tmp_path):
    """JetPack 5's TensorRT 8.5 has no LayerNormalization importer, which the default export (opset 17) uses
    once per norm: the error was every parser error on one line, with no way forward."""
    folder = tmp_path / "export"
    folder.mkdir()
    onnx_path = _with_layer_norms(folder / "model.fp16.onnx", count=5, precision="fp16")
    (folder / "manifest.fp16.json").write_text(json.dumps(manifest_record(precision="fp16", trt_target=None)))
    trt = fake("8.5")
    result = CliRunner().invoke(app, ["build", str(onnx_path), "--no-check"], env={"COLUMNS": "2000"})
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and "Traceback" not in result.output, result.output
    first = f"error: {onnx_path}: TensorRT {trt.__version__} cannot parse it (5 errors, the first: In node 1 "
    assert lines[0].startswith(first) and lines[0].count("In node") == 1
    assert "operator: LayerNormalization (importFallbackPluginImporter)" in lines[0]
    assert lines[0].endswith(
        f"; `vitc check {onnx_path} --trt 8.5` lists what it rejects (it was exported without --trt), "
        "and `vitc export CHECKPOINT -p fp16 --trt 8.5` writes one it parses"
    )
    assert not (tmp_path / "engines").exists() and not list(tmp_path.rglob("*.plan"))
    fake("8.6")  # the parser that has LayerNormalization builds the same file
    assert B.build_engine(BuildOptions(onnx=onnx_path, output=tmp_path / "m.plan", check=False)).plan.exists()


def test_8_5_plan_version_comes_from_the_sidecar(fake, tiny_onnx, tmp_path):
    """Defect 7: bytes 24-27 of an 8.5 plan are not a version (the fake's read as 64.31, as a real 8.5 plan's
    can); the sidecar says it, or it is unknown."""
    trt = fake("8.5")
    plan = B.build_engine(BuildOptions(onnx=tiny_onnx, output=tmp_path / "m.plan", check=False)).plan
    assert P.read_plan_header(plan).version == (64, 31, 0, 0)  # what the 8.6+ layout reads there
    summary = P.plan_summary(plan)  # what `vitc info` shows
    assert summary["header"]["tensorrt"] == "unknown version (8.5 or older)" and summary["tensorrt"] == trt.__version__
    with TensorRTRunner(plan) as runner:
        assert not runner.warnings and runner.info().detail["tensorrt"] == trt.__version__
    sidecar_path(plan).unlink()
    assert P.plan_summary(plan)["tensorrt"] == "unknown version (8.5 or older)"
    with TensorRTRunner(plan) as runner:
        assert "unknown version (8.5 or older)" in runner.warnings[0]


def _plan_and_plain_logits(tiny_onnx: Path, tmp_path: Path) -> tuple[Path, list[np.ndarray], list[np.ndarray]]:
    """The tiny model's plan (batch 1:2:4) on the installed fake, three batches, and its logits without CUDA graphs."""
    opts = BuildOptions(onnx=tiny_onnx, output=tmp_path / "m.plan", batch=BatchRange.parse("1:2:4"), check=False)
    plan = B.build_engine(opts).plan
    feeds = [np.random.default_rng(i).standard_normal((2, 3, 8, 8)).astype(np.float32) for i in range(3)]
    with TensorRTRunner(plan) as plain:
        return plan, feeds, [plain.infer({"input": x})["logits"] for x in feeds]


@pytest.mark.parametrize("version", ["8.5", "10.3"])
def test_cuda_graph_replays_with_new_inputs(version, fake, tiny_onnx, tmp_path):
    """--cuda-graph: the first call per shape launches plainly, captures and replays; later ones replay."""
    fake(version)
    plan, feeds, expected = _plan_and_plain_logits(tiny_onnx, tmp_path)
    with TensorRTRunner(plan, cuda_graph=True) as runner:
        got = [runner.infer({"input": x})["logits"] for x in feeds]
        assert runner._graph is not None
    for want, have in zip(expected, got):
        np.testing.assert_array_equal(have, want)


def _sync_inside(stream_handle: int) -> None:
    """What a layer calling cudaStreamSynchronize does under capture: the call fails, the capture is invalidated."""
    sys.modules["cuda.bindings.runtime"].cudaStreamSynchronize(stream_handle)


def _refuse(enqueue: Callable[..., bool], context: Any, stream_handle: int) -> bool:
    return False  # layers TensorRT cannot enqueue under capture: the graph ended must not be used


def _invalidate_then_enqueue(enqueue: Callable[..., bool], context: Any, stream_handle: int) -> bool:
    _sync_inside(stream_handle)
    return enqueue(context, stream_handle)  # its launch fails on the invalidated capture: False


def _enqueue_then_invalidate(enqueue: Callable[..., bool], context: Any, stream_handle: int) -> bool:
    enqueued = enqueue(context, stream_handle)
    _sync_inside(stream_handle)
    return enqueued  # True, but cudaStreamEndCapture will fail


# How TensorRT's enqueue goes wrong under capture, and what vitc's warning says (trtexec's endCaptureOnError).
UNCAPTURABLE = {
    "refused": (_refuse, "TensorRT could not enqueue this engine inside a CUDA graph capture"),
    "invalidated": (_invalidate_then_enqueue, "TensorRT could not enqueue this engine inside a CUDA graph capture"),
    "invalidated after enqueue": (_enqueue_then_invalidate, "CUDA invalidated the CUDA graph capture of this engine"),
}


@contextlib.contextmanager
def uncapturable(how: str) -> Iterator[None]:
    """The fake Context's execute_async_v3 misbehaves as UNCAPTURABLE[how] says while its stream is capturing."""
    from tests.engines.fakes import tensorrt_objects

    context = tensorrt_objects.Context
    enqueue = context.__dict__["execute_async_v3"]  # the fake's classes answer only their version's API
    misbehave = UNCAPTURABLE[how][0]

    def under_capture(self: Any, stream_handle: int) -> bool:
        if self._trt._gpu.stream(stream_handle).capture is not None:
            return misbehave(enqueue, self, stream_handle)
        return enqueue(self, stream_handle)

    type.__setattr__(context, "execute_async_v3", under_capture)
    try:
        yield
    finally:
        type.__setattr__(context, "execute_async_v3", enqueue)


@pytest.mark.parametrize("how", list(UNCAPTURABLE))
def test_an_engine_that_cannot_be_captured_runs_without_cuda_graphs(how, fake, tiny_onnx, tmp_path):
    """trtexec's samples say enqueue may return false under capture (layers not permitted there), and CUDA
    invalidates a capture in which an illegal call is made (cudaStreamEndCapture: an error, a NULL graph).
    Either way the runner ends the capture, keeps no graph, clears the CUDA error, warns once and runs
    plainly (it launched a graph of nothing: every later call gave the first call's outputs; an
    invalidated capture stopped with 'CUDA error in cudaStreamEndCapture')."""
    trt = fake("10.3")
    plan, feeds, expected = _plan_and_plain_logits(tiny_onnx, tmp_path)
    with uncapturable(how), TensorRTRunner(plan, cuda_graph=True) as runner:
        got = [runner.infer({"input": x})["logits"] for x in feeds]
        assert runner._graph is None and not runner.cuda_graph
        graph_warnings = [w for w in runner.warnings if "CUDA graph" in w]
        assert len(graph_warnings) == 1 and UNCAPTURABLE[how][1] in graph_warnings[0]
        assert graph_warnings[0].endswith("so it runs without CUDA graphs")
        assert trt._gpu.graphs == {} and trt._gpu.last_error == cudaError_t.cudaSuccess
    for want, have in zip(expected, got):
        np.testing.assert_array_equal(have, want)


def test_a_cuda_graph_that_cannot_be_instantiated_falls_back_to_plain_launches(fake, tiny_onnx, tmp_path):
    """A failed cudaGraphInstantiateWithFlags stopped the run with a VitcError and left the captured graph
    allocated; it now ends as a failed capture does: graph destroyed, error cleared, one warning, plain launches."""
    trt = fake("10.3")
    plan, feeds, expected = _plan_and_plain_logits(tiny_onnx, tmp_path)
    trt._gpu.instantiate_error = cudaError_t.cudaErrorMemoryAllocation
    with TensorRTRunner(plan, cuda_graph=True) as runner:
        got = [runner.infer({"input": x})["logits"] for x in feeds]
        assert runner._graph is None and not runner.cuda_graph
        assert runner.warnings == [
            f"{plan}: CUDA could not instantiate the CUDA graph of this engine (cudaGraphInstantiateWithFlags: "
            "cudaErrorMemoryAllocation), so it runs without CUDA graphs"
        ]
        assert trt._gpu.graphs == {} and trt._gpu.last_error == cudaError_t.cudaSuccess
    for want, have in zip(expected, got):
        np.testing.assert_array_equal(have, want)


def test_cuda_graphs_on_pycuda_are_switched_off_when_the_engine_loads(fake, tiny_onnx, tmp_path, monkeypatch):
    """`vitc bench -e x.plan --cuda-graph` on pycuda failed at the second warm-up call ('--cuda-graph needs
    cuda-python'), after the engine had loaded; the runner now says so when it loads it and runs plainly,
    as it does for a DLA plan."""
    from tests.engines.fakes.cuda_fakes import install_cuda

    trt = fake("8.5")
    opts = BuildOptions(onnx=tiny_onnx, output=tmp_path / "m.plan", batch=BatchRange.parse("1:2:4"), check=False)
    plan = B.build_engine(opts).plan
    trt._gpu = install_cuda(monkeypatch, cuda_python=None, pycuda=True)  # the same device, pycuda only
    with TensorRTRunner(plan, cuda_graph=True) as runner:
        assert not runner.cuda_graph and runner._cuda.kind == "pycuda"
        assert runner.warnings == [
            f"{plan}: CUDA graphs need cuda-python and these CUDA bindings are pycuda, so it runs without CUDA graphs"
        ]
        outputs = [runner.infer({"input": np.ones((2, 3, 8, 8), np.float32)})["logits"] for _ in range(3)]
    assert all(np.array_equal(out, outputs[0]) for out in outputs)
    result = cli.invoke(app, [str(a) for a in ["bench", "-e", plan, "-b", "1,2", "-n", "2", "--warmup", "1",
                                               "--cuda-graph"]])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "CUDA graphs need cuda-python" in " ".join(result.output.split())


def test_bench_cuda_graph_of_an_engine_whose_capture_is_invalidated(fake, tiny_onnx, tmp_path):
    """`vitc bench -e x.plan --cuda-graph` stopped with exit 2 ('CUDA error in cudaStreamEndCapture:
    cudaErrorStreamCaptureInvalidated'); it warns and benchmarks the engine without CUDA graphs."""
    fake("10.3")
    opts = BuildOptions(onnx=tiny_onnx, output=tmp_path / "m.plan", batch=BatchRange.parse("1:2:4"), check=False)
    plan = B.build_engine(opts).plan
    report = tmp_path / "bench.json"
    with uncapturable("invalidated after enqueue"):
        args = ["bench", "-e", plan, "-b", "1,2", "-n", "3", "--warmup", "1", "--cuda-graph", "--json", report]
        result = cli.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    assert "CUDA invalidated the CUDA graph capture" in result.output and "cudaStreamEndCapture" not in result.output
    rows = json.loads(report.read_text())["rows"]
    assert [row["batch"] for row in rows] == [1, 2] and not any(row["detail"]["cuda_graph"] for row in rows)


@pytest.mark.parametrize("version", ["8.5", "8.6"])
def test_int8_weight_files_are_refused_before_tensorrt_8_parses_them(version, fake, export_dir):
    """The default INT8 export stores int8 weights (TensorRT 10+); 8.x must be told to re-export with --trt."""
    fake(version)
    onnx = add_precision(export_dir, "int8")
    manifest = json.loads((export_dir / "manifest.int8.json").read_text())
    manifest["precision_report"] = {"weights": "int8"}
    (export_dir / "manifest.int8.json").write_text(json.dumps(manifest))
    result = cli.invoke(app, ["build", str(onnx)])
    assert result.exit_code == 2, result.output
    assert "stores int8 weights" in result.output and f"--trt {version}" in result.output
