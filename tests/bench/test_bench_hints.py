"""What `vitc bench` tells a newcomer (issue 24 item 10): how to run a batch a static export skipped, and
H2D/D2H copies named only where a runner has a device to copy to."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.engines.conftest import make_tiny_onnx
from vitc.bench.report import BenchReport, BenchRow
from vitc.bench.timing import LatencyStats
from vitc.cli.main import app

pytest.importorskip("onnxruntime")


def test_a_static_export_says_how_to_reexport_and_cpu_copies_nothing(tmp_path: Path) -> None:
    static = make_tiny_onnx(tmp_path / "model.fp32.onnx", batch=1)
    args = ["bench", "-e", str(static), "-b", "1,8,32", "-n", "2", "--warmup", "1"]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "skipped batch 8, 32" in text and "re-export with --dynamic-batch 1:8:32" in text
    assert "H2D" not in text and "host inputs in, host outputs out" in text  # ONNX Runtime on the CPU


def test_gpu_rows_name_the_copies() -> None:
    stats = LatencyStats.from_seconds([0.001, 0.002], 1)
    report = BenchReport()
    report.rows.append(BenchRow("a.onnx", "onnxrt", "cpu", "fp32", 1, stats))
    assert "H2D" not in report.to_markdown()
    report.rows.append(BenchRow("a.plan", "tensorrt", "cuda", "fp16", 1, stats))
    assert "H2D/D2H copies" in report.to_markdown()


@pytest.mark.parametrize("base", ["fp16", "fp32"])
def test_an_int8_file_for_gpus_on_the_cpu_says_which_file_cpus_take(tmp_path: Path, base: str) -> None:
    """`-p int8` runs what it does not quantize in FP16 by default (for TensorRT), which ONNX Runtime's CPU
    provider runs slowly: its bench says so and names the export for CPUs (`--high-precision-dtype fp32`)."""
    import json

    from tests.engines.conftest import manifest_record
    from vitc._io import sha256_file

    onnx = make_tiny_onnx(tmp_path / "model.int8.onnx", precision="int8")
    record = manifest_record(precision="int8", onnx_sha256=sha256_file(onnx))
    record["precision_report"] = {"quantized": 1, "high_precision_dtype": base}
    (tmp_path / "manifest.int8.json").write_text(json.dumps(record))
    result = CliRunner().invoke(app, ["bench", "-e", str(onnx), "-n", "2", "--warmup", "0"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    said = "for CPUs, export it with --high-precision-dtype fp32" in " ".join(result.output.split())
    assert said == (base == "fp16"), result.output
