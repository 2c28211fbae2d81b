"""TensorRT logic that needs no GPU: version branching, plan headers, profiles, sidecars."""

from __future__ import annotations

import json
import types
from pathlib import Path

import pytest

from tests.engines.conftest import manifest_record
from vitc.engines import tensorrt as T
from vitc.engines import trt_build as B
from vitc.engines.manifest import BatchRange, parse_manifest
from vitc.errors import VitcError


@pytest.mark.parametrize(
    ("version", "fp16", "int8", "opt_level", "hw"),
    [
        ("8.5.2", ((), ("FP16",), False), ((), ("INT8", "FP16"), False), False, False),
        ("8.6.1", ((), ("FP16",), False), ((), ("INT8", "FP16"), False), True, True),
        ("10.3.0", (("STRONGLY_TYPED",), (), True), (("STRONGLY_TYPED",), (), True), True, True),
        ("11.1.0", ((), (), True), ((), (), True), True, True),
    ],
)
def test_precision_plans_per_version(version, fp16, int8, opt_level, hw):
    feat = T.features(version)
    batch_flag = ("EXPLICIT_BATCH",) if feat.version[0] < 10 else ()
    for precision, (net, flags, strong) in (("fp16", fp16), ("int8", int8)):
        plan = T.precision_plan(feat, precision)
        assert plan.network_flags == batch_flag + net and plan.builder_flags == flags and plan.strongly_typed is strong
    fp32 = T.precision_plan(feat, "fp32")
    assert fp32.builder_flags == () and fp32.network_flags == batch_flag
    assert fp32.strongly_typed is (feat.version[0] >= 11)
    assert feat.optimization_level is opt_level and feat.hardware_compatibility is hw
    assert feat.precision_flags is (feat.version[0] < 11)
    assert feat.same_compute_capability is (feat.major_minor >= (10, 9))


def test_parse_version():
    assert T.parse_version("10.3.0.26") == (10, 3, 0, 26)
    assert T.parse_version("8.6.1") == (8, 6, 1, 0)
    with pytest.raises(VitcError):
        T.parse_version("garbage")


def header(version=(10, 3, 0, 26), tag=b"ftrt") -> bytes:
    return tag + (0).to_bytes(4, "little") + bytes(16) + bytes(version) + bytes(36)


def test_plan_header_good_wrong_truncated(tmp_path: Path):
    parsed = T.parse_plan_header(header())
    assert parsed.version == (10, 3, 0, 26) and parsed.serialization == 0
    assert parsed.to_dict()["tensorrt"] == "10.3.0.26"
    assert T.parse_plan_header(header((0, 0, 0, 0))).version is None  # pre-8.6 plans carry no version
    assert T.parse_plan_header(header((8, 5, 3, 1))).version is None  # below 8.6 it cannot be a version
    odd = b"ftrt" + (107).to_bytes(4, "little") + bytes(16) + bytes((10, 3, 0, 26))  # word != 0: not trusted
    assert T.parse_plan_header(odd).version is None and T.parse_plan_header(odd).serialization == 107
    with pytest.raises(VitcError, match="not a TensorRT plan"):
        T.parse_plan_header(b"PK\x03\x04" + bytes(40))
    with pytest.raises(VitcError, match="truncated"):
        T.parse_plan_header(header()[:20])
    with pytest.raises(VitcError, match="only 2 bytes"):
        T.parse_plan_header(b"ft")
    plan = tmp_path / "m.plan"
    plan.write_bytes(header())
    assert T.read_plan_header(plan).version == (10, 3, 0, 26)
    assert T.plan_summary(plan)["header"]["tensorrt"] == "10.3.0.26"


def test_version_mismatch_is_one_line():
    parsed = T.parse_plan_header(header((8, 6, 2, 3)))
    with pytest.raises(VitcError) as err:
        T.check_plan_compat(parsed, "10.3.0.26", source="m.plan")
    message = str(err.value)
    assert "8.6.2.3" in message and "10.3.0.26" in message and "\n" not in message
    assert T.check_plan_compat(parsed, "8.6.2.3") == []
    # version-compatible plans run on a newer TensorRT, not an older one
    vc = {"format": "vitc.engine", "options": {"version_compatible": True}}
    assert T.check_plan_compat(parsed, "10.3.0", vc) == []
    with pytest.raises(VitcError, match="older"):
        T.check_plan_compat(T.parse_plan_header(header((10, 3, 0, 0))), "8.6.2", vc)
    # pre-8.6 plan: the sidecar's version is used
    old = T.parse_plan_header(header((0, 0, 0, 0)))
    with pytest.raises(VitcError, match=r"8\.5\.2"):
        T.check_plan_compat(old, "10.3.0", {"tensorrt": "8.5.2.2"})


def test_gpu_mismatch():
    parsed = T.parse_plan_header(header())
    side = {"gpu": {"name": "Orin", "compute_capability": "8.7"}, "options": {"hardware_compat": "none"}}
    with pytest.raises(VitcError, match=r"compute capability 8\.7"):
        T.check_plan_compat(parsed, "10.3.0.26", side, {"name": "RTX 4090", "compute_capability": "8.9"})
    warn = T.check_plan_compat(parsed, "10.3.0.26", side, {"name": "Orin NX", "compute_capability": "8.7"})
    assert warn and "Orin NX" in warn[0]
    side["options"]["hardware_compat"] = "ampere+"
    assert T.check_plan_compat(parsed, "10.3.0.26", side, {"name": "A100", "compute_capability": "8.0"}) == []
    with pytest.raises(VitcError, match="Ampere"):
        T.check_plan_compat(parsed, "10.3.0.26", side, {"name": "T4", "compute_capability": "7.5"})


def test_profile_from_manifest_and_override(tmp_path: Path):
    manifest = parse_manifest(manifest_record(), tmp_path / "manifest.json")
    prof = B.make_profile("input", (-1, 3, 8, 8), manifest, None)
    assert prof.min == (1, 3, 8, 8) and prof.opt == (4, 3, 8, 8) and prof.max == (8, 3, 8, 8)
    prof = B.make_profile("input", (-1, 3, -1, -1), manifest, BatchRange.parse("2:16:32"))
    assert prof.to_dict() == {"input": "input", "min": [2, 3, 8, 8], "opt": [16, 3, 8, 8], "max": [32, 3, 8, 8]}
    assert B.make_profile("input", (4, 3, 8, 8), None, None).max == (4, 3, 8, 8)
    with pytest.raises(VitcError, match="static batch of 4"):
        B.make_profile("input", (4, 3, 8, 8), None, BatchRange.parse("1:4:8"))
    with pytest.raises(VitcError, match="dynamic C/H/W"):
        B.make_profile("input", (-1, 3, -1, -1), None, None)
    with pytest.raises(VitcError):
        BatchRange.parse("8:4:1")


def test_sidecar_contents(tmp_path: Path):
    manifest = parse_manifest(manifest_record(precision="fp16"), tmp_path / "manifest.json")
    prof = B.make_profile("input", (-1, 3, 8, 8), manifest, None)
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
    json.dumps(side)
    assert side["format"] == "vitc.engine" and side["tensorrt"] == "10.3.0" and side["strongly_typed"] is True
    assert side["network_flags"] == ["STRONGLY_TYPED"] and side["profile"]["opt"] == [4, 3, 8, 8]
    assert side["onnx"]["sha256"] == "abc" and side["export_drift"] == {"samples": 4, "top1": 50.0}
    assert side["jetson"]["jetpack"] == "6.1/6.2" and side["build_seconds"] == 12.346
    assert side["dla_fallback_layers"] == ["Softmax_3"]
    assert T.sidecar_path(tmp_path / "a.plan").name == "a.plan.json"


class _Enum:
    def __init__(self, **values: int) -> None:
        self.__dict__.update(values)


def test_build_configures_flags_through_a_fake_trt(tmp_path: Path, monkeypatch, tiny_onnx):
    """build_engine with a fake `trt` module: which network and builder flags reach the API."""
    calls: dict[str, list] = {"flags": [], "network": []}

    class Config:
        builder_optimization_level = 3

        def set_flag(self, flag):
            calls["flags"].append(flag)

        def set_memory_pool_limit(self, pool, size):
            calls["pool"] = size

        def add_optimization_profile(self, p):
            calls["profile"] = p.shapes

        def create_timing_cache(self, data):
            return data

        def set_timing_cache(self, cache, ignore):
            return True

        def get_timing_cache(self):
            return types.SimpleNamespace(serialize=lambda: b"cache")

    class Profile:
        def set_shape(self, name, lo, opt, hi):
            self.shapes = (name, lo, opt, hi)

    tensor = types.SimpleNamespace(name="input", shape=[-1, 3, 8, 8])
    network = types.SimpleNamespace(get_input=lambda i: tensor, num_layers=0)

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            calls["network"].append(flags)
            return network

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, net, cfg):
            return b"ftrt" + bytes(60)

    class Parser:
        def __init__(self, net, logger):
            pass

        def parse_from_file(self, path):
            return True

    def fake(version: str):
        return types.SimpleNamespace(
            __version__=version,
            Logger=type("L", (), {"WARNING": 2, "__init__": lambda s, lvl: None}),
            Builder=Builder,
            OnnxParser=Parser,
            Dims=tuple,
            NetworkDefinitionCreationFlag=_Enum(EXPLICIT_BATCH=0, STRONGLY_TYPED=1),
            BuilderFlag=_Enum(FP16=10, INT8=11, VERSION_COMPATIBLE=12),
            MemoryPoolType=_Enum(WORKSPACE=0),
        )

    monkeypatch.setattr(T, "tensorrt_available", lambda: True)
    monkeypatch.setattr("vitc.engines.cuda.Cuda.__init__", lambda self, prefer=None: None)
    monkeypatch.setattr(
        "vitc.engines.cuda.Cuda.device_properties", lambda self, d=0: {"name": "G", "compute_capability": "8.7"}
    )
    expected = {"8.5.2": (1, [11, 10]), "10.3.0": (2, []), "11.1.0": (0, [])}
    for version, (network_flags, builder_flags) in expected.items():
        calls["flags"].clear()
        fake_trt = fake(version)
        monkeypatch.setattr(T, "trt", fake_trt)  # installed_version() reads the version here
        monkeypatch.setattr(B, "trt", fake_trt)  # build_engine drives the builder here
        out = tmp_path / version / "m.plan"
        opts = B.BuildOptions(
            onnx=tiny_onnx, output=out, precision="int8", batch=BatchRange.parse("1:2:4"), workspace_mb=64
        )
        result = B.build_engine(opts)
        assert calls["network"][-1] == network_flags and calls["flags"] == builder_flags
        assert calls["pool"] == 64 << 20 and calls["profile"][1] == (1, 3, 8, 8) and calls["profile"][3] == (4, 3, 8, 8)
        assert out.read_bytes()[:4] == b"ftrt" and (out.parent / f"timing-trt{version}.cache").read_bytes() == b"cache"
        assert json.loads(T.sidecar_path(out).read_text())["tensorrt"] == version == result.sidecar["tensorrt"]
    fake_trt = fake("8.5.2")
    monkeypatch.setattr(T, "trt", fake_trt)
    monkeypatch.setattr(B, "trt", fake_trt)
    with pytest.raises(VitcError, match=r"8\.6 or newer"):
        B.build_engine(B.BuildOptions(onnx=tiny_onnx, output=tmp_path / "x.plan", opt_level=5))
