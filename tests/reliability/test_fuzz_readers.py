"""Fuzzing the readers of untrusted input: only VitcError may escape, whatever the bytes or values.

Property-based tests (hypothesis) drive the option/recipe parsing and the metadata readers; a
seeded mutation fuzzer flips, truncates and splices real artifacts (checkpoint, manifest, ONNX,
plan header). Counts per category are reported in docs/reliability.md.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vitc.artifacts import parse_manifest
from vitc.checkpoint import CheckpointMeta, read_checkpoint, read_meta, write_checkpoint
from vitc.cli._options import parse_assignments
from vitc.engines.trt_plan import parse_plan_header
from vitc.errors import VitcError
from vitc.models import create_model
from vitc.train.config import load_config

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def _only_vitc_errors(fn: Any, *args: Any) -> None:
    try:
        fn(*args)
    except VitcError as exc:
        assert "\n" not in str(exc).strip(), "errors are one line"


@FAST
@given(st.lists(st.text(max_size=30), max_size=5))
def test_set_parsing(items: list[str]) -> None:
    _only_vitc_errors(parse_assignments, items)


KEYS = ["optim.lr", "optim.epochs", "optim.batch_size", "data.fraction", "data.name", "aug.crop_scale", "aug.flip",
        "run.device", "model.args.depth", "model.drop_path_rate", "optim.ema_decay", "bogus.key", "optim"]  # fmt: skip


@FAST
@given(st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=10), json_values, max_size=4))
def test_config_overrides(overrides: dict[str, Any]) -> None:
    _only_vitc_errors(load_config, None, overrides)


checkpoint_records = st.fixed_dictionaries(
    {"format": st.just("vitc.checkpoint")},
    optional={k: json_values for k in ("version", "model", "args", "cfg", "class_names", "provenance", "extra")},
)


@FAST
@given(st.text(max_size=200) | json_values.map(json.dumps) | checkpoint_records.map(json.dumps))
def test_checkpoint_metadata_json(text: str) -> None:
    _only_vitc_errors(CheckpointMeta.from_json, text)


@FAST
@given(json_values | st.fixed_dictionaries({"format": st.just("vitc.export")}, optional={"version": json_values,
       "precision": json_values, "input_size": json_values, "batch": json_values, "model": json_values,
       "trt_target": json_values, "io_dtype": json_values}))  # fmt: skip
def test_manifest_records(record: Any) -> None:
    _only_vitc_errors(parse_manifest, record, Path("manifest.json"))


@FAST
@given(st.binary(max_size=64) | st.binary(max_size=60).map(lambda b: b"ftrt" + b))
def test_plan_headers(data: bytes) -> None:
    _only_vitc_errors(parse_plan_header, data)


def _mutations(data: bytes, count: int, seed: int) -> list[bytes]:
    """Truncations, byte flips, zeroed spans and spliced junk of `data`, reproducibly."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        buf = bytearray(data)
        kind = i % 4
        if kind == 0:
            buf = buf[: rng.randrange(len(buf))]
        elif kind == 1:
            for _ in range(rng.randint(1, 8)):
                buf[rng.randrange(len(buf))] = rng.randrange(256)
        elif kind == 2:
            start = rng.randrange(len(buf))
            buf[start : start + rng.randint(1, 64)] = bytes(min(64, len(buf) - start))
        else:
            start = rng.randrange(min(len(buf), 4096))
            buf[start:start] = rng.randbytes(rng.randint(1, 32))
        out.append(bytes(buf))
    return out


@pytest.fixture(scope="module")
def checkpoint_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "m.safetensors"
    write_checkpoint(path, create_model("deit_micro", depth=1, embed_dim=16, num_heads=2))
    return path.read_bytes()


def test_mutated_checkpoints(checkpoint_bytes: bytes, tmp_path: Path) -> None:
    path = tmp_path / "fuzz.safetensors"
    for data in _mutations(checkpoint_bytes, 200, seed=1):
        path.write_bytes(data)
        _only_vitc_errors(read_meta, path)
        _only_vitc_errors(read_checkpoint, path)


def test_mutated_onnx_metadata(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from vitc.cli.info import describe

    graph = helper.make_graph(
        [helper.make_node("Relu", ["input"], ["logits"])],
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 4])],
    )
    model = helper.make_model(graph)
    model.metadata_props.add(key="vitc", value=json.dumps({"model": "deit_micro"}))
    data = model.SerializeToString()
    path = tmp_path / "m.onnx"
    for mutated in _mutations(data, 200, seed=2):
        path.write_bytes(mutated)
        _only_vitc_errors(describe, path)
    assert onnx is not None


def test_mutated_manifests(tmp_path: Path) -> None:
    from vitc.artifacts import load_manifest

    record = {"format": "vitc.export", "version": 1, "model": "convit_micro", "precision": "fp16",
              "input_size": [3, 32, 32], "batch": {"min": 1, "opt": 8, "max": 32}, "trt_target": "10"}  # fmt: skip
    path = tmp_path / "manifest.json"
    for mutated in _mutations(json.dumps(record).encode(), 200, seed=3):
        path.write_bytes(mutated)
        _only_vitc_errors(load_manifest, path)


@pytest.mark.parametrize("heldout", ["../../etc/passwd", "/etc/passwd", "..", "sub/heldout.npz", 3])
def test_manifest_paths_never_leave_the_export_folder(heldout: Any) -> None:
    record = {"format": "vitc.export", "version": 1, "model": "m", "precision": "fp32", "input_size": [3, 8, 8],
              "batch": {"min": 1, "opt": 1, "max": 1}, "heldout": heldout}  # fmt: skip
    with pytest.raises(VitcError, match="heldout must be a file name"):
        parse_manifest(record, Path("export/run/manifest.fp32.json"))
