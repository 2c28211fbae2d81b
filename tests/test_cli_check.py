"""`vitc check` groups repeated findings by kind with a count and folds the node names."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from vitc.cli.check import fold_names
from vitc.cli.main import app

runner = CliRunner()


def _layernorm_chain(path: Path, blocks: int, custom: bool = True) -> Path:
    """x → LayerNormalization (norm1, norm2 per block, then a final norm) → Custom op: opset 17."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    names = [f"/blocks.{i}/norm{j}/LayerNormalization" for i in range(blocks) for j in (1, 2)]
    names.append("/norm/LayerNormalization")
    nodes, prev = [], "x"
    for i, name in enumerate(names):
        nodes.append(helper.make_node("LayerNormalization", [prev, "gamma", "beta"], [f"t{i}"], name=name, axis=-1))
        prev = f"t{i}"
    head = ("Mystery", "acme") if custom else ("Identity", "")
    nodes.append(helper.make_node(head[0], [prev], ["y"], name=f"/head/{head[0]}", domain=head[1]))
    weights = [numpy_helper.from_array(np.ones(4, dtype=np.float32), n) for n in ("gamma", "beta")]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        initializer=weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("acme", 1)])
    onnx.save(model, str(path))
    return path


def test_fold_names_keeps_order_and_first_and_last() -> None:
    names = [f"/blocks.{i}/norm1/LN" for i in range(12)] + ["/norm/LN", "/blocks.3/attn/MatMul"]
    assert fold_names(names) == "/blocks.0/norm1/LN … /blocks.11/norm1/LN (12), /norm/LN, /blocks.3/attn/MatMul"
    folded = fold_names([f"/n.{i}/a" for i in range(3)] + ["/x", "/y", "/z", "/w"])
    assert folded == "/n.0/a … /n.2/a (3), /x, /y, /z, +1 more (--all lists them)"


def test_check_prints_one_line_per_kind_with_a_count(tmp_path: Path) -> None:
    path = _layernorm_chain(tmp_path / "m.onnx", blocks=12)
    result = runner.invoke(app, ["check", str(path), "--trt", "8.5"])
    assert result.exit_code == 1  # findings: 1, bad input: 2, as ruff and pytest
    lines = [ln.strip() for ln in result.output.splitlines() if ln.strip()]
    assert sum("LayerNormalization ×25:" in ln for ln in lines) == 1
    assert not any(ln.startswith("/blocks.1/norm1") for ln in lines)
    folded = "/blocks.0/norm1/LayerNormalization … /blocks.11/norm1/LayerNormalization (12)"
    assert any(ln.startswith(folded) for ln in lines), result.output
    assert any(ln.startswith("Mystery: custom domain 'acme'") for ln in lines)
    assert "26 problem(s) for TensorRT 8.5" in result.output


def test_check_all_lists_every_node(tmp_path: Path) -> None:
    path = _layernorm_chain(tmp_path / "m.onnx", blocks=3)
    result = runner.invoke(app, ["check", str(path), "--trt", "8.5", "--all"])
    assert result.exit_code == 1
    assert "/blocks.0/norm2/LayerNormalization, /blocks.1/norm1/LayerNormalization, /blocks.1/norm2" in result.output
    assert runner.invoke(app, ["check", str(path), "--trt", "8.6"]).exit_code == 1  # the custom op remains


def test_check_takes_the_release_a_device_reports(tmp_path: Path) -> None:
    """`python3 -c "import tensorrt; print(tensorrt.__version__)"` on JetPack 5 says 8.5.2.2: --trt took 8.5 only."""
    path = _layernorm_chain(tmp_path / "m.onnx", blocks=1)
    result = runner.invoke(app, ["check", str(path), "--trt", "8.5.2.2"])
    assert result.exit_code == 1 and "LayerNormalization ×3:" in result.output
    assert "4 problem(s) for TensorRT 8.5.2.2" in result.output
    unknown = runner.invoke(app, ["check", str(path), "--trt", "9.2"])
    assert unknown.exit_code == 2 and "unknown TensorRT version '9.2'" in unknown.output


@pytest.mark.parametrize("content", [b"", b"\x08\x07"], ids=["zero bytes", "an ir_version alone"])
def test_a_model_without_a_graph_is_not_ok(tmp_path: Path, content: bytes) -> None:
    """Protobuf parses zero bytes as an empty ModelProto: `vitc check` said "OK for TensorRT 10 (0 nodes)"."""
    pytest.importorskip("onnx")
    path = tmp_path / "model.onnx"
    path.write_bytes(content)
    result = runner.invoke(app, ["check", str(path)])
    assert result.exit_code == 2, result.output
    empty = "empty: " if not content else ""
    assert result.output.strip() == f"error: {path} is not an ONNX model ({empty}no graph)"


def test_a_plan_is_named_as_one(tmp_path: Path) -> None:
    """A zero-byte (or any) .plan was read as ONNX and, empty, passed as "OK for TensorRT 10 (0 nodes)"."""
    plan = tmp_path / "model.plan"
    plan.write_bytes(b"")
    result = runner.invoke(app, ["check", str(plan)])
    assert result.exit_code == 2 and "OK" not in result.output, result.output
    assert ".plan names a TensorRT plan and vitc check reads ONNX files" in " ".join(result.output.split())


@pytest.fixture
def no_tensorrt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # find_spec says absent, as on a machine without it


def _installed_tensorrt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, init: str) -> None:
    """A tensorrt package whose __init__.py is `init`, first on sys.path for the test."""
    package = tmp_path / "site" / "tensorrt"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(init)
    monkeypatch.delitem(sys.modules, "tensorrt", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))


def test_without_trt_check_targets_the_installed_tensorrt_without_importing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """JetPack 5: "OK for TensorRT 10", then `vitc build` failed on the LayerNormalization 8.5 cannot parse. The
    installed release is read from its package (importing it would load libnvinfer: here it raises)."""
    path = _layernorm_chain(tmp_path / "m.onnx", blocks=1, custom=False)
    raising = '__version__ = "8.5.2.2"\nraise ImportError("libnvinfer.so.8: not here")\n'
    _installed_tensorrt(tmp_path, monkeypatch, raising)
    result = runner.invoke(app, ["check", str(path)])
    assert result.exit_code == 1, result.output
    assert "error: " + str(path) + ": 3 problem(s) for TensorRT 8.5, the one installed here" in " ".join(
        result.output.split()
    )
    assert "tensorrt" not in sys.modules
    given = runner.invoke(app, ["check", str(path), "--trt", "10"])
    assert given.exit_code == 0 and f"{path}: OK for TensorRT 10 (4 nodes)" in given.output, given.output


def test_a_tensorrt_older_than_8_5_is_no_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """TensorRT 8.4 (JetPack 5.0.2), installed or given, was checked against 8.5's parser table and said "OK for
    TensorRT 8.4, the one installed here", where `vitc build` refuses that release: --trt 8.4 is refused in one line,
    and an installed 8.4 is said unsupported while the file is checked for the next target."""
    path = _layernorm_chain(tmp_path / "m.onnx", blocks=1, custom=False)
    given = runner.invoke(app, ["check", str(path), "--trt", "8.4"])
    assert given.exit_code == 2
    assert given.output == (
        "error: TensorRT 8.4 is older than 8.5, the oldest vitc builds for (choose one of: 8.5, 8.6, 10, 11, or X.Y "
        "from 8.5)\n"
    )
    _installed_tensorrt(tmp_path, monkeypatch, '__version__ = "8.4.1.5"\n')
    installed = runner.invoke(app, ["check", str(path)])
    said = " ".join(installed.output.split())
    assert installed.exit_code == 0, installed.output
    assert said.endswith(
        "OK for TensorRT 10, TensorRT 8.4.1.5 is installed here, which vitc does not build for (it needs 8.5 or "
        "newer); the default (no export target: --trt names another) (4 nodes)"
    ), said


def test_without_trt_check_targets_a_pip_installed_tensorrt_cu12(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`pip install tensorrt-cu12` (NVIDIA's 10.x wheels) installs no `tensorrt` distribution and a
    tensorrt/__init__.py that imports its __version__ from tensorrt_bindings: vitc check said "no TensorRT here"."""
    path = _layernorm_chain(tmp_path / "m.onnx", blocks=1, custom=False)
    site = tmp_path / "site"
    for package, init in (
        ("tensorrt", "from tensorrt_bindings import *\nfrom tensorrt_bindings import __version__\n"),
        ("tensorrt_bindings", 'from .tensorrt import *\n\n__version__ = "10.3.0"\n'),  # no tensorrt.so: it raises
    ):
        (site / package).mkdir(parents=True)
        (site / package / "__init__.py").write_text(init)
    for project in ("tensorrt_cu12", "tensorrt_cu12_bindings"):
        (site / f"{project}-10.3.0.dist-info").mkdir()
        name = project.replace("_", "-")
        (site / f"{project}-10.3.0.dist-info" / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {name}\nVersion: 10.3.0\n"
        )
    for module in ("tensorrt", "tensorrt_bindings"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    monkeypatch.syspath_prepend(str(site))
    result = runner.invoke(app, ["check", str(path)])
    assert result.exit_code == 0, result.output
    assert f"{path}: OK for TensorRT 10.3, the one installed here (4 nodes)" in " ".join(result.output.split())


def test_without_trt_or_tensorrt_check_targets_the_export(tmp_path: Path, no_tensorrt: None) -> None:
    """No TensorRT here: the target the manifest beside the file records, else 10, said as such."""
    import hashlib
    import json

    from tests.engines.conftest import manifest_record

    path = _layernorm_chain(tmp_path / "model.fp32.onnx", blocks=1, custom=False)
    result = runner.invoke(app, ["check", str(path)])
    assert result.exit_code == 0, result.output
    assert "OK for TensorRT 10, the default (no TensorRT here, no export target: --trt names another) (4 nodes)" in (
        " ".join(result.output.split())
    )
    package = tmp_path / "site" / "tensorrt"  # a release vitc has no parser table for: said, not "no TensorRT"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text('__version__ = "7.1.3.0"\n')
    sys.modules.pop("tensorrt", None)
    sys.path.insert(0, str(tmp_path / "site"))
    try:
        old = runner.invoke(app, ["check", str(path)])
    finally:
        sys.path.remove(str(tmp_path / "site"))
        sys.modules["tensorrt"] = None  # type: ignore[assignment]  # as no_tensorrt left it
    assert old.exit_code == 0 and (
        "OK for TensorRT 10, TensorRT 7.1.3.0 is installed here, which vitc does not build for (it needs 8.5 or "
        "newer); the default (no export target: --trt names another) (4 nodes)"
    ) in " ".join(old.output.split()), old.output
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    (tmp_path / "manifest.fp32.json").write_text(json.dumps(manifest_record(trt_target="8.5", onnx_sha256=sha)))
    result = runner.invoke(app, ["check", str(path)])
    assert result.exit_code == 1, result.output
    assert "3 problem(s) for TensorRT 8.5, the export's target in manifest.fp32.json" in " ".join(result.output.split())
