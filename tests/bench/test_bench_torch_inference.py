"""`vitc bench` PyTorch runners (issue 20): --cuda-graph for PyTorch, compile times in the table and JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vitc.cli.main import app

pytest.importorskip("torch")


def test_cuda_graph_needs_cuda_for_pytorch_one_line() -> None:
    """--cuda-graph used to be TensorRT-only and silently ignored for PyTorch runners."""
    result = CliRunner().invoke(app, ["bench", "-m", "deit_micro", "--cuda-graph", "-n", "1"])
    assert result.exit_code == 2, result.output
    assert "--cuda-graph replays GPU work: PyTorch runners need --device cuda (got --device cpu)" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    help_text = CliRunner().invoke(app, ["bench", "--help"], env={"COLUMNS": "250"}).output
    assert "TensorRT plans, and PyTorch with --device cuda" in help_text


def test_torch_runners_carry_cuda_graph_into_every_variant() -> None:
    from vitc.bench.runner import torch_runners

    runners = torch_runners(
        "deit_micro", None, compare=True, torch_compile=True, device="cuda", autocast="fp16", cuda_graph=True
    )
    assert [r.name for r in runners] == [
        "deit_micro eager +cuda-graph",
        "deit_micro eager +torch.compile +cuda-graph",
        "deit_micro vitc-compiled +cuda-graph",
        "deit_micro vitc-compiled +torch.compile +cuda-graph",
    ]
    assert all(r.cuda_graph and r.device == "cuda" for r in runners)  # type: ignore[attr-defined]
    assert not any(r.cuda_graph for r in torch_runners("deit_micro", None, compare=True, torch_compile=False,  # type: ignore[attr-defined]
                                                      device="cpu", autocast="fp32"))  # fmt: skip


def test_compile_times_per_runner_in_table_and_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """vitc's compile seconds (once per runner) and each batch's first call (where torch.compile compiles)."""
    import torch

    compiled_by_torch: list = []

    def fake_torch_compile(model):  # inductor takes 20-60 s per micro model on 2 cores: the plumbing only
        compiled_by_torch.append(type(model).__name__)
        return model

    monkeypatch.setattr(torch, "compile", fake_torch_compile)
    out = tmp_path / "bench.json"
    args = ["bench", "-m", "cvt_micro", "--compare", "--torch-compile", "-b", "1,2", "-n", "2", "--warmup", "1"]
    result = CliRunner().invoke(app, [*args, "--json", str(out)], terminal_width=250)
    assert result.exit_code == 0, result.output
    assert compiled_by_torch == ["CvT", "CvT"]
    assert "vitc compile s" in result.output and "1st call s" in result.output
    assert "where torch.compile compiles" in " ".join(result.output.split())  # the caption says what it is
    rows = {(row["runner"], row["batch"]): row["detail"] for row in json.loads(out.read_text())["rows"]}
    assert len(rows) == 8
    for (runner, batch), detail in rows.items():
        assert (detail["vitc_compile_s"] is not None) == ("vitc-compiled" in runner)
        assert detail["torch_compile"] == ("+torch.compile" in runner) and detail["cuda_graph"] is False
        assert detail["first_call_s"][str(batch)] > 0
    assert rows["cvt_micro vitc-compiled", 1]["vitc_compile_s"] > 0
