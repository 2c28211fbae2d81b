"""`vitc build` of an agreement-only export (generated inputs, no labels: issue 24 item 6) on the strict fake
TensorRT: the engine drift is agreement-only too, and says so."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from tests.engines.conftest import manifest_record
from vitc.cli.main import app


def test_build_checks_an_unlabelled_heldout_set(fake, export_dir: Path, tmp_path: Path) -> None:
    fake("10.3")
    with np.load(export_dir / "heldout.npz") as held:
        images, logits = held["images"], held["reference_logits"]
    np.savez(export_dir / "heldout.npz", images=images, reference_logits=logits)  # generated inputs: no labels
    drift = {"samples": 12, "top1": None, "reference_top1": None, "delta_top1": None, "agreement": 100.0,
             "labels": False, "data": "generated"}  # fmt: skip
    (export_dir / "manifest.fp32.json").write_text(json.dumps(manifest_record(drift=drift)))
    plan = tmp_path / "tiny.plan"
    result = CliRunner().invoke(app, ["build", str(export_dir / "model.fp32.onnx"), "--out", str(plan)])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "engine drift (TensorRT vs PyTorch) (agreement only: generated inputs, no labels): agreement 100.00%" in text
    engine = json.loads(plan.with_name(plan.name + ".json").read_text())["engine_drift"]
    assert engine["labels"] is False and engine["top1"] is None and engine["samples"] == 12
