"""`vitc export` / `vitc check` through Typer: TensorRT lint and one-line errors for bad input."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from vitc.cli._errors import handle_errors
from vitc.cli.check import check
from vitc.cli.eval import evaluate
from vitc.cli.export import export

app = typer.Typer()
app.command("export")(handle_errors(export))
app.command("check")(handle_errors(check))
app.command("eval")(handle_errors(evaluate))
runner = CliRunner()


def test_check_flags_layernorm_for_85_and_passes_for_86(exports: dict) -> None:
    path = str(exports["fp32"].onnx_path)
    bad = runner.invoke(app, ["check", path, "--trt", "8.5"])
    assert bad.exit_code == 1  # problems found: 1 (bad input: 2)
    assert "LayerNormalization" in bad.output and "/blocks.0/norm1/LayerNormalization" in bad.output
    ok = runner.invoke(app, ["check", path, "--trt", "8.6"])
    assert ok.exit_code == 0, ok.output


def test_check_int8_and_fp16_pass_for_10(exports: dict) -> None:
    for precision in ("fp16", "int8"):
        result = runner.invoke(app, ["check", str(exports[precision].onnx_path), "--trt", "10"])
        assert result.exit_code == 0, result.output


def test_check_flags_asymmetric_qdq(exports: dict, tmp_path) -> None:
    import numpy as np
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(exports["int8"].onnx_path))
    zp = next(t for t in proto.graph.initializer if t.name.endswith("zero_point") and t.dims == [])
    zp.CopyFrom(numpy_helper.from_array(np.array(3, dtype=np.int8), zp.name))
    path = tmp_path / "asym.onnx"
    onnx.save(proto, str(path))
    result = runner.invoke(app, ["check", str(path), "--trt", "10"])
    assert result.exit_code == 1 and "zero point" in result.output


def _err(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    return lines[0]


def test_bad_inputs_are_one_line_errors(trained_ckpt, exports: dict, tmp_path) -> None:
    ck = str(trained_ckpt)
    out = str(exports["fp32"].onnx_path.parent.parent)
    assert "unknown precision" in _err(["export", ck, "--precision", "int4", "--out", str(tmp_path)])
    assert "opset" in _err(["export", ck, "--trt", "8.5", "--opset", "17", "--out", str(tmp_path)])
    assert "TensorRT 8.6 parses" in _err(["export", ck, "--trt", "8.6", "--opset", "18", "--out", str(tmp_path)])
    assert "--calib-images" in _err(["export", ck, "-p", "int8", "--calib-images", "0", "--out", str(tmp_path)])
    for args in (["-p", "fp16"], ["-p", "fp32", "-p", "fp16"], []):  # what is not quantized: int8's alone
        line = _err(["export", ck, *args, "--high-precision-dtype", "fp32", "--out", str(tmp_path)])
        assert line.startswith("error: --high-precision-dtype applies to --precision int8 only"), line
    bf16 = _err(["export", ck, "-p", "int8", "--high-precision-dtype", "bf16", "--out", str(tmp_path)])
    assert bf16 == "error: --high-precision-dtype must be fp16 or fp32, got 'bf16'"
    before = exports["fp32"].onnx_path.read_bytes()
    assert "--force" in _err(["export", ck, "--run", "r", "--out", out, "--dynamic-batch", "1:4:8"])
    assert exports["fp32"].onnx_path.read_bytes() == before
    plain = tmp_path / "plain.safetensors"
    import numpy as np
    from safetensors.numpy import save_file

    save_file({"w": np.zeros(2, np.float32)}, str(plain))
    assert "metadata" in _err(["export", str(plain), "--out", str(tmp_path)])
    assert "unknown TensorRT" in _err(["check", str(exports["fp32"].onnx_path), "--trt", "9"])


def test_empty_or_wrong_calibration_set() -> None:
    import numpy as np
    import pytest

    from vitc.errors import VitcError
    from vitc.quant.calib import check_images

    with pytest.raises(VitcError, match="empty"):
        check_images(np.zeros((0, 3, 32, 32), np.float32), (3, 32, 32))
    with pytest.raises(VitcError, match="model takes"):
        check_images(np.zeros((4, 3, 28, 28), np.float32), (3, 32, 32))


def test_drift_beyond_max_drop_fails_and_writes_nothing(trained_ckpt, tmp_path) -> None:
    result = runner.invoke(app, ["export", str(trained_ckpt), "-p", "int8", "--calib-images", "16", "--max-drop", "-5",
                "--out", str(tmp_path), "--run", "x"])  # fmt: skip
    assert result.exit_code == 1, result.output  # a failed check (bad input is 2)
    assert result.output.strip().splitlines()[-1].startswith("error: int8 lost")
    assert not (tmp_path / "x" / "model.int8.onnx").exists()


def test_several_precisions_share_one_export(trained_ckpt, tmp_path, monkeypatch) -> None:
    """`-p fp32 -p fp16` compiles and exports the model once, then bakes each precision from that graph."""
    import json

    from vitc.export import onnx_export

    calls = []
    original = onnx_export.export_onnx
    monkeypatch.setattr(onnx_export, "export_onnx", lambda *a, **k: calls.append(1) or original(*a, **k))
    result = runner.invoke(app, ["export", str(trained_ckpt), "-p", "fp32", "-p", "fp16", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert len(calls) == 1 and "accuracy drift" in result.output
    run = tmp_path / trained_ckpt.parent.name
    manifests = {p: json.loads((run / f"manifest.{p}.json").read_text()) for p in ("fp32", "fp16")}
    assert manifests["fp32"]["precision_report"] == {} and manifests["fp16"]["precision_report"]
    assert manifests["fp32"]["onnx_sha256"] != manifests["fp16"]["onnx_sha256"]
    again = runner.invoke(app, ["export", str(trained_ckpt), "-p", "int8", "-p", "fp16", "--out", str(tmp_path)])
    assert again.exit_code == 2 and "--force" in again.output  # checked before any work: no int8 file either
    assert not (run / "model.int8.onnx").exists()
    for args in ([], ["--out", str(tmp_path / "mine.png")]):  # eval's report of fp32 by default, and one it named
        measured = runner.invoke(app, ["eval", str(run / "model.fp32.onnx"), *args])
        assert measured.exit_code == 0, measured.output
    assert (run / "model.fp32.confusion.test.json").exists() and (run / "model.fp32.confusion.test.png").exists()
    forced = runner.invoke(app, ["export", str(trained_ckpt), "-p", "fp32", "--out", str(tmp_path), "--force"])
    assert forced.exit_code == 0, forced.output
    assert "removed model.fp32.confusion.test.json, model.fp32.confusion.test.png" in forced.output  # kept before
    assert not list(run.glob("*.confusion.*")) and (tmp_path / "mine.json").exists()  # what the user named stays


def test_opsets_vitc_cannot_write_are_refused_before_the_export(trained_ckpt, tmp_path, monkeypatch) -> None:
    """Opset 13 cannot express the attention (SDPA exports from 14), and INT8 stops at opset 20: ONNX
    Runtime's optimiser breaks opset-21+ Q/DQ graphs on load (formerly a raw traceback from the drift
    session). Both are one line before anything is exported, with or without a TensorRT target."""
    from vitc.export import onnx_export

    monkeypatch.setattr(onnx_export, "export_onnx", lambda *a, **k: pytest.fail("exported before the opset check"))
    ck, out = str(trained_ckpt), str(tmp_path)
    assert "from opset 14" in _err(["export", ck, "--opset", "13", "--out", out])
    for opset in ("21", "22"):
        line = _err(["export", ck, "-p", "int8", "--opset", opset, "--out", out])
        assert f"int8 exports take opset 20 at most, not {opset}" in line and "ONNX Runtime" in line
    assert "opset 20 at most" in _err(["export", ck, "-p", "fp32", "-p", "int8", "--trt", "11", "--opset", "21",
                                       "--out", out])  # fmt: skip


def test_onnx_runtime_failing_on_the_export_is_one_line(trained_ckpt, tmp_path, monkeypatch) -> None:
    """ONNX Runtime refusing the graph in the export's checks (here the drift session, optimised) is exit
    code 2 and one line naming what failed, not its traceback; nothing is written."""
    import onnxruntime as ort

    original = ort.InferenceSession

    def optimiser_fails(source, options=None, **kwargs):
        if options is not None and options.graph_optimization_level != ort.GraphOptimizationLevel.ORT_DISABLE_ALL:
            raise ort.capi.onnxruntime_pybind11_state.Fail("[ONNXRuntimeError] : 1 : FAIL : Node (q) Op (X)\nmore")
        return original(source, options, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", optimiser_fails)
    result = runner.invoke(app, ["export", str(trained_ckpt), "--out", str(tmp_path), "--run", "x"])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    said = (
        "ONNX Runtime cannot load the graph (graph optimisations on): [ONNXRuntimeError] : 1 : FAIL : Node (q) Op (X)"
    )
    assert result.output.strip().splitlines()[-1] == f"error: {said}"
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    ("target", "said"),
    [
        ("torch.onnx.export", "ONNX export failed at opset 17: AssertionError"),
        ("onnx.checker.check_model", "onnx.checker rejected the graph: ValidationError"),
    ],
)
def test_an_exception_without_a_message_in_the_export_is_one_line(
    target: str, said: str, trained_ckpt, tmp_path, monkeypatch
) -> None:
    """A bare `AssertionError()` inside torch.onnx.export (an exporter's internal assert) left as a traceback
    ending in IndexError: `str(exc).splitlines()[0]` of an empty message; now the exception's type is the line."""
    import onnx

    def fails(*args, **kwargs):
        raise (onnx.checker.ValidationError() if "checker" in target else AssertionError())

    monkeypatch.setattr(target, fails)
    result = runner.invoke(app, ["export", str(trained_ckpt), "--out", str(tmp_path), "--run", "x"])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert result.output.strip().splitlines()[-1] == f"error: {said}"


@pytest.mark.parametrize("suffix", [".plan", ".engine", ".trt"])
def test_export_of_a_plan_under_any_of_its_suffixes_says_what_it_is(suffix: str, tmp_path) -> None:
    """`vitc export m.trt` said "not a safetensors file (bad header length)" where m.plan and m.engine were named:
    the plan suffixes the runners read (.plan, .engine, .trt) were listed again for the checkpoint's refusal,
    without .trt."""
    plan = tmp_path / f"m{suffix}"
    plan.write_bytes(b"\x08\x07")
    result = runner.invoke(app, ["export", str(plan), "--out", str(tmp_path / "out")])
    said = f"{plan} is a TensorRT plan, not a vitc checkpoint: name the checkpoint or run folder it was made from"
    assert result.exit_code == 2 and result.output.strip().splitlines()[-1] == f"error: {said}", result.output


def test_ctrl_c_as_the_new_onnx_lands_waits_for_its_manifest(trained_ckpt, tmp_path, monkeypatch) -> None:
    """Ctrl-C just after `vitc export --force` renamed the new ONNX file over the old one left the old manifest
    beside it (2 tries in 5), and each reader refused the pair (sha256 differs): neither export was usable.
    The manifest is renamed in before the Ctrl-C acts; the signal is sent from the rename itself."""
    import json
    import os
    import signal
    from pathlib import Path

    from vitc._io import sha256_file
    from vitc.artifacts import manifest_for

    args = ["export", str(trained_ckpt), "-p", "fp16", "--out", str(tmp_path), "--run", "r"]
    assert runner.invoke(app, [*args, "--dynamic-batch", "1:4:8"]).exit_code == 0
    onnx = tmp_path / "r" / "model.fp16.onnx"
    old = sha256_file(onnx)
    rename = os.replace

    def rename_then_ctrl_c(source, target):
        rename(source, target)
        if Path(target) == onnx:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(os, "replace", rename_then_ctrl_c)
    result = runner.invoke(app, [*args, "--force"])  # a static batch: another ONNX file
    assert result.exit_code == 130, result.output
    assert sha256_file(onnx) != old
    assert json.loads((tmp_path / "r" / "manifest.fp16.json").read_text())["onnx_sha256"] == sha256_file(onnx)
    assert manifest_for(onnx).onnx_path == onnx  # what `vitc eval` and `vitc build` read: not refused


def test_sigterm_while_exporting_removes_its_temporaries(trained_ckpt, tmp_path) -> None:
    """SIGTERM (a CI runner's timeout, `docker stop`) as `vitc export` wrote its first file ended the process at
    once: a hidden partial `.model.fp32.onnx.<random>.tmp` (or held-out set) stayed in the run folder, which no
    later export removed, and nothing was said. It is taken as Ctrl-C now: the temporary is removed, one line,
    exit 143. Sent from the first fsync of a temporary, in a process of its own, through the console entry."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = (
        "import os, signal, sys\n"
        "fsync = os.fsync\n"
        "def fsync_then_sigterm(fd):\n"
        "    fsync(fd)\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "os.fsync = fsync_then_sigterm\n"
        "from vitc.cli.main import main\n"
        "sys.argv = ['vitc', *sys.argv[1:]]\n"
        "main()\n"
    )
    root = Path(__file__).resolve().parents[2]
    args = ["export", str(trained_ckpt), "--out", str(tmp_path), "--run", "r"]
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run(
        [sys.executable, "-c", script, *args], env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert done.returncode == 143, done.stderr
    assert done.stderr.splitlines()[-1] == "error: stopped by SIGTERM"
    assert [p.name for p in tmp_path.rglob("*.tmp")] == []
