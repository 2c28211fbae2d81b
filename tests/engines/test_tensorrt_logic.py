"""TensorRT logic that needs no GPU: version branching, plan headers, profiles, sidecars."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.engines.conftest import manifest_record
from vitc.artifacts import BatchRange, parse_manifest, parse_sidecar
from vitc.artifacts.sidecar import sidecar_path
from vitc.build import tensorrt as B
from vitc.build.options import make_profile
from vitc.engines import tensorrt as T
from vitc.engines import trt_plan as P
from vitc.errors import VitcError

# The flags each release needs for a precision-baked ONNX graph, written out from NVIDIA's sources
# (include/NvInfer.h and the release notes of each branch; tests/engines/trt_api/ has the names):
# before 10 an ONNX network needs kEXPLICIT_BATCH and weak typing takes the FP16/INT8 builder flags
# (INT8 Q/DQ graphs also keep FP16 allowed for the float islands); 10.x builds precision-baked graphs
# as kSTRONGLY_TYPED networks, where precision flags are an error; 11 is always strongly typed and
# has neither EXPLICIT_BATCH nor the precision flags. FP32 stays weakly typed before 11.
# Weakly typed FP16/INT8 builds (8.x) pin the graph's float32 layers under OBEY_PRECISION_CONSTRAINTS.
# TF32, on by default in every release, is cleared in every build unless asked for (`--tf32`).
EB, ST, OBEY = ("EXPLICIT_BATCH",), ("STRONGLY_TYPED",), "OBEY_PRECISION_CONSTRAINTS"
PLANS = {  # version: {precision: (network_flags, builder_flags, strongly_typed)}
    "8.5.2": {
        "fp32": (EB, (), False),
        "fp16": (EB, ("FP16", OBEY), False),
        "int8": (EB, ("INT8", "FP16", OBEY), False),
    },
    "8.6.1": {
        "fp32": (EB, (), False),
        "fp16": (EB, ("FP16", OBEY), False),
        "int8": (EB, ("INT8", "FP16", OBEY), False),
    },
    "10.0.1": {"fp32": ((), (), False), "fp16": (ST, (), True), "int8": (ST, (), True)},
    "10.16.0": {"fp32": ((), (), False), "fp16": (ST, (), True), "int8": (ST, (), True)},
    "11.1.0": {"fp32": ((), (), True), "fp16": ((), (), True), "int8": ((), (), True)},
}


@pytest.mark.parametrize("version", list(PLANS))
def test_precision_plans_per_version(version):
    feat = T.features(version)
    for precision, (network, builder, strong) in PLANS[version].items():
        plan = T.precision_plan(feat, precision)
        assert plan == T.PrecisionPlan(network, builder, strong, OBEY in builder, ("TF32",)), precision
        tf32 = T.precision_plan(feat, precision, tf32=True)
        assert tf32 == T.PrecisionPlan(network, (*builder, "TF32"), strong, OBEY in builder), precision
    with pytest.raises(VitcError, match="unknown precision"):
        T.precision_plan(feat, "bf16")


@pytest.mark.parametrize(
    ("version", "expected"),
    [  # (opt level, AMPERE_PLUS, SAME_COMPUTE_CAPABILITY, VERSION_COMPATIBLE): 8.6 added three, 10.9 one
        ("8.5.3", (False, False, False, False)),
        ("8.6.1", (True, True, False, True)),
        ("10.8.0", (True, True, False, True)),
        ("10.9.0", (True, True, True, True)),
        ("11.0.0", (True, True, True, True)),
    ],
)
def test_features_per_version(version, expected):
    feat = T.features(version)
    got = (feat.optimization_level, feat.hardware_compatibility, feat.same_compute_capability)
    assert (*got, feat.version_compatible) == expected


def test_parse_version():
    assert T.parse_version("10.3.0.26") == (10, 3, 0, 26)
    assert T.parse_version("8.6.1") == (8, 6, 1, 0)
    with pytest.raises(VitcError):
        T.parse_version("garbage")


def header(version=(10, 3, 0, 26), tag=b"ftrt") -> bytes:
    return tag + (0).to_bytes(4, "little") + bytes(16) + bytes(version) + bytes(36)


def test_plan_header_good_wrong_truncated(tmp_path: Path):
    parsed = P.parse_plan_header(header())
    assert parsed.version == (10, 3, 0, 26) and parsed.serialization == 0
    assert parsed.to_dict()["tensorrt"] == "10.3.0.26"
    assert P.parse_plan_header(header((0, 0, 0, 0))).version is None  # pre-8.6 plans carry no version
    assert P.parse_plan_header(header((8, 5, 3, 1))).version is None  # below 8.6 it cannot be a version
    odd = b"ftrt" + (107).to_bytes(4, "little") + bytes(16) + bytes((10, 3, 0, 26))  # word != 0: not trusted
    assert P.parse_plan_header(odd).version is None and P.parse_plan_header(odd).serialization == 107
    with pytest.raises(VitcError, match="not a TensorRT plan"):
        P.parse_plan_header(b"PK\x03\x04" + bytes(40))
    with pytest.raises(VitcError, match="truncated"):
        P.parse_plan_header(header()[:20])
    with pytest.raises(VitcError, match="only 2 bytes"):
        P.parse_plan_header(b"ft")
    plan = tmp_path / "m.plan"
    plan.write_bytes(header())
    assert P.read_plan_header(plan).version == (10, 3, 0, 26)
    assert P.plan_summary(plan)["header"]["tensorrt"] == "10.3.0.26"


def test_version_mismatch_is_one_line():
    parsed = P.parse_plan_header(header((8, 6, 2, 3)))
    with pytest.raises(VitcError) as err:
        P.check_plan_compat(parsed, "10.3.0.26", source="m.plan")
    message = str(err.value)
    assert "8.6.2.3" in message and "10.3.0.26" in message and "\n" not in message
    assert P.check_plan_compat(parsed, "8.6.2.3") == []
    # version-compatible plans run on a newer TensorRT, not an older one
    vc = parse_sidecar({"format": "vitc.engine", "options": {"version_compatible": True}})
    assert P.check_plan_compat(parsed, "10.3.0", vc) == []
    with pytest.raises(VitcError, match="older"):
        P.check_plan_compat(P.parse_plan_header(header((10, 3, 0, 0))), "8.6.2", vc)
    # pre-8.6 plan: the sidecar's version is used
    old = P.parse_plan_header(header((0, 0, 0, 0)))
    with pytest.raises(VitcError, match=r"8\.5\.2"):
        P.check_plan_compat(old, "10.3.0", parse_sidecar({"format": "vitc.engine", "tensorrt": "8.5.2.2"}))


def test_an_8_5_plan_whose_bytes_24_27_look_like_8_6_is_not_refused():
    """A real 8.5 plan has 0 in bytes 4-7 and its serialization version at byte 8; its bytes 24-27 are no
    version but read as 64.31 in the 8.6+ layout. vitc said "built with TensorRT 64.31.0.0, this machine has
    8.5.2.2; ... rebuild it" of a plan 8.5.2.2 had just built. The 8.6+ layout is trusted only where a release
    that writes it can have built the plan: not when the sidecar names 8.5 or 8.5 is installed."""
    plan_85 = P.parse_plan_header(b"ftrt" + bytes(4) + (232).to_bytes(4, "little") + bytes(12) + b"\x40\x1f\x00\x00")
    side = parse_sidecar({"format": "vitc.engine", "tensorrt": "8.5.2.2"})
    assert P.check_plan_compat(plan_85, "8.5.2.2", side, source="m.plan") == []
    with pytest.raises(VitcError) as err:  # on another release, the sidecar's version is the one named
        P.check_plan_compat(plan_85, "10.3.0.26", side, source="m.plan")
    assert str(err.value).startswith("m.plan: built with TensorRT 8.5.2.2, this machine has 10.3.0.26")
    # 8.5 installed and no sidecar: the header says nothing; TensorRT's deserialisation decides
    warnings = P.check_plan_compat(plan_85, "8.5.2.2", source="m.plan")
    assert warnings == ["m.plan: TensorRT unknown version (8.5 or older) and no sidecar to say which; it may not load"]
    assert P.built_with(plan_85, side).version is None and P.built_with(plan_85, None, "8.5.2.2").version is None
    # a plan of 8.6+ keeps its header's version, whatever the sidecar says of other things
    newer = P.parse_plan_header(header((10, 3, 0, 26)))
    assert P.built_with(newer, parse_sidecar({"format": "vitc.engine", "tensorrt": "10.3.0.26"})) == newer
    assert P.built_with(newer, None, "10.3.0.26") == newer and P.built_with(newer, None, "garbage") == newer


def test_gpu_mismatch():
    parsed = P.parse_plan_header(header())
    record = {"format": "vitc.engine", "gpu": {"name": "Orin", "compute_capability": "8.7"}, "options": {}}
    side = parse_sidecar(record)
    with pytest.raises(VitcError, match=r"compute capability 8\.7"):
        P.check_plan_compat(parsed, "10.3.0.26", side, {"name": "RTX 4090", "compute_capability": "8.9"})
    warn = P.check_plan_compat(parsed, "10.3.0.26", side, {"name": "Orin NX", "compute_capability": "8.7"})
    assert warn and "Orin NX" in warn[0]
    side = parse_sidecar({**record, "options": {"hardware_compat": "ampere+"}})
    assert P.check_plan_compat(parsed, "10.3.0.26", side, {"name": "A100", "compute_capability": "8.0"}) == []
    with pytest.raises(VitcError, match="Ampere"):
        P.check_plan_compat(parsed, "10.3.0.26", side, {"name": "T4", "compute_capability": "7.5"})


def test_profile_from_manifest_and_override(tmp_path: Path):
    manifest = parse_manifest(manifest_record(), tmp_path / "manifest.json")
    prof = make_profile("input", (-1, 3, 8, 8), manifest, None)
    assert prof.min == (1, 3, 8, 8) and prof.opt == (4, 3, 8, 8) and prof.max == (8, 3, 8, 8)
    prof = make_profile("input", (-1, 3, -1, -1), manifest, BatchRange.parse("2:16:32"))
    assert prof.to_dict() == {"input": "input", "min": [2, 3, 8, 8], "opt": [16, 3, 8, 8], "max": [32, 3, 8, 8]}
    assert make_profile("input", (4, 3, 8, 8), None, None).max == (4, 3, 8, 8)
    with pytest.raises(VitcError, match="static batch of 4"):
        make_profile("input", (4, 3, 8, 8), None, BatchRange.parse("1:4:8"))
    with pytest.raises(VitcError, match="dynamic C/H/W"):
        make_profile("input", (-1, 3, -1, -1), None, None)
    with pytest.raises(VitcError):
        BatchRange.parse("8:4:1")


def test_sidecar_contents(tmp_path: Path):
    manifest = parse_manifest(manifest_record(precision="fp16"), tmp_path / "manifest.json")
    prof = make_profile("input", (-1, 3, 8, 8), manifest, None)
    side = B.make_sidecar(
        trt_version="10.3.0",
        gpu={"name": "Orin", "compute_capability": "8.7"},
        jetson={"model": "AGX Orin", "l4t": "36.4.0", "jetpack": "6.1/6.2"},
        precision="fp16",
        plan=T.precision_plan(T.features("10.3.0"), "fp16"),
        profile=prof,
        onnx_path=tmp_path / "m.onnx",
        onnx_sha256="abc",
        manifest=manifest,
        build_seconds=12.3456,
        options={"dla_core": None},
        dla_fallback=["Softmax_3"],
    )
    record = json.loads(json.dumps(side.to_record()))
    assert record["format"] == "vitc.engine" and record["tensorrt"] == "10.3.0" and record["strongly_typed"] is True
    assert record["network_flags"] == ["STRONGLY_TYPED"] and record["profile"]["opt"] == [4, 3, 8, 8]
    assert record["onnx"]["sha256"] == "abc" and record["export_drift"] == {"samples": 4, "top1": 50.0}
    assert record["jetson"]["jetpack"] == "6.1/6.2" and record["build_seconds"] == 12.346
    assert record["dla_fallback_layers"] == ["Softmax_3"]
    assert parse_sidecar(record).to_record() == record  # the reader reads what the writer writes
    assert sidecar_path(tmp_path / "a.plan").name == "a.plan.json"


def _site_package(site: Path, name: str, init: str, dist: tuple[str, str] | None = None) -> None:
    """A package as pip or apt leaves it: name/__init__.py, and pip's dist-info (a folder named as pip names it)."""
    (site / name).mkdir(parents=True, exist_ok=True)
    (site / name / "__init__.py").write_text(init)
    if dist is not None:
        project, version = dist
        info = site / f"{project.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project}\nVersion: {version}\n")


# release/10.3's tensorrt/__init__.py of the tensorrt-cu12 wheel, and its bindings' (no libnvinfer here: it raises)
FRONTEND = "from tensorrt_bindings import *\nfrom tensorrt_bindings import __version__\n"
BINDINGS = 'import ctypes\nfrom .tensorrt import *\n\n__version__ = "10.3.0"\n'


@pytest.mark.parametrize(
    ("layout", "expected"),
    [
        ("tensorrt-cu12", "10.3.0"),  # pip install tensorrt-cu12: the frontend, its bindings, their dist-infos
        ("tensorrt-cu12, bindings without a version line", "10.3.0"),  # the tensorrt-cu12 distribution says it
        ("tensorrt-cu13 bindings only", "10.16.0"),  # the bindings' distribution, the last one read
        ("tensorrt 8.6 wheel", "8.6.1"),  # a literal in tensorrt/__init__.py, and the tensorrt distribution
        ("jetpack apt", "8.5.2.2"),  # python3-libnvinfer: the literal, no dist-info at all
        ("tensorrt-stubs", None),  # no version anywhere, no distribution: not a TensorRT
    ],
)
def test_the_installed_release_is_read_from_every_way_tensorrt_is_installed(
    layout: str, expected: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`pip install tensorrt-cu12` (NVIDIA's 10.x wheels) has no `tensorrt` distribution and its
    tensorrt/__init__.py imports __version__ from tensorrt_bindings: `vitc check` said there was no TensorRT."""
    site = tmp_path / "site"
    if layout.startswith("tensorrt-cu12"):
        plain = layout == "tensorrt-cu12"
        _site_package(site, "tensorrt", FRONTEND, ("tensorrt-cu12", "10.3.0"))
        _site_package(site, "tensorrt_bindings", BINDINGS if plain else "from .tensorrt import *\n")
        (site / "tensorrt_cu12_bindings-10.3.0.dist-info").mkdir()
        (site / "tensorrt_cu12_bindings-10.3.0.dist-info" / "METADATA").write_text(
            "Metadata-Version: 2.1\nName: tensorrt-cu12-bindings\nVersion: 10.3.0\n"
        )
    elif layout == "tensorrt-cu13 bindings only":
        _site_package(site, "tensorrt", FRONTEND)  # a shim re-exporting the bindings, as some projects add
        _site_package(site, "tensorrt_bindings", "from .tensorrt import *\n", ("tensorrt-cu13-bindings", "10.16.0"))
    elif layout == "tensorrt 8.6 wheel":
        _site_package(site, "tensorrt", 'import ctypes\n__version__ = "8.6.1"\n', ("tensorrt", "8.6.1"))
    elif layout == "jetpack apt":
        _site_package(site, "tensorrt", '__version__ = "8.5.2.2"\nraise ImportError("libnvinfer.so.8: not here")\n')
    else:
        (site / "tensorrt").mkdir(parents=True)  # tensorrt-stubs: a namespace package of .pyi files
        (site / "tensorrt" / "__init__.pyi").write_text("__version__: str\n")
    for name in ("tensorrt", "tensorrt_bindings"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.syspath_prepend(str(site))
    assert T.installed_release() == expected
    assert "tensorrt" not in sys.modules and "tensorrt_bindings" not in sys.modules  # read, not imported
