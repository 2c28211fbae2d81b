"""`vitc export` end to end: FP32 parity per family, manifest, metadata, dynamic batch, TensorRT 8.5."""

from __future__ import annotations

import json
import warnings
from collections import Counter

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

import vitc
from vitc import artifacts as mf
from vitc._ort import ort_session as session
from vitc.artifacts import BatchRange
from vitc.export.onnx_export import clean, export_onnx, parity, run_batches
from vitc.export.trt_rules import check_onnx

MICRO = {
    "convit_micro": {"depth": 2, "local_up_to_layer": 1},
    "deit_micro": {"depth": 2},
    "cvt_micro": {},
    "spvit_micro": {"depth": 2, "local_up_to_layer": 1},
}


@pytest.mark.parametrize("name", list(MICRO))
def test_fp32_parity_all_families(name: str) -> None:
    from vitc.models import create_model

    torch.manual_seed(0)
    model = create_model(name, **MICRO[name]).eval()
    batch = BatchRange(1, 2, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        proto, counts = clean(export_onnx(model, (3, 32, 32), 17, batch))
    assert counts["nodes_after"] < counts["nodes_before"]
    x = np.random.default_rng(0).standard_normal((5, 3, 32, 32)).astype(np.float32)
    assert parity(proto, model, x, batch) <= 1e-4


class _ScaledAttention(torch.nn.Module):
    """SDPA with an explicit scale, as every family calls it; this scale's float32 and float64 square
    roots round to different float32s (torch folds it in double)."""

    scale = 0.2522709791549322

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, 32, 32) read as (B, heads, tokens, dim)
        return torch.nn.functional.scaled_dot_product_attention(x, x, x, scale=self.scale)


def test_an_explicit_attention_scale_exports_as_on_torch_2_5() -> None:
    # torch 2.4's exporter failed on a float scale (pytorch#135594); vitc's mend must give 2.5+'s graph
    model = _ScaledAttention().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        proto = export_onnx(model, (3, 32, 32), 17, BatchRange(1, 2, 4))
    scales = [onnx.numpy_helper.to_array(a.t) for n in proto.graph.node if n.op_type == "Constant" for a in n.attribute]
    assert [s.dtype for s in scales] == [np.float32, np.float32]
    assert all(s == np.float32(np.sqrt(model.scale)) for s in scales)  # sqrt in double, then float32
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    assert parity(proto, model, x, BatchRange(1, 2, 4)) <= 1e-5


@pytest.mark.parametrize("name", ["deit_micro", "convit_micro", "spvit_micro"])
def test_average_pooling_exports(name: str, tmp_path) -> None:
    """A checkpoint of timm's global_pool='avg' exports as the class token's does (DeiT's fc_norm too)."""
    from vitc.checkpoint import read_checkpoint, write_checkpoint
    from vitc.models import create_model

    torch.manual_seed(0)
    path = write_checkpoint(tmp_path / "avg.safetensors", create_model(name, global_pool="avg", **MICRO[name]))
    model, _ = read_checkpoint(path)
    batch = BatchRange(1, 2, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        proto, _ = clean(export_onnx(model, (3, 32, 32), 17, batch))
    x = np.random.default_rng(0).standard_normal((5, 3, 32, 32)).astype(np.float32)
    assert parity(proto, model, x, batch) <= 1e-4


def test_manifest_and_metadata(exports: dict, trained_ckpt) -> None:
    from vitc._io import sha256_file

    for precision, result in exports.items():
        m = json.loads(result.manifest_path.read_text())
        assert result.manifest_path.name == f"manifest.{precision}.json"
        assert m["format"] == "vitc.export" and m["version"] == 2 and m["precision"] == precision
        assert m["model"] == "convit_micro" and m["input_size"] == [3, 32, 32]
        assert m["input_name"] == "input" and m["output_name"] == "logits"
        assert m["class_names"] == [str(i) for i in range(10)]
        assert m["source_checkpoint"]["sha256"] == sha256_file(trained_ckpt)
        assert m["onnx_sha256"] == sha256_file(result.onnx_path)
        assert m["drift"]["samples"] == 360 and m["heldout"] == f"heldout.{m['heldout_sha256'][:16]}.npz"
        assert sha256_file(result.manifest_path.parent / m["heldout"]) == m["heldout_sha256"]
        assert (m["calibration"] is None) == (precision != "int8")
        props = mf.get_metadata(onnx.load(str(result.onnx_path)))
        assert "onnx_sha256" not in props
        assert props["precision"] == precision and props["batch"] == m["batch"] and props["drift"] == m["drift"]
        # the releases that wrote it (an int8 file's producer is onnxruntime's quantizer, naming no torch)
        assert (
            m["exported_by"]
            == props["exported_by"]
            == result.manifest.exported_by
            == {
                "vitc": vitc.__version__,
                "torch": torch.__version__,
                "onnx": onnx.__version__,
                "onnxruntime": onnxruntime.__version__,
            }
        )
    assert exports["fp32"].manifest.batch.to_dict() == {"min": 1, "opt": 4, "max": 8}
    assert exports["int8"].manifest.batch.to_dict() == {"min": 8, "opt": 8, "max": 8}
    cal = exports["int8"].manifest.calibration
    assert (
        cal["method"] == "minmax" and cal["images"] == 128 and cal["data"] == "digits" and len(cal["data_sha256"]) == 64
    )


def test_heldout_reproduces_reference(exports: dict) -> None:
    """The engine step checks accuracy from the held-out set with numpy only: the stored data must agree."""
    from vitc.artifacts.drift import compare_logits
    from vitc.artifacts.preprocess import normalized

    result = exports["fp32"]
    held = np.load(result.onnx_path.parent / result.manifest.heldout)
    assert held["pixels"].dtype == np.uint8 and held["labels"].dtype == np.int64
    assert held["reference_logits"].dtype == np.float32 and held["mean"].tolist() == pytest.approx(result.manifest.mean)
    inputs = normalized(held["pixels"], held["mean"], held["std"])
    (logits,) = run_batches(session(str(result.onnx_path)), inputs, BatchRange(1, 4, 8))
    report = compare_logits(held["reference_logits"], logits, held["labels"])
    assert report.max_abs_diff <= 1e-4 and report.agreement == 100.0
    assert report.reference_top1 > 30  # the fixture's training made it better than chance


def test_dynamic_batch_runs_at_1_and_5(exports: dict) -> None:
    path = str(exports["fp32"].onnx_path)
    proto = onnx.load(path)
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    sess = session(path)
    for n in (1, 5):
        (out,) = sess.run(None, {"input": np.zeros((n, 3, 32, 32), np.float32)})
        assert out.shape == (n, 10)
    assert check_onnx(proto, "10") == []


def test_static_batch_is_fixed(exports: dict) -> None:
    proto = onnx.load(str(exports["int8"].onnx_path))
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 8


def test_trt85_export_has_no_layernorm(trained_ckpt, tmp_path) -> None:
    from vitc.export import ExportOptions, export_checkpoint

    result = export_checkpoint(trained_ckpt, ExportOptions("fp32", out=tmp_path, trt="8.5"), say=lambda _m: None)
    proto = onnx.load(str(result.onnx_path))
    ops = Counter(n.op_type for n in proto.graph.node)
    assert "LayerNormalization" not in ops and ops["ReduceMean"] >= 2 and ops["Sqrt"] >= 1
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) <= 16
    assert result.manifest.trt_target == "8.5" and result.manifest.opset == 16
    assert check_onnx(proto, "8.5") == []


def test_explain_names_blocks(exports: dict) -> None:
    report = exports["int8"].explain
    assert [r["block"] for r in report["blocks"]] == ["blocks.0", "blocks.1"]
    assert all(r["cosine"] > 0.9 for r in report["blocks"])


def test_an_export_called_from_python_prints_nothing(tmp_path, capsys, caplog) -> None:
    """export_checkpoint's `say` defaulted to print: a library call wrote its steps on the caller's stdout. They
    go to the "vitc" logger now (`vitc export` passes its console)."""
    import logging

    from vitc.checkpoint import write_checkpoint
    from vitc.export import ExportOptions, export_checkpoint
    from vitc.models import create_model

    torch.manual_seed(0)
    ckpt = write_checkpoint(tmp_path / "model.safetensors", create_model("deit_micro", depth=1))
    with caplog.at_level(logging.INFO, logger="vitc"):
        export_checkpoint(ckpt, ExportOptions("fp32", out=tmp_path / "export"))
    assert capsys.readouterr().out == ""
    assert any(record.name.startswith("vitc.") and record.levelno == logging.INFO for record in caplog.records)


def test_an_export_called_from_python_takes_a_run_folder(trained_ckpt, tmp_path) -> None:
    """`vitc export RUN`, `vitc.load_model(RUN)` and `vitc compile RUN` take a run folder's best.safetensors:
    export_checkpoint(RUN) said "RUN: no such checkpoint"."""
    import shutil

    from vitc.export import ExportOptions, export_checkpoint
    from vitc.export.pipeline import output_paths

    run = tmp_path / "runs" / "p"
    run.mkdir(parents=True)
    shutil.copy(trained_ckpt, run / "best.safetensors")
    options = ExportOptions("fp32", out=tmp_path / "export")
    assert output_paths(run, options)[1] == tmp_path / "export" / "p" / "model.fp32.onnx"  # named after the run
    result = export_checkpoint(run, options, say=lambda _m: None)
    assert result.onnx_path == tmp_path / "export" / "p" / "model.fp32.onnx" and result.onnx_path.is_file()
    assert result.manifest.source_checkpoint["path"] == str(run / "best.safetensors")
