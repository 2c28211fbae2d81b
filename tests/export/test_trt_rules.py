"""`vitc check`'s per-version parser tables (onnx-tensorrt docs/operators.md per TensorRT release)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, checker, helper, numpy_helper  # noqa: E402

from tests.export.trt_ops_extract import parse  # noqa: E402
from vitc.artifacts.manifest import export_target  # noqa: E402
from vitc.errors import VitcError  # noqa: E402
from vitc.export.trt_rules import (  # noqa: E402
    check_onnx,
    int8_weights,
    max_opset,
    resolve,
    supported_ops,
    tables,
)

ROOT = Path(__file__).resolve().parents[2]


def _attention_model(opset: int = 23) -> onnx.ModelProto:
    """The opset-23 Attention op on 4-D Q, K, V (what `torch.onnx.export` makes of SDPA at opset 23)."""
    shape = [1, 2, 4, 8]
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n in "QKV"]
    node = helper.make_node("Attention", ["Q", "K", "V"], ["Y"], name="/blocks.0/attn/Attention")
    graph = helper.make_graph([node], "attn", inputs, [helper.make_tensor_value_info("Y", TensorProto.FLOAT, shape)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    checker.check_model(model)
    return model


def _problems(model: onnx.ModelProto, trt: str) -> list[str]:
    return [f"{f.op_type}: {f.problem}" for f in check_onnx(model, trt)]


def test_attention_only_where_the_parser_has_it_and_reads_opset_23() -> None:
    model = _attention_model()
    assert _problems(model, "11") == []  # 11.x: Attention and opsets up to 24
    assert _problems(model, "10.14") == []
    problems = _problems(model, "10")  # any 10.x (JetPack 6: 10.3) has neither
    assert "opset: opset 23 > 20, the highest TensorRT 10 reads" in problems
    assert any(p.startswith("Attention: the Attention op (opset 23) is parsed from TensorRT 10.14") for p in problems)
    assert any(p.startswith("Attention:") for p in _problems(model, "10.13"))
    assert len(_problems(model, "8.6")) == 2


def test_tables_follow_the_parser_changelogs() -> None:
    """What onnx-tensorrt's Changelog says each release added shows up first in that release's table."""
    first = {op: next(v for v in tables() if op in tables()[v]["supported"]) for op in ("LayerNormalization", "Gelu")}
    assert first == {"LayerNormalization": "8.6", "Gelu": "10.0"}
    assert [max_opset(v) for v in ("8.5", "8.6", "10", "10.14", "11")] == [17, 17, 20, 24, 24]
    for older, newer in zip(list(tables()), list(tables())[1:], strict=False):
        assert set(tables()[older]["supported"]) <= set(tables()[newer]["supported"]), (older, newer)
    assert "Attention" in tables()["10.14"]["supported"] and "Attention" not in supported_ops("10")
    assert {"RMSNormalization", "Swish"} <= supported_ops("11") and "Swish" not in supported_ops("10.14")


def test_version_resolution() -> None:
    assert [resolve(v) for v in ("8.5", "10", "10.3", "10.16", "11", "11.0", "11.4")] == [
        "8.5", "10.0", "10.0", "10.14", "11.1", "11.1", "11.1",
    ]  # fmt: skip
    for bad in ("9.0", "ten", "12"):
        with pytest.raises(VitcError, match="unknown TensorRT version"):
            resolve(bad)
    for old in ("7", "8.4", "8.4.1.5"):  # 8.4 took 8.5's table; vitc builds for neither
        with pytest.raises(VitcError, match=rf"^TensorRT {re.escape(old)} is older than 8.5, the oldest vitc builds"):
            resolve(old)
    assert not int8_weights("8.6") and int8_weights("10") and int8_weights("11") and int8_weights(None)
    # what tensorrt.__version__ says on a device: the build's parse errors name the table and the export target
    assert [resolve(v) for v in ("8.5.2.2", "8.6.2.3", "10.3.0.30", "10.16.0")] == ["8.5", "8.6", "10.0", "10.14"]
    assert [export_target(v) for v in ("8.5.2.2", "8.6.1", "10.3.0.30", "11.1.0", "9.3.0", "7.1.3", "x")] == [
        "8.5", "8.6", "10", "11", None, None, None,
    ]  # fmt: skip


def test_int8_weight_initializers_need_tensorrt_10() -> None:
    weight = numpy_helper.from_array(np.ones((8, 4), np.int8), "W_q")
    scale = numpy_helper.from_array(np.full(4, 0.1, np.float32), "W_scale")
    zero = numpy_helper.from_array(np.zeros(4, np.int8), "W_zp")
    nodes = [
        helper.make_node("DequantizeLinear", ["W_q", "W_scale", "W_zp"], ["W"], name="dq", axis=1),
        helper.make_node("MatMul", ["x", "W"], ["y"], name="mm"),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])], [weight, scale, zero],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert _problems(model, "10") == [] and _problems(model, "11") == []
    assert _problems(model, "8.6") == ["DequantizeLinear: int8 weights into DequantizeLinear need TensorRT 10 "
                                       "(export for this target keeps them float)"]  # fmt: skip


def test_extract_parses_both_header_forms() -> None:
    rows = "".join(f"| Op{i} | {'Y' if i % 3 else 'N'} | FP32 |\n" for i in range(120))
    old = parse("TensorRT 8.5 supports operators up to Opset 17. More.\n\n| Operator | Supported |\n" + rows)
    new = parse("TensorRT 10.14 supports operators in the inclusive range of opset 9 to opset 24.\n" + rows)
    assert (old["opset_min"], old["opset_max"], new["opset_min"], new["opset_max"]) == (None, 17, 9, 24)
    assert len(new["supported"]) == 80 and "Op0" in new["unsupported"]
    with pytest.raises(ValueError, match="operator rows"):
        parse("TensorRT 10.0 supports operators in the inclusive range of opset 9 to opset 20.\n| Abs | Y |\n")


def test_tables_ship_with_the_package() -> None:
    assert '"export/trt_onnx_ops.json"' in (ROOT / "pyproject.toml").read_text()  # package-data
    assert (ROOT / "vitc" / "export" / "trt_onnx_ops.json").is_file()
