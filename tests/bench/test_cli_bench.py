"""`vitc bench`, `vitc build`, `vitc info`, `vitc doctor` end to end on a tiny ONNX model."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from tests.engines.conftest import export_dir as export_dir  # shared fixture
from tests.engines.conftest import make_tiny_onnx, manifest_record
from vitc.cli._errors import handle_errors
from vitc.cli.bench import bench
from vitc.cli.build import build
from vitc.cli.doctor import doctor
from vitc.cli.info import info

pytest.importorskip("onnxruntime")
app = typer.Typer()
app.callback()(lambda: None)
for name, fn in (("bench", bench), ("build", build), ("info", info), ("doctor", doctor)):
    app.command(name)(handle_errors(fn))


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def test_with_no_batch_a_static_batch_engine_is_timed_at_its_batch(tmp_path: Path):
    """`vitc bench -e static4.onnx` timed batch 1 only: an empty table (trtexec times a static engine at its
    shape); beside a dynamic engine, both run at the batch they share."""
    static = make_tiny_onnx(tmp_path / "static.onnx", batch=2)
    dynamic = make_tiny_onnx(tmp_path / "dynamic.onnx")
    for engines, timed in (([static], [2]), ([dynamic, static], [2, 2]), ([dynamic], [1])):
        out = tmp_path / "r.json"
        args = [a for e in engines for a in ("-e", str(e))]
        result = run("bench", *args, "-n", "2", "--warmup", "0", "--json", str(out))
        assert result.exit_code == 0 and "skipped" not in result.output, result.output
        record = json.loads(out.read_text())
        assert [r["batch"] for r in record["rows"]] == timed and record["settings"]["batches"] == sorted(set(timed))
    asked = run("bench", "-e", str(static), "-b", "1,3", "-n", "2", "--json", str(tmp_path / "none.json"))
    assert asked.exit_code == 2 and "skipped batch 1, 3" in asked.output and "Traceback" not in asked.output
    assert "nothing was timed: no runner takes batch 1,3" in asked.output and not (tmp_path / "none.json").exists()


def test_bench_side_by_side_json_markdown(tmp_path: Path):
    a = make_tiny_onnx(tmp_path / "a.onnx")
    b = make_tiny_onnx(tmp_path / "b.onnx", batch=2)  # static batch 2: batch 1 is skipped with a warning
    out, md = tmp_path / "r.json", tmp_path / "r.md"
    result = run(
        "bench",
        "-e",
        str(a),
        "-e",
        str(b),
        "--batch",
        "1,2",
        "-n",
        "3",
        "--warmup",
        "1",
        "--json",
        str(out),
        "--markdown",
        str(md),
    )
    assert result.exit_code == 0, result.output
    assert "vitc bench" in result.output and "ratio" in result.output and "skipped batch 1" in result.output
    record = json.loads(out.read_text())
    assert [(r["runner"], r["batch"]) for r in record["rows"]] == [
        (f"{tmp_path.name}/a.onnx", 1),
        (f"{tmp_path.name}/a.onnx", 2),
        (f"{tmp_path.name}/b.onnx", 2),
    ]
    assert record["rows"][0]["ratio_vs_first"] == 1.0 and record["rows"][2]["ratio_vs_first"] > 0
    assert md.read_text().startswith("### vitc bench") and "| batch |" in md.read_text()


def test_bench_accuracy_through_runner(export_dir: Path, tmp_path: Path):
    out = tmp_path / "r.json"
    result = run(
        "bench",
        "-e",
        str(export_dir / "model.fp32.onnx"),
        "--data",
        str(export_dir),
        "-n",
        "2",
        "--warmup",
        "0",
        "--json",
        str(out),
    )
    assert result.exit_code == 0, result.output
    acc = json.loads(out.read_text())["rows"][0]["accuracy"]
    assert acc["samples"] == 12 and acc["agreement"] == 100.0 and acc["top1"] == pytest.approx(75.0)
    assert json.loads(out.read_text())["rows"][0]["precision"] == "fp32"
    photos = tmp_path / "photos"  # a labelled folder is not a held-out set: say which command measures it
    (photos / "cat").mkdir(parents=True)
    wrong = run("bench", "-e", str(export_dir / "model.fp32.onnx"), "--data", str(photos))
    assert wrong.exit_code == 2 and len(wrong.output.strip().splitlines()) == 1, wrong.output
    assert (
        f"is not an export folder (no manifest.<precision>.json or held-out set in it); a folder of labelled "
        f"images is measured with vitc eval ENGINE --data-dir {photos}" in wrong.output
    )


def _vitc_checkpoint(path: Path) -> Path:
    """A file with a vitc checkpoint's header (written without torch: the runtime venvs run these tests)."""
    import numpy as np
    from safetensors.numpy import save_file

    from vitc.artifacts.model_cfg import ModelCfg
    from vitc.checkpoint import META_KEY, CheckpointMeta

    meta = CheckpointMeta("convit_micro", {}, ModelCfg("convit", (3, 32, 32), 10))
    save_file({"w": np.zeros(1, np.float32)}, str(path), metadata={META_KEY: meta.to_json()})
    return path


def test_bench_errors(tmp_path: Path):
    assert run("bench").exit_code == 2
    assert "suffix" in run("bench", "-e", str(tmp_path / "x.model")).output
    ours = _vitc_checkpoint(tmp_path / "best.safetensors")  # vitc's own: exported, or run in PyTorch by --ckpt
    said = run("bench", "-e", str(ours)).output
    assert f"is a checkpoint, not an .onnx or .plan file: `vitc export {ours}` writes its ONNX file" in said
    assert f"or --ckpt {ours} runs it in PyTorch" in said
    # timm's, Hugging Face's or the official weights, .safetensors too: vitc import first (export and
    # --ckpt, which the message offered for a .safetensors, refuse them)
    for foreign in (tmp_path / "model.safetensors", tmp_path / "x.pt"):
        foreign.write_bytes(b"x")
        said = run("bench", "-e", str(foreign)).output
        assert f"holds weights, not an .onnx or .plan file: `vitc import {foreign} --out DIR`" in said
        assert "--ckpt" not in said
    assert run("bench", "--compare", "-e", str(tmp_path / "a.onnx")).exit_code == 2
    assert run("bench", "-e", str(tmp_path / "a.onnx"), "--batch", "0").exit_code == 2


def test_a_folder_given_for_a_file_says_what_to_name(export_dir: Path, tmp_path: Path):
    """An export folder names its ONNX files (bench -e called it a checkpoint for --ckpt, which refused it;
    build and check said 'no such file'; eval and predict that it was no run folder); a run folder gives
    the `vitc export` that writes them, and bench its --ckpt too; another folder is said to be one. Said
    without torch, as these commands run on a Jetson (the runtime venvs run this test)."""
    from vitc.cli.main import app as vitc_app

    run_folder = tmp_path / "runs" / "photos"
    run_folder.mkdir(parents=True)
    _vitc_checkpoint(run_folder / "best.safetensors")
    (export_dir / "model.fp16.onnx").write_bytes((export_dir / "model.fp32.onnx").read_bytes())
    other = tmp_path / "other"
    other.mkdir()

    def one_line(*args: Path | str) -> str:
        result = CliRunner().invoke(vitc_app, [str(a) for a in args])
        assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
        return result.output.strip()

    files = f"name one of its files: {export_dir / 'model.fp16.onnx'}, {export_dir / 'model.fp32.onnx'}"
    image = tmp_path / "a.png"
    for command, takes in (
        (["bench", "-e"], "an .onnx or .plan file"),
        (["build"], "an ONNX file"),
        (["check"], "an ONNX file"),
        (["eval"], "a vitc checkpoint or run folder, or an .onnx or .plan file"),
    ):
        assert one_line(*command, export_dir) == f"error: {export_dir} is an export folder, not {takes}: {files}"
    assert one_line("predict", export_dir, image).endswith(files)
    export = f"`vitc export {run_folder}` writes its ONNX files"
    assert (
        one_line("build", run_folder) == f"error: {run_folder} is a vitc train run folder, not an ONNX file: {export}"
    )
    assert one_line("check", run_folder).endswith(export)
    assert one_line("bench", "-e", run_folder).endswith(f"{export}, or --ckpt {run_folder} runs it in PyTorch")
    for command in (["bench", "-e"], ["build"], ["eval"]):
        assert one_line(*command, other).startswith(f"error: {other} is a folder, not ")
    checkpoint = run_folder / "best.safetensors"
    assert one_line("build", checkpoint).endswith(
        f"is a checkpoint, not an ONNX file: `vitc export {checkpoint}` writes its ONNX file"
    )


def test_bench_onnx_on_cuda_asks_for_the_gpu(tmp_path: Path):
    """--device cuda runs an ONNX file on ONNX Runtime's CUDA provider, or says there is none (it ran on
    the CPU unsaid)."""
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this ONNX Runtime has a CUDA provider")
    onnx = make_tiny_onnx(tmp_path / "m.onnx")
    result = run("bench", "-e", str(onnx), "--device", "cuda", "-n", "2")
    assert result.exit_code == 2 and "ONNX Runtime has no GPU provider here" in result.output, result.output


def test_bench_cuda_graph_on_onnx_is_one_line(tmp_path: Path):
    """--cuda-graph used to be silently dropped for ONNX Runtime: now one line that says what it applies to."""
    from vitc.cli.main import app as vitc_app

    onnx = make_tiny_onnx(tmp_path / "a.onnx")
    for device in ("cpu", "cuda"):
        result = CliRunner().invoke(vitc_app, ["bench", "-e", str(onnx), "--cuda-graph", "--device", device, "-n", "1"])
        assert result.exit_code == 2, result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and "Traceback" not in result.output, result.output
        assert "--cuda-graph applies to TensorRT plans and to PyTorch runners with --device cuda" in lines[0]
        assert "not to ONNX Runtime" in lines[0] and "vitc build" in lines[0]


def test_bench_model_without_torch_is_one_line(tmp_path: Path, monkeypatch):
    """A Jetson's runtime install (no torch; on JetPack 5 also Python 3.8): --model / --ckpt say what they
    need before any engine loads (it was a TypeError from torch_runner's 3.10 syntax on Python 3.8)."""
    from vitc import _lazy

    monkeypatch.setattr(_lazy, "has_module", lambda name: name != "torch")
    onnx = make_tiny_onnx(tmp_path / "a.onnx")
    ckpt = str(tmp_path / "x.safetensors")
    for args in (["-m", "deit_tiny"], ["--ckpt", ckpt], ["-e", str(onnx), "-m", "deit_tiny"]):
        result = run("bench", *args)
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
        (line,) = result.output.splitlines()
        assert line.startswith("error: vitc bench --model / --ckpt needs") and "PyTorch" in line


def test_bench_compare_torch(tmp_path: Path):
    pytest.importorskip("torch")
    args = ["bench", "--model", "convit_micro", "-n", "2", "--warmup", "1", "--json", str(tmp_path / "t.json")]
    try:
        import vitc.compile  # noqa: F401

        args.append("--compare")
    except ImportError:
        pass
    result = run(*args)
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "t.json").read_text())["rows"]
    assert rows[0]["runner"] == "convit_micro eager" and rows[0]["backend"] == "torch"
    if "--compare" in args:
        assert rows[1]["runner"] == "convit_micro vitc-compiled"


def test_bench_threads_apply_to_pytorch_too(tmp_path: Path, monkeypatch):
    """--threads N is the CPU threads of every runner: the PyTorch ones ran on torch's default (all cores)
    while ONNX Runtime's took N. Their rows record it as ONNX Runtime's do; torch's count is restored after."""
    torch = pytest.importorskip("torch")
    from vitc.engines.torch_runner import TorchRunner

    seen: list = []
    infer = TorchRunner.infer_impl
    monkeypatch.setattr(
        TorchRunner, "infer_impl", lambda self, feed: seen.append(torch.get_num_threads()) or infer(self, feed)
    )
    before = torch.get_num_threads()
    onnx = make_tiny_onnx(tmp_path / "a.onnx")
    out = tmp_path / "t.json"
    result = run(
        "bench", "-e", str(onnx), "-m", "convit_micro", "--threads", "1", "-n", "2", "--warmup", "1", "--json", str(out)
    )
    assert result.exit_code == 0, result.output
    rows = {row["backend"]: row for row in json.loads(out.read_text())["rows"]}
    assert rows["torch"]["detail"]["threads"] == 1 and rows["onnxrt"]["detail"]["threads"] == 1
    assert seen and set(seen) == {1}
    assert torch.get_num_threads() == before


def test_bench_report_to_stdout_is_the_report_alone(tmp_path: Path) -> None:
    """`vitc bench -e M --json - | jq` (or `--markdown -`): the report alone on stdout, the table and warnings on
    stderr; `-` wrote nothing to stdout before ("a bench report is written to a file whose name ends in .json")."""
    import subprocess
    import sys

    static = make_tiny_onnx(tmp_path / "static.onnx", batch=2)  # batch 1 asked too: skipped, with a warning
    script = "import sys; sys.argv[0] = 'vitc'; from vitc.cli.main import main; main()"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}

    def bench_to(*report: str) -> subprocess.CompletedProcess:
        args = ["bench", "-e", str(static), "-b", "1,2", "-n", "2", "--warmup", "0", *report]
        return subprocess.run(
            [sys.executable, "-c", script, *args], cwd=tmp_path, env=env, capture_output=True, text=True
        )

    as_json = bench_to("--json", "-")
    assert as_json.returncode == 0, as_json.stderr
    assert [row["batch"] for row in json.loads(as_json.stdout)["rows"]] == [2]
    assert "warning: " in as_json.stderr and "skipped batch 1" in as_json.stderr and "ratio" in as_json.stderr
    as_markdown = bench_to("--markdown", "-", "--json", str(tmp_path / "r.json"))
    assert as_markdown.returncode == 0, as_markdown.stderr
    assert as_markdown.stdout.startswith("### vitc bench") and "| batch |" in as_markdown.stdout
    assert "wrote" not in as_markdown.stdout and "ratio" in as_markdown.stderr  # the table, on stderr
    assert f"wrote {tmp_path / 'r.json'}" in as_markdown.stderr and json.loads((tmp_path / "r.json").read_text())
    both = bench_to("--json", "-", "--markdown", "-")
    assert (
        both.returncode == 2
        and both.stderr == "error: --json - and --markdown - both ask for stdout: write one of them to a file\n"
    )
    assert not (tmp_path / "-").exists()


def test_bench_autocast_and_its_deprecated_alias(tmp_path: Path, monkeypatch):
    """--autocast is PyTorch's autocast dtype; --precision, its old name, works for one release with a warning."""
    seen: list = []

    def fake_torch_runners(name, path, **options):
        seen.append(options["autocast"])
        return []

    monkeypatch.setattr("vitc.bench.runner.torch_runners", fake_torch_runners)
    monkeypatch.setattr("vitc.cli.bench.require_training", lambda what: None)  # the runtime venvs have no torch
    onnx = make_tiny_onnx(tmp_path / "a.onnx")
    common = ["bench", "-e", str(onnx), "-m", "convit_micro", "-n", "1", "--warmup", "0"]
    new = run(*common, "--autocast", "bf16")
    assert new.exit_code == 0, new.output
    assert "deprecated" not in new.output
    old = run(*common, "--precision", "fp16")
    assert old.exit_code == 0, old.output
    assert "--precision is deprecated: use --autocast fp16" in old.output
    assert seen == ["bf16", "fp16"]
    both = run(*common, "--precision", "fp16", "--autocast", "bf16")
    assert both.exit_code == 2 and "old name of --autocast" in both.output
    assert "--autocast" in run("bench", "--help").output


def test_bench_refuses_an_unknown_autocast_whatever_it_runs(tmp_path: Path) -> None:
    """`--autocast fp8` was accepted, exit 0, when only engines were benched (-m refused it): checked up front."""
    onnx = make_tiny_onnx(tmp_path / "a.onnx")
    for option, value in (("--autocast", "fp8"), ("--autocast", ""), ("--precision", "int4")):
        result = run("bench", "-e", str(onnx), "-n", "1", "--warmup", "0", option, value)
        assert result.exit_code == 2, result.output
        assert result.output.strip() == f"error: {option} takes fp32, fp16, bf16, not {value!r}"


def test_bench_onnx_precision_is_the_artifacts_not_its_io_dtype(tmp_path: Path):
    """An fp16 export with float32 I/O is fp16 (its name, or its manifest); a bare ONNX file's is unknown."""
    from vitc.engines.onnxrt import OnnxRuntimeRunner

    named = make_tiny_onnx(tmp_path / "model.fp16.onnx", precision="fp16")
    bare = make_tiny_onnx(tmp_path / "bare.onnx", precision="fp16")
    for path, expected in ((named, "fp16"), (bare, "?")):
        with OnnxRuntimeRunner(path, device="cpu", threads=1) as runner:
            assert runner.info().precision == expected
    with OnnxRuntimeRunner(bare, device="cpu", threads=1, precision="int8") as runner:
        assert runner.info().precision == "int8"


def test_build_without_tensorrt(tmp_path: Path, monkeypatch):
    onnx = make_tiny_onnx(tmp_path / "m.onnx")
    monkeypatch.setattr("vitc.engines.tensorrt.tensorrt_available", lambda: False)
    result = run("build", str(onnx))
    assert result.exit_code == 2 and "missing: TensorRT (pip install tensorrt" in result.output
    assert "no such file" in run("build", str(tmp_path / "none.onnx")).output
    for option in ("--precision", "-p"):  # -p as in `vitc export -p fp16`: it was "No such option: -p"
        bad = run("build", str(onnx), option, "fp8")  # checked before the machine is
        assert bad.exit_code == 2 and "--precision: unknown precision 'fp8'" in bad.output, bad.output


def test_info_and_doctor(tmp_path: Path, export_dir: Path):
    plan = tmp_path / "m.plan"
    plan.write_bytes(b"ftrt" + bytes(20) + bytes([10, 3, 0, 26]) + bytes(8))
    (tmp_path / "m.plan.json").write_text(json.dumps({"format": "vitc.engine", "tensorrt": "10.3.0.26"}))
    result = run("info", str(plan), "--json")
    assert result.exit_code == 0 and json.loads(result.output)["header"]["tensorrt"] == "10.3.0.26"
    onnx = json.loads(run("info", str(export_dir / "model.fp32.onnx"), "--json").output)
    assert onnx["inputs"][0]["name"] == "input" and onnx["manifest"].endswith("manifest.fp32.json")
    assert json.loads(run("info", str(export_dir), "--json").output)["model"] == manifest_record()["model"]
    bad = tmp_path / "bad.plan"
    bad.write_bytes(b"not a plan at all, really not" * 2)
    assert "not a TensorRT plan" in run("info", str(bad)).output
    doc = run("doctor", "--json")
    assert doc.exit_code == 0 and {r["command"] for r in json.loads(doc.output)["commands"]} >= {"build"}


@pytest.mark.parametrize("columns", ["80", "40"])
def test_bench_table_keeps_every_figure_whole_at_80_and_40_columns(tmp_path: Path, columns: str) -> None:
    """At COLUMNS=80 a long runner name left the figure columns empty (`┃ runner … ┃ ┃ ┃`) and short ones cut
    them (`5.1…`, `194…`): the figures stay whole, the runner name folds (or each row is a list of fields)."""
    folder = tmp_path / "a rather long folder name of one export run"
    folder.mkdir()
    onnx = make_tiny_onnx(folder / "model.fp32.onnx")
    out = tmp_path / "r.json"
    args = ["bench", "-e", str(onnx), "-e", str(onnx), "-n", "3", "--warmup", "1", "--json", str(out)]
    result = CliRunner().invoke(app, args, env={"COLUMNS": columns})
    assert result.exit_code == 0, result.output
    table = [line for line in result.output.splitlines() if not line.startswith("warning:")]  # unwrapped lines
    assert not any("…" in line or len(line) > int(columns) for line in table), result.output
    for row in json.loads(out.read_text())["rows"]:
        e2e = row["e2e"]
        figures = [f"{e2e[k]:.3f}" for k in ("p50", "mean", "p99")]
        figures += [f"{100 * e2e['spread']:.1f}", f"{e2e['throughput']:.1f}", f"{row['ratio_vs_first']:.2f}x"]
        missing = [f for f in figures if f not in result.output]
        assert not missing, (missing, result.output)


def test_a_rich_release_without_its_private_measure_shows_the_table_as_rich_lays_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`Fitted` measures columns with Rich's private Table._measure_column: a Jetson's Rich may lack it, and a
    table must never be what fails a bench."""
    import vitc._terminal

    def missing(*args: object) -> int:
        raise AttributeError("'Table' object has no attribute '_measure_column'")

    monkeypatch.setattr(vitc._terminal, "table_column_width", missing)
    onnx = make_tiny_onnx(tmp_path / "model.fp32.onnx")
    result = CliRunner().invoke(app, ["bench", "-e", str(onnx), "-n", "2", "--warmup", "0"], env={"COLUMNS": "80"})
    assert result.exit_code == 0 and "p50 ms" in result.output, result.output


def test_bench_device_auto_is_the_gpu_where_the_backend_has_one(tmp_path: Path) -> None:
    """`vitc bench --device auto` was "unknown device 'auto' for --device (cpu, cuda)" though train, eval and
    predict take it: ONNX Runtime's GPU provider where it has one (as eval's), PyTorch's GPU where torch sees one."""
    import onnxruntime

    onnx = make_tiny_onnx(tmp_path / "m.onnx")
    out = tmp_path / "r.json"
    result = run("bench", "-e", str(onnx), "--device", "auto", "-n", "2", "--warmup", "0", "--json", str(out))
    assert result.exit_code == 0, result.output
    gpu = {"CUDAExecutionProvider", "TensorrtExecutionProvider"} & set(onnxruntime.get_available_providers())
    assert [r["device"] for r in json.loads(out.read_text())["rows"]] == ["cuda" if gpu else "cpu"]
    torch = pytest.importorskip("torch")
    args = ["bench", "--model", "convit_micro", "--device", "auto", "-n", "2", "--warmup", "0", "--json", str(out)]
    result = run(*args, "--force")
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())["rows"]
    assert [r["device"] for r in rows] == ["cuda" if torch.cuda.is_available() else "cpu"]
    typo = run("bench", "-e", str(onnx), "--device", "gpu0")
    assert typo.exit_code == 2 and "(auto, cpu, cuda)" in typo.output, typo.output


TEGRA = {
    "35": "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, DATE: Tue Aug  1 2023",
    "36": "# R36 (release), REVISION: 4.0, GCID: 37537400, BOARD: generic, EABI: aarch64, DATE: Fri Sep 13 2024",
}


def on_a_jetson(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, l4t: str = "35") -> None:
    """Jetson facts from L4T files, no nvpmodel and no GPU clock node: `vitc bench` warns about both."""
    from vitc.engines import platform

    (tmp_path / "nv_tegra_release").write_text(TEGRA[l4t] + "\n")
    (tmp_path / "model").write_text("NVIDIA Jetson AGX Orin Developer Kit\x00")
    monkeypatch.setattr(platform, "TEGRA_RELEASE", tmp_path / "nv_tegra_release")
    monkeypatch.setattr(platform, "DEVICE_MODEL", tmp_path / "model")
    monkeypatch.setattr(platform, "gpu_clock_range", lambda: None)
    monkeypatch.setattr(platform, "_run", lambda cmd, timeout=10.0: None)


def in_a_venv_without_system_site_packages(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    venv.mkdir()
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\ninclude-system-site-packages = false\nversion = 3.8.10\n")
    monkeypatch.setattr("sys.prefix", str(venv))
    monkeypatch.setattr("sys.base_prefix", "/usr")


def test_bench_on_a_jetson_refuses_a_plan_before_it_warns_about_clocks(tmp_path: Path, monkeypatch):
    """`error: TensorRT is not installed` came after `warning: could not read the GPU clock range`: the clock
    warnings are said once the engines are loaded, and only then."""
    on_a_jetson(monkeypatch, tmp_path)
    monkeypatch.setitem(os.sys.modules, "tensorrt", None)
    plan = tmp_path / "m.plan"
    plan.write_bytes(b"ftrt" + bytes(20) + bytes([10, 3, 0, 26]) + bytes(8))
    refused = run("bench", "-e", str(plan))
    assert refused.exit_code == 2 and refused.output.startswith(f"error: running {plan} needs TensorRT"), refused.output
    assert "warning" not in refused.output
    onnx = make_tiny_onnx(tmp_path / "m.onnx")
    timed = run("bench", "-e", str(onnx), "-n", "2", "--warmup", "0")
    assert timed.exit_code == 0, timed.output
    assert "warning: could not read the GPU clock range; run `sudo jetson_clocks`" in timed.output


@pytest.mark.parametrize(("l4t", "extra"), [("35", "trt-cu11"), ("36", "trt-cu12")])
def test_a_jetson_names_its_remedies_in_build_bench_and_doctor(tmp_path: Path, monkeypatch, l4t: str, extra: str):
    """No TensorRT in a venv made without --system-site-packages, no cuda-python: every command names the venv
    to recreate (not `pip install tensorrt`) and the extra for this L4T (it was named only for a wrong major)."""
    from tests.engines.fakes.cuda_fakes import install_cuda
    from tests.engines.fakes.tensorrt_fake import install_tensorrt
    from vitc.engines.tensorrt import NO_SYSTEM_SITE_PACKAGES

    on_a_jetson(monkeypatch, tmp_path, l4t)
    in_a_venv_without_system_site_packages(monkeypatch, tmp_path)
    gpu = install_cuda(monkeypatch, cuda_python=None)
    monkeypatch.setitem(os.sys.modules, "tensorrt", None)
    monkeypatch.setenv("COLUMNS", "1000")  # doctor: one table row per line
    cuda = f"cuda-python: not installed (pip install 'vitc[{extra}]', the bindings for JetPack "
    built = run("build", str(make_tiny_onnx(tmp_path / "m.onnx")))
    assert built.exit_code == 2 and f"missing: TensorRT ({NO_SYSTEM_SITE_PACKAGES})" in built.output, built.output
    assert cuda in built.output and "pip install tensorrt" not in built.output
    plan = tmp_path / "m.plan"
    plan.write_bytes(b"ftrt" + bytes(20) + bytes([10, 3, 0, 26]) + bytes(8))
    benched = run("bench", "-e", str(plan))
    assert benched.exit_code == 2, benched.output
    assert f"missing: TensorRT ({NO_SYSTEM_SITE_PACKAGES}); CUDA bindings ({cuda}" in benched.output, benched.output
    doctor = run("doctor").output
    rows = {line.split("│")[1].strip(): line.split("│")[2].strip() for line in doctor.splitlines() if "│" in line}
    assert rows["tensorrt"] == f"missing ({NO_SYSTEM_SITE_PACKAGES})" and cuda in rows["cuda_binding"], doctor
    install_tensorrt(monkeypatch, "10.3" if l4t == "36" else "8.5", gpu)
    benched = run("bench", "-e", str(plan))
    assert benched.exit_code == 2 and cuda in benched.output, benched.output


def test_a_ratio_from_timings_too_spread_to_trust_is_warned_of(tmp_path: Path, monkeypatch) -> None:
    """`vitc bench --compare` (any two runners) printed a speed ratio from a side whose calls spread too far to
    trust without a word; a warning on stderr names that side. It weighed the CV, so one call of 200 stalled 50
    times over (CV 278%) warned though p50, what the ratio divides, had not moved, while calls in two modes (half
    at 1 ms, half at 3 ms: CV 50%) did not: now the spread around the median (IQR / p50) decides, and is named."""
    import vitc.cli.bench
    from vitc.bench import runner

    timings, calls, said = {"b": [0.001] * 200}, [], []

    def timed(step, plan):  # a, then b
        calls.append(step)
        return {"e2e": [0.001] * 200 if len(calls) == 1 else timings["b"]}

    monkeypatch.setattr(runner, "collect", timed)
    monkeypatch.setattr(vitc.cli.bench, "warn", lambda line, *a, **k: said.append(line))
    engines = [arg for name in ("a", "b") for arg in ("-e", str(make_tiny_onnx(tmp_path / f"{name}.onnx")))]
    for case, times in (
        ("stalled", [0.001] * 199 + [0.05]),
        ("steady", [0.001] * 200),
        ("two modes", [0.001, 0.003] * 100),
    ):
        timings["b"], calls[:], said[:] = times, [], []
        result = run("bench", *engines, "-b", "1", "--json", str(tmp_path / "r.json"), "--force")
        assert result.exit_code == 0, result.output
        report = json.loads((tmp_path / "r.json").read_text())
        noisy = [line for line in said if "ratio" in line]
        second = report["rows"][1]["e2e"]
        if case != "two modes":
            assert noisy == [] and report["warnings"] == [], (case, noisy)
            assert second["spread"] == 0.0
            assert second["cv"] > 1.0 or case == "steady"  # the stall's CV, still in the JSON
            continue
        assert second["spread"] == 1.0 and second["cv"] < 1.0
        assert noisy == [
            f"the ratio {report['rows'][1]['ratio_vs_first']:.2f}x of {report['rows'][1]['runner']} at batch 1 is not "
            f"to be trusted: {report['rows'][1]['runner']}'s spread around the median is 100%, over 50% (spread = "
            "(p75 - p25) / p50); time it again with more calls (-n, --duration) or --rounds, on a quieter machine"
        ]
        assert report["warnings"] == noisy  # the report keeps it beside the figures
