"""docs/gpu_check.py (`make gpu-check`): its CPU-runnable parts, since no GPU is lent to CI."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.doc_scripts import load_doc_script

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "docs" / "gpu_check.py"
DRY_BUDGET_S = 1200  # the dry run takes ~170 s on 2 idle cores; a loaded CI box must not skip a row


def _load():
    return load_doc_script("gpu_check")


def test_help_names_what_it_needs() -> None:
    out = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, check=True).stdout
    assert "--dry-run" in out and "--wheelhouse" in out
    doc = _load().__doc__
    assert "cuda-python" in doc and "scikit-learn" in doc and "tensorrt" in doc and "wheels" in doc


def test_refuses_without_a_gpu(tmp_path: Path, capsys) -> None:
    gpu_check = _load()
    if gpu_check.gpu_ready() is None:
        pytest.skip("a CUDA GPU is present")
    assert gpu_check.main(["--out", str(tmp_path)]) == 2
    assert "--dry-run" in capsys.readouterr().out
    assert not (tmp_path / "gpu_check.json").exists()


@pytest.mark.slow
def test_dry_run_writes_every_section(tmp_path: Path) -> None:
    """CPU, micro models, the strict cuda-python fake: every section runs and reports. The budget is far
    above the dry run's ~3 min, so that a loaded CI box skips nothing; what was skipped is named if it does."""
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--dry-run", "--out", str(tmp_path), "--budget-s", str(DRY_BUDGET_S)],
        capture_output=True, text=True, cwd=ROOT, timeout=DRY_BUDGET_S + 300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    sections = result["sections"]
    spent = [f"{name}: {s['reason']}" for name, s in sections.items() if "time budget" in s.get("reason", "")]
    spent += [f"train {r['model']}: {r['skipped']}" for r in sections["train"].get("rows", []) if "skipped" in r]
    assert not spent, f"the dry run ran out of its {DRY_BUDGET_S} s ({result['seconds']} s): {spent}"
    peers = "ok" if importlib.util.find_spec("timm") else "skipped"  # timm: on the lent GPU machine, not in CI
    assert {k: v["status"] for k, v in sections.items()} == {
        **dict.fromkeys(
            ("environment", "torch_bench", "inference", "train", "train_ratios", "cuda_layer", "tensorrt"), "ok"
        ),
        "peers": peers,
    }
    assert peers == "ok" or sections["peers"]["reason"] == "needs timm"
    ratios = {row["model"]: row for row in sections["train_ratios"]["off"]["rows"]}
    assert ratios["deit_micro"]["per_gmac"] == 1.0 and ratios["convit_micro fused"]["img_s"] > 0
    assert ratios["spvit_micro fused"]["activations_mib"] < ratios["spvit_micro reference"]["activations_mib"]
    assert ratios["convit_micro fused_dense"]["img_s"] > 0 and "spvit_micro flex" not in ratios  # no CPU backward
    assert ratios["convit_micro chosen"]["chosen"][0].startswith("GPSA 8×8 ×")  # what vitc train runs on a GPU
    assert sections["cuda_layer"]["exact_nbytes"] is True and sections["cuda_layer"]["graph_replay_ok"] is True
    assert sections["cuda_layer"]["copy_bytes"] < sections["cuda_layer"]["buffer_bytes"]
    assert sections["train"]["rows"][0]["train_images_per_s"] > 0
    streamed = sections["train"]["rows"][1]  # a generated JPEG folder, streamed: workers as run.workers' default
    assert streamed["model"] == "deit_micro (streamed JPEGs, 0 workers)" and streamed["train_images_per_s"] > 0
    feed = sections["train"]["feed_timing"]  # docs/feed_timing.py: the four variants, per step
    assert set(feed["ms_per_step"]) == {"step only", "augment only", "same thread", "worker thread"}
    assert all(ms > 0 for ms in feed["ms_per_step"].values()) and feed["worker_vs_same_thread"] > 0
    rows = sections["torch_bench"]["fp32"]["figures"]
    assert "convit_micro" in json.dumps(rows) and "vitc-compiled" in json.dumps(rows)
    ablation = sections["inference"]["ablation"]  # docs/inference_ablation.py; tests/compile checks its tables
    assert ablation["cvt"]["model"] == "cvt_micro" and ablation["cvt"]["rows"][1]["fp32 b2"] > 0
    text = (tmp_path / "gpu_check.md").read_text()
    assert text.startswith("# vitc GPU check (dry run") and "## cuda_layer: ok" in text
    assert "Worker thread or not (`python docs/feed_timing.py --device cpu" in text and "| worker thread |" in text


def test_the_streamed_jpeg_row_comes_second() -> None:
    """The only training row whose feed decodes real JPEGs was last: the first a short train section lost."""
    gpu_check = _load()
    for plan in (gpu_check.FULL, gpu_check.DRY):
        assert [i for i, (_, _, *settings) in enumerate(plan["train"]) if "@photos" in " ".join(settings)] == [1]
    assert "aug.mixup" in gpu_check.FULL["train"][-1][2]  # DeiT's augmentation recipe: last, where time is left


def test_a_failing_feed_timing_loses_only_its_table(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The train section's first measurement may fail on a GPU; the runs after it and the report go on."""
    gpu_check = _load()

    def fail(_args: str) -> dict:
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(gpu_check.sections, "feed_timing", fail)
    plan = {**gpu_check.DRY, "train": []}  # no training runs: only the feed measurement and its report
    section = gpu_check.sections.train(plan, tmp_path, 10.0)
    assert section["feed_timing"]["error"] == "RuntimeError: CUDA out of memory" and section["rows"] == []
    text = gpu_check.markdown({"dry_run": True, "seconds": 1.0, "sections": {"train": {"status": "ok", **section}}})
    assert "Worker thread or not (`python docs/feed_timing.py --device cpu" in text
    assert "RuntimeError: CUDA out of memory" in text


def test_peer_timing_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/peer_timing.py's plumbing on CPU, vitc's micro models standing in for timm's (not installed here)."""
    peer_timing = load_doc_script("peer_timing")
    from vitc.models import create_model

    monkeypatch.setitem(peer_timing.PAIRS, "micro", (("deit_micro", "deit_micro"), (None, "convit_micro")))
    args = ["--device", "cpu", "--amp", "off", "--batch", "4", "--img", "32", "--sizes", "micro", "--rounds", "1",
            "--steps", "1", "--iterations", "2", "--warmup", "0", "--infer-batch", "1", "--compile",
            "--compile-backend", "eager"]  # fmt: skip
    result = peer_timing.measure(peer_timing.parser().parse_args(args), peer=lambda name, img: create_model(name))
    train = {row["model"]: row for row in result["train"]}
    assert set(train) == {f"{side} {name}{mode}" for side, name in (("timm", "deit_micro"), ("vitc", "deit_micro"),
                          ("vitc", "convit_micro")) for mode in ("", " +compile")}  # fmt: skip
    assert train["timm deit_micro"]["per_gmac"] == 1.0 and train["vitc convit_micro +compile"]["vs"] == (
        "timm deit_micro +compile"
    )
    assert all(row["img_s"] > 0 and row["mfu"] is None for row in train.values())  # fp32: the peak is bf16's
    assert "| timm deit_micro | " in result["markdown"] and "| n/a |" in result["markdown"]
    assert train["vitc convit_micro +compile"]["compile_s"] > 0 and train["vitc convit_micro"]["compile_s"] is None
    infer = {row["model"]: row for row in result["infer"]}
    assert infer["vitc convit_micro vitc-compiled +compile"]["ms_b1"] > 0 and "timm deit_micro" in infer
    assert "| vitc convit_micro +compile |" in result["markdown"]


def test_peer_timing_compiles_vitc_s_models_only(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The MFU run: --models keeps a pair and the size's DeiT, --compile-side vitc compiles vitc's alone
    (their rows then compare with the peer's eager DeiT); --json holds the training table."""
    peer_timing = load_doc_script("peer_timing")
    from vitc.models import create_model

    pairs = (("deit_micro", "deit_micro"), ("convit_micro", "convit_micro"), (None, "cvt_micro"))
    monkeypatch.setitem(peer_timing.PAIRS, "micro", pairs)
    args = ["--device", "cpu", "--amp", "off", "--batch", "4", "--img", "32", "--sizes", "micro", "--rounds", "1",
            "--steps", "1", "--warmup", "0", "--train-only", "--compile", "--compile-backend", "eager",
            "--models", "convit_micro", "--compile-side", "vitc", "--json", str(tmp_path / "peers.json")]  # fmt: skip
    built: list[str] = []

    def peer(name: str, img: int) -> object:
        built.append(name)
        return create_model(name)

    result = peer_timing.measure(peer_timing.parser().parse_args(args), peer=peer)
    train = {row["model"]: row for row in result["train"]}
    # no timm ConViT: the compiled rows compare with the peer's eager DeiT, and nothing else of the peer's
    assert built == ["deit_micro"] and set(train) == {"timm deit_micro", "vitc deit_micro",
        "vitc deit_micro +compile", "vitc convit_micro", "vitc convit_micro +compile"}  # fmt: skip
    assert train["vitc convit_micro +compile"]["vs"] == "timm deit_micro" and result["infer"] == []
    assert json.loads((tmp_path / "peers.json").read_text())["train"] == json.loads(json.dumps(result["train"]))
    assert "| ops/step | rounds |" in result["markdown"] and "| vitc convit_micro +compile | " in result["markdown"]
    assert all(line.endswith("| 1 |") for line in result["markdown"].splitlines() if line.startswith("| vitc"))


def test_peer_timing_builds_on_the_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each model is built on --device (the meta device here: a GPU's stand-in that no CPU tensor can pass
    for), not on the CPU and then moved; CvT-13 comes before SP-ViT-S, whose FlexAttention warm-up is long."""
    peer_timing = load_doc_script("peer_timing")
    from vitc.models import create_model

    assert [name for _, name in peer_timing.PAIRS["small"]][2:] == ["cvt_13", "spvit_s"]
    monkeypatch.setitem(peer_timing.PAIRS, "micro", (("deit_micro", "deit_micro"), ("convit_micro", "convit_micro")))
    monkeypatch.setattr(peer_timing, "equal_weights", lambda *args: 0.0)  # a forward: no figures on meta
    opts = peer_timing.parser().parse_args(["--device", "meta", "--img", "32"])
    variants = peer_timing.build_variants(["micro"], 32, opts, lambda name, img: create_model(name))
    assert list(variants) == ["timm deit_micro", "vitc deit_micro", "timm convit_micro", "vitc convit_micro"]
    assert {p.device.type for v in variants.values() for p in v["model"].parameters()} == {"meta"}


def test_the_report_is_rewritten_after_each_section(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A run stopped at the device's 10-minute limit keeps what the finished sections measured; a section
    started with the budget spent is skipped, not run on a 30 s floor; the report goes to --report-dir."""
    gpu_check = _load()
    report = tmp_path / "report"
    seen: dict[str, object] = {}

    def first(plan: dict, out: Path, budget: float) -> dict:
        return {"figure": 1.5}

    def second(plan: dict, out: Path, budget: float) -> dict:
        seen["report"] = json.loads((report / "gpu_check.json").read_text())  # written before this one ran
        gpu_check.time.sleep(0.3)  # spends the budget
        return {}

    def third(plan: dict, out: Path, budget: float) -> dict:
        raise AssertionError("started with the budget spent")

    sections = {"environment": (first, 0.5), "peers": (second, 0.5), "train": (third, 0.5)}
    monkeypatch.setattr(gpu_check, "SECTIONS", sections)
    monkeypatch.setattr(gpu_check, "MIN_SECTION_S", 0.2)
    monkeypatch.setattr(gpu_check, "missing", lambda section: [])
    # check() puts the checkout on PYTHONPATH for its subprocesses: restored after the test, or later tests'
    # pip (tests/engines/test_wheel.py) would see the checkout's vitc.egg-info as an installed vitc
    monkeypatch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))
    result = gpu_check.check(gpu_check.DRY, tmp_path / "work", 0.4, [], report)
    assert seen["report"]["sections"]["environment"] == {"status": "ok", "figure": 1.5, "budget_s": 0.1, "seconds": 0.0}
    # in the report as it runs, with its third of 0.4 s and what the environment left of its own third
    assert seen["report"]["sections"]["peers"] == {"status": "running", "budget_s": 0.3}
    assert (
        result["sections"]["train"]["status"] == "skipped"
        and "time budget spent" in result["sections"]["train"]["reason"]
    )
    assert json.loads((report / "gpu_check.json").read_text())["sections"]["train"]["status"] == "skipped"
    assert (report / "gpu_check.md").exists() and not (tmp_path / "work" / "gpu_check.json").exists()
    assert sorted(p.name for p in report.iterdir()) == ["gpu_check.json", "gpu_check.md"]  # no partial files


def test_environment_without_git(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The device tool sends the tree without .git to an image without git: the commit comes in VITC_COMMIT."""
    gpu_check = _load()
    monkeypatch.setattr(gpu_check.shutil, "which", lambda name: None)
    monkeypatch.setenv("VITC_COMMIT", "abc123")
    facts = gpu_check.environment(gpu_check.DRY, tmp_path, 10.0)
    assert facts["vitc_commit"] == "abc123" and facts["nvidia_smi"] is None and "torch" in facts


def _tensorrt_section(gpu_check, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[dict, str]:
    """check() of the tensorrt section alone, on a GPU's plan; its section and gpu_check.md."""
    monkeypatch.setattr(gpu_check, "missing", lambda section: [])
    monkeypatch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))  # check() extends it for its subprocesses
    result = gpu_check.check(gpu_check.FULL, tmp_path / "work", 120.0, ["tensorrt"], tmp_path / "report")
    return result["sections"]["tensorrt"], (tmp_path / "report" / "gpu_check.md").read_text()


def test_tensorrt_section_whose_tests_all_skip_is_not_ok(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Here, without TensorRT, `pytest -m tensorrt tests/engines` exits 0 with every test skipped: the
    section said "ok", as if TensorRT had been checked. It says skipped, not run, and why."""
    from vitc.engines.tensorrt import tensorrt_available

    if tensorrt_available():
        pytest.skip("TensorRT is installed: its tests would run")
    section, text = _tensorrt_section(_load(), monkeypatch, tmp_path)
    assert section["status"] == "skipped" and section["exit_code"] == 0, section
    assert section["reason"].startswith("not run: all ") and "tests marked tensorrt were skipped" in section["reason"]
    assert "TensorRT is not installed" in section["reason"]
    assert "## tensorrt: skipped" in text and section["reason"] in text


def test_tensorrt_section_that_collects_nothing_is_not_ok(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """pytest exits 5 when it collects nothing (no test marked tensorrt): the section said "ok"."""
    gpu_check = _load()

    def run(cmd: list, timeout: float, env: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.CompletedProcess(cmd, 5, "\n270 deselected in 1.02s\n", "")

    monkeypatch.setattr(gpu_check.sections, "run", run)
    section, text = _tensorrt_section(gpu_check, monkeypatch, tmp_path)
    assert section["status"] == "skipped" and section["exit_code"] == 5
    assert section["reason"] == "not run: pytest collected no test marked tensorrt (exit code 5)"
    assert "## tensorrt: skipped" in text and section["reason"] in text


def test_tensorrt_section_with_a_passing_test_is_ok(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    gpu_check = _load()

    def run(cmd: list, timeout: float, env: dict | None = None) -> subprocess.CompletedProcess:
        junit = Path(next(arg for arg in cmd if arg.startswith("--junitxml=")).split("=", 1)[1])
        junit.write_text(
            '<?xml version="1.0" encoding="utf-8"?><testsuites name="pytest tests"><testsuite name="pytest" '
            'errors="0" failures="0" skipped="1" tests="4" time="9.0"></testsuite></testsuites>'
        )
        return subprocess.CompletedProcess(cmd, 0, "..s.\n", "")

    monkeypatch.setattr(gpu_check.sections, "run", run)
    section, _ = _tensorrt_section(gpu_check, monkeypatch, tmp_path)
    assert section["status"] == "ok" and "reason" not in section
