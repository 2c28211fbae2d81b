"""Reports never land on what vitc made before: `--out`, `--json`, `--markdown` (and eval's JSON beside its PNG)
need their kind's suffix, replace only an earlier report of their own kind without --force, and so do `vitc build`'s
plan and `vitc compile --out`'s program (vitc/_io.py: report_path, refuse_to_replace).

The commands that need no torch run on the runtime venvs' Pythons too (Makefile: RUNTIME_TESTS); those that do are
skipped there.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from typing import Dict, List

import pytest
from typer.testing import CliRunner

from tests.engines.conftest import make_export
from vitc.cli.main import app

pytest.importorskip("onnxruntime")
FIXTURE = Path(__file__).parents[1] / "fixtures" / "deit_micro_depth1.v0.1.0.safetensors"
needs_torch = pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="a training-side command")
runner = CliRunner()


@pytest.fixture
def work(tmp_path: Path) -> Dict[str, Path]:
    """A run folder as `vitc train` leaves it (checkpoints, config.json, summary.json, curves.png, index.json), an
    export folder (ONNX, manifest, held-out set), a plan, and an image to classify."""
    run = tmp_path / "run"
    run.mkdir()
    for name in ("best", "last", "resume"):
        shutil.copy(FIXTURE, run / f"{name}.safetensors")
    (run / "config.json").write_text(json.dumps({"model": {"name": "deit_micro"}, "data": {"name": "digits"}}))
    (run / "summary.json").write_text(json.dumps({"model": "deit_micro", "best_val_top1": 50.0}))
    (run / "curves.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))  # a PNG with no eval report beside it
    (run / "index.json").write_text(json.dumps({"version": 2, "splits": {}}))  # an image folder's listing
    export = make_export(tmp_path / "exp")
    (tmp_path / "engines").mkdir()
    (tmp_path / "engines" / "m.plan").write_bytes(b"ftrt" + bytes(60))
    image = tmp_path / "x.png"
    pytest.importorskip("PIL.Image").new("RGB", (12, 9), (200, 30, 90)).save(image)
    return {"root": tmp_path, "run": run, "exp": export, "onnx": export / "model.fp32.onnx", "image": image}


def invoke(work: Dict[str, Path], args: List[str]):
    places = {k: str(v) for k, v in work.items()}
    return runner.invoke(app, [a.format(**places) for a in args])


def one_error_line(result) -> str:
    """The whole output: exit 2 and one line, `error: …`."""
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


BENCH = ["bench", "-e", "{onnx}", "-n", "1", "--warmup", "0"]
PREDICT = ["predict", "{onnx}", "{image}"]


def with_torch(*values: object) -> object:
    return pytest.param(*values, marks=needs_torch)


OVER_ARTIFACTS = [
    # (command, the file it must leave as it was, what the line says)
    (["eval", "{run}", "--out", "{run}/best.safetensors"], "run/best.safetensors", "ends in .png"),
    (["eval", "{onnx}", "--out", "{onnx}"], "exp/model.fp32.onnx", "ends in .png"),  # the ONNX evaluated
    (["eval", "{run}", "--out", "{run}/config.png"], "run/config.json", "is a run's config.json"),  # the JSON beside
    (["eval", "{onnx}", "--out", "{run}/curves.png"], "run/curves.png", "is a run's curves.png, not a vitc eval"),
    (["eval", "{onnx}", "--out", "{root}/x.png"], "x.png", "x.png exists and is not a vitc eval confusion matrix"),
    ([*PREDICT, "--json", "{exp}/model.fp32.onnx"], "exp/model.fp32.onnx", "ends in .json"),
    ([*PREDICT, "--json", "{exp}/manifest.fp32.json"], "exp/manifest.fp32.json", "is an export's manifest, not a"),
    ([*BENCH, "--json", "{exp}/model.fp32.onnx"], "exp/model.fp32.onnx", "ends in .json"),
    ([*BENCH, "--json", "{run}/config.json"], "run/config.json", "is a run's config.json, not a vitc bench report"),
    ([*BENCH, "--markdown", "{run}/last.safetensors"], "run/last.safetensors", "ends in .md"),
    (["build", "{onnx}", "-o", "{run}/best.safetensors"], "run/best.safetensors", "ends in .plan or .engine or .trt"),
    (["build", "{onnx}", "-o", "{onnx}"], "exp/model.fp32.onnx", "ends in .plan"),
    (["build", "{onnx}", "-o", "{root}/engines/m.plan"], "engines/m.plan", "m.plan exists (use --force"),
    with_torch(["compile", "deit_micro", "--json", "{run}/resume.safetensors"], "run/resume.safetensors", "ends in"),
    with_torch(["compile", "deit_micro", "--json", "{run}/config.json"], "run/config.json", "is a run's config.json"),
    with_torch(["inspect", "{run}", "--out", "{run}"], "run/summary.json", "is a run's summary.json"),
]


@pytest.mark.parametrize(
    ("args", "kept", "says"), OVER_ARTIFACTS, ids=lambda v: " ".join(v) if isinstance(v, list) else v
)
def test_a_report_or_plan_never_replaces_an_artifact(
    work: Dict[str, Path], args: List[str], kept: str, says: str, monkeypatch: pytest.MonkeyPatch
):
    """Each once replaced the file and exited 0 (a PNG over best.safetensors, eval's report over config.json)."""
    if args[0] == "build":  # on a machine that builds: one without TensorRT is told that first
        from tests.engines.fakes.cuda_fakes import install_cuda
        from tests.engines.fakes.tensorrt_fake import install_tensorrt

        install_tensorrt(monkeypatch, "10.3", install_cuda(monkeypatch))
    before = (work["root"] / kept).read_bytes()
    assert says in one_error_line(invoke(work, args))
    assert (work["root"] / kept).read_bytes() == before


SUFFIXES = [
    (["eval", "{onnx}", "--out", "{root}/cm.json"], "--out", ".png"),
    ([*PREDICT, "--json", "{root}/top.txt"], "--json", ".json"),
    ([*BENCH, "--json", "{root}/r.md"], "--json", ".json"),
    ([*BENCH, "--markdown", "{root}/r.json"], "--markdown", ".md"),
    (["build", "{onnx}", "-o", "{root}/m.json"], "--out", ".plan"),
    with_torch(["compile", "deit_micro", "--json", "{root}/r.md"], "--json", ".json"),
]


@pytest.mark.parametrize(
    ("args", "option", "suffix"), SUFFIXES, ids=lambda v: " ".join(v) if isinstance(v, list) else v
)
def test_a_report_name_must_end_in_its_kinds_suffix(work: Dict[str, Path], args: List[str], option: str, suffix: str):
    """Refused before any work: the option, the name given and the suffix it needs, in one line; nothing written."""
    before = sorted(p.name for p in work["root"].iterdir())
    line = one_error_line(invoke(work, args))
    assert line.startswith(f"error: {option} ") and f"ends in {suffix}" in line
    assert sorted(p.name for p in work["root"].iterdir()) == before


def rerun(work: Dict[str, Path], args: List[str], written: List[Path]) -> None:
    """`args` twice with no --force: the second writes its files anew over the first's, its own reports."""
    first = invoke(work, args)
    assert first.exit_code == 0, first.output
    files = {path: path.stat().st_ino for path in written}  # atomic_write renames a new file over each
    second = invoke(work, args)
    assert second.exit_code == 0, second.output
    assert {path: path.stat().st_ino for path in written} != files and all(
        path.stat().st_ino != inode for path, inode in files.items()
    )


def test_re_running_a_report_command_replaces_its_own_report(work: Dict[str, Path]) -> None:
    """Users re-run bench and eval all the time: over a report of the same kind, no --force is needed."""
    root = work["root"]
    rerun(work, [*BENCH, "--json", "{root}/b.json", "--markdown", "{root}/b.md"], [root / "b.json", root / "b.md"])
    rerun(work, [*PREDICT, "--json", "{root}/p.json"], [root / "p.json"])
    figure = importlib.util.find_spec("matplotlib") is not None  # a Jetson's runtime install may lack it
    rerun(work, ["eval", "{onnx}", "--out", "{root}/cm.png"], [root / "cm.json"] + [root / "cm.png"] * figure)
    default = work["exp"] / "model.fp32.confusion.test.json"  # beside the engine, named by what was measured
    rerun(work, ["eval", "{onnx}"], [default] + [default.with_suffix(".png")] * figure)


def test_force_replaces_what_is_not_a_report_of_that_kind(work: Dict[str, Path]) -> None:
    notes = work["root"] / "notes.json"
    notes.write_text('{"mine": 1}')
    assert "not a vitc bench report (use --force" in one_error_line(invoke(work, [*BENCH, "--json", str(notes)]))
    assert invoke(work, [*BENCH, "--json", str(notes), "--force"]).exit_code == 0
    assert json.loads(notes.read_text())["format"] == "vitc.bench"
    kept = work["exp"] / "model.fp32.onnx"
    before = kept.read_bytes()
    assert "ends in .json" in one_error_line(invoke(work, [*BENCH, "--json", str(kept), "--force"]))  # never
    assert kept.read_bytes() == before


@pytest.mark.parametrize("given", ["eval", "predict", "bench"])
def test_a_report_of_another_kind_is_not_replaced(work: Dict[str, Path], given: str) -> None:
    """bench's JSON over predict's (or eval's) asks for --force, as over any other file."""
    root = work["root"]
    made: Dict[str, List[str]] = {
        "eval": ["eval", "{onnx}", "--out", "{root}/r.png"],
        "predict": [*PREDICT, "--json", "{root}/r.json"],
        "bench": [*BENCH, "--json", "{root}/r.json"],
    }
    assert invoke(work, made[given]).exit_code == 0
    before = (root / "r.json").read_bytes()
    other = [*PREDICT, "--json", "{root}/r.json"] if given != "predict" else [*BENCH, "--json", "{root}/r.json"]
    assert "(use --force to replace it)" in one_error_line(invoke(work, other))
    assert (root / "r.json").read_bytes() == before


@needs_torch
def test_compile_out_asks_for_force_when_the_folder_holds_a_compiled_model(work: Dict[str, Path]) -> None:
    out = work["root"] / "deploy"
    args = ["compile", "{run}/best.safetensors", "--out", str(out), "--json", "{root}/c.json"]
    assert invoke(work, args).exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    line = one_error_line(invoke(work, ["compile", "deit_micro", "--out", str(out)]))  # another model, same folder
    assert line == f"error: {out / 'model.pt2'} exists (use --force to replace it)"
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert invoke(work, [*args, "--force"]).exit_code == 0
    rerun(work, ["compile", "deit_micro", "--json", "{root}/c.json"], [work["root"] / "c.json"])  # its own report


@needs_torch
def test_inspect_replaces_its_own_summary_and_not_a_runs(work: Dict[str, Path]) -> None:
    import torch

    from vitc.checkpoint import write_checkpoint
    from vitc.models import create_model

    torch.manual_seed(0)
    checkpoint = write_checkpoint(work["root"] / "m" / "model.safetensors", create_model("deit_micro", depth=1))
    args = ["inspect", str(checkpoint), "--data", "digits", "--images", "2"]
    rerun(work, args, [checkpoint.with_suffix(".inspect") / "summary.json"])  # its default folder
    summary = work["run"] / "summary.json"
    before = summary.read_bytes()
    assert "not a vitc inspect summary" in one_error_line(invoke(work, [*args, "--out", "{run}"]))
    assert summary.read_bytes() == before


@pytest.mark.parametrize(
    "artifact",
    ["{run}/config.json", "{run}/summary.json", "{exp}/manifest.fp32.json", "{run}/curves.png", "{run}/index.json"],
)
def test_force_never_puts_a_report_over_what_a_later_command_reads(work: Dict[str, Path], artifact: str) -> None:
    """--force replaced a run's config.json (then --resume failed) or an export's manifest (then info and bench
    failed), as the refusal itself advised; a report over the run's index.json was lost to the next run's listing."""
    path = Path(artifact.format(**{k: str(v) for k, v in work.items()}))
    before = path.read_bytes()
    args = ["eval", "{onnx}", "--out", artifact] if path.suffix == ".png" else [*BENCH, "--json", artifact]
    line = one_error_line(invoke(work, [*args, "--force"]))
    assert "write the report elsewhere" in line and "--force" not in line
    assert path.read_bytes() == before


def test_eval_re_runs_over_its_own_figure_whose_json_is_gone(work: Dict[str, Path]) -> None:
    """A full disk kept eval's JSON from being written beside its PNG: the re-run evaluated for minutes, then
    refused its own figure and dropped the result."""
    assert invoke(work, ["eval", "{onnx}"]).exit_code == 0
    default = work["exp"] / "model.fp32.confusion.test.json"
    default.unlink()
    default.with_suffix(".png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))  # with or without matplotlib
    again = invoke(work, ["eval", "{onnx}"])
    assert again.exit_code == 0, again.output
    assert json.loads(default.read_text())["top1"] >= 0


def test_eval_says_its_result_before_refusing_a_default_name_taken_by_another_file(work: Dict[str, Path]) -> None:
    """The default names are known once the data was read, after the evaluation: its result is printed first."""
    taken = work["exp"] / "model.fp32.confusion.test.json"
    taken.write_text('{"mine": 1}')
    result = invoke(work, ["eval", "{onnx}"])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and "top-1" in result.output
    assert lines[-1].startswith(f"error: {taken} exists and is not a vitc eval report (use --force to replace it)")
    assert "the report above is not saved" in lines[-1]
    assert taken.read_text() == '{"mine": 1}'
