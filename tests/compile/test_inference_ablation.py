"""docs/inference_ablation.py (gpu_check's `inference` section) on CPU: micro models, vitc's DeiT standing in
for timm's (timm is on the lent GPU machine, not here). The CUDA-graph rows exist only on a GPU."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.doc_scripts import load_doc_script
from vitc.models import create_model

ROOT = Path(__file__).resolve().parents[2]
MICRO = ["--device", "cpu", "--cvt", "cvt_micro", "--img", "32", "--precisions", "fp32", "--batches", "2",
         "--peer-batches", "1", "--iterations", "2", "--rounds", "1", "--warmup", "1"]  # fmt: skip


def _load():
    return load_doc_script("inference_ablation")


def test_tables_on_cpu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ablation = _load()
    monkeypatch.setitem(ablation.peer_timing.PAIRS, "micro", (("deit_micro", "deit_micro"), (None, "convit_micro")))
    args = [*MICRO, "--peer-size", "micro", "--torch-compile", "fp32:2", "--compile-backend", "eager",
            "--compile-reserve-s", "0", "--json", str(tmp_path / "a.json")]  # fmt: skip
    result = ablation.measure(ablation.parser().parse_args(args), peer=lambda name, img: create_model(name))
    cvt = result["cvt"]
    assert cvt["target"] == "cpu" and cvt["target_variant"] == "vitc merged kv, SDPA" and cvt["skipped"] == []
    rows = {row["model"]: row for row in cvt["rows"]}
    assert list(rows) == list(ablation.CVT_VARIANTS)  # no CUDA-graph rows off the GPU
    assert all(row["fp32 b2"] > 0 and row["max_abs_diff"] <= 1e-5 for row in rows.values())
    compiled = {row["model"]: row for row in cvt["compile_rows"]}
    assert compiled["vitc merged kv, SDPA +torch.compile"]["fp32 b2 1st s"] > 0 and "eager" in compiled
    convit = {row["model"]: row for row in result["convit"]["rows"]}
    assert set(convit) == {
        "timm deit_micro",
        "vitc deit_micro compiled",
        "vitc convit_micro compiled",
        "vitc convit_micro compiled sdpa-lowering",  # the lowering the cuda target left, timed beside it
        "vitc convit_micro compiled heads-lowering",  # a plain attention's launches, for more FLOPs
    }
    assert all(row["fp32 b1"] > 0 for row in convit.values())
    text = result["markdown"]
    assert "| vitc separate kv, no SDPA |" in text and "vitc convit_micro compiled vs timm deit_micro: fp32 b1" in text
    assert (tmp_path / "a.json").read_text().count('"compile_rows"') == 1


def test_graphed_rows_replay_what_the_model_computes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CUDA-graph rows, with tests/compile/test_cuda_graph.py's CPU stand-in for torch.cuda."""
    from vitc.compile import CUDAGraphs

    from .test_cuda_graph import FakeCuda

    ablation = _load()
    monkeypatch.setattr(ablation, "graphs_on", lambda device: True)
    monkeypatch.setattr(ablation, "CUDAGraphs", lambda model, autocast: CUDAGraphs(model, autocast, cuda=FakeCuda()))
    monkeypatch.setitem(ablation.peer_timing.PAIRS, "micro", (("deit_micro", "deit_micro"), (None, "convit_micro")))
    opts = ablation.parser().parse_args([*MICRO, "--peer-size", "micro", "--torch-compile", ""])
    result = ablation.measure(opts, peer=lambda name, img: create_model(name))
    rows = {row["model"]: row for row in result["cvt"]["rows"]}
    graphed = rows["vitc merged kv, SDPA +cuda-graph"]
    assert graphed["fp32 b2"] > 0 and graphed["fp32 b2 1st s"] > 0 and graphed["replay_max_abs_diff"] <= 1e-6
    assert rows["eager +cuda-graph"]["max_abs_diff"] == 0.0
    convit = {row["model"]: row for row in result["convit"]["rows"]}
    assert convit["vitc convit_micro compiled +cuda-graph"]["replay_max_abs_diff"] <= 1e-6
    assert "vitc convit_micro compiled +cuda-graph vs timm deit_micro +cuda-graph: fp32 b1" in result["markdown"]


def test_the_budget_stops_new_cells_and_variants_select() -> None:
    ablation = _load()
    args = [
        *MICRO,
        "--budget-s",
        "0",
        "--no-peers",
        "--torch-compile",
        "fp32:2",
        "--variants",
        "vitc separate kv, SDPA",
    ]
    result = ablation.measure(ablation.parser().parse_args(args))
    assert result["cvt"]["skipped"] == [
        "fp32 b2: time budget spent", "+torch.compile fp32:2: less than 45 s of the budget left"
    ]  # fmt: skip
    assert "fp32 b2" not in result["cvt"]["rows"][0] and result["peers_skipped"] == "--no-peers"
    assert [row["model"] for row in result["cvt"]["rows"]] == [
        "eager",
        "vitc merged kv, SDPA",
        "vitc separate kv, SDPA",
    ]
    with pytest.raises(SystemExit, match="--variants: unknown"):
        ablation.measure(ablation.parser().parse_args([*MICRO, "--variants", "vitc fast"]))


def test_gpu_check_section_keeps_what_a_stopped_run_wrote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/gpu_check.py's `inference`: the ablation's own process, then `vitc bench --cuda-graph` in the time left
    (here on CPU without --cuda-graph, which is a one-line error there); a run stopped at the budget keeps its JSON."""
    gpu_check = load_doc_script("gpu_check")
    real_run, commands = gpu_check.sections.run, []

    def fake_ablation(stop: bool):
        def run(cmd: list[str], timeout: float, env=None):
            commands.append((cmd, timeout))
            if "inference_ablation.py" not in cmd[1]:
                if stop:
                    raise subprocess.TimeoutExpired(cmd, timeout)
                return real_run(cmd, timeout, env)
            Path(cmd[cmd.index("--json") + 1]).write_text(json.dumps({"markdown": "tables\n", "cvt": {"rows": []}}))
            if stop:
                raise subprocess.TimeoutExpired(cmd, timeout)
            return subprocess.CompletedProcess(cmd, 0, "", "")

        return run

    plan = {**gpu_check.DRY, "inference": {**gpu_check.DRY["inference"], "bench": "-m deit_micro -b 1 -n 1"}}
    monkeypatch.setattr(gpu_check.sections, "run", fake_ablation(stop=False))
    section = gpu_check.sections.inference(plan, tmp_path, 100.0)
    assert commands[0][1] == 85.0 and "--budget-s 30" in section["ablation"]["command"]  # min(plan's 30 + 0, 70%)
    assert section["ablation"]["stopped"] is None and section["ablation"]["markdown"] == "tables\n"
    assert "| deit_micro eager |" in section["cuda_graph_bench"]["markdown"]
    monkeypatch.setattr(gpu_check.sections, "run", fake_ablation(stop=True))
    section = gpu_check.sections.inference(plan, tmp_path, 100.0)
    assert section["ablation"]["stopped"] == "stopped at the section's budget (100 s)"
    assert "the parts after these are missing" in section["ablation"]["markdown"]
    assert "stopped at the section's budget" in section["cuda_graph_bench"]["skipped"]


def test_the_torch_compile_cell_gets_its_reserve(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The compile cell started only with --compile-reserve-s of the budget left after every other cell, so
    on the GPU (cells budget 60, reserve 45) it never ran: the other cells now stop short of the reserve.
    Each cell takes 10 s of a simulated clock; the JSON is written after each part."""
    ablation = _load()
    clock, real_cell = [0.0], ablation.time_cell
    monkeypatch.setattr(ablation.time, "monotonic", lambda: clock[0])

    def cell(*args, **kwargs):
        clock[0] += 10.0
        return real_cell(*args, **kwargs)

    written: list[bool] = []

    def no_peer(name: str, img: int):
        written.append((tmp_path / "a.json").exists())
        raise RuntimeError("timm failed")

    monkeypatch.setattr(ablation, "time_cell", cell)
    args = [*MICRO, "--batches", "2,4", "--torch-compile", "fp32:2", "--compile-backend", "eager",
            "--budget-s", "50", "--compile-reserve-s", "35", "--json", str(tmp_path / "a.json")]  # fmt: skip
    with pytest.raises(RuntimeError, match="timm failed"):
        ablation.measure(ablation.parser().parse_args(args), peer=no_peer)
    # the ConViT part (issue 20's ConViT-Ti target) comes first; its failure still leaves the CvT part
    saved = json.loads((tmp_path / "a.json").read_text())
    assert written == [False] and saved["cvt"]["rows"] and saved["peers_skipped"] == "RuntimeError: timm failed"
    assert "ConViT against timm: skipped (RuntimeError: timm failed)" in saved["markdown"]
    result = ablation.measure(ablation.parser().parse_args([*args, "--no-peers"]))
    assert result["cvt"]["skipped"] == ["fp32 b4: time budget spent"]  # the second would eat into the reserve
    assert {row["model"] for row in result["cvt"]["compile_rows"]} >= {"eager +torch.compile"}
