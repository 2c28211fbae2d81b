"""Issue 21: what would make the first real `vitc build` / `vitc bench --engine` fail, against the strict fakes.

Each test failed on the code before the fix: a held-out tail below the profile minimum, CUDA bindings
checked after the build, an unreadable timing cache, a version-compatible plan across majors, and the
bad inputs that must end in one line, exit code 2 and nothing half-written.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.engines.conftest import make_tiny_onnx
from vitc.artifacts import BatchRange
from vitc.artifacts.sidecar import sidecar_path
from vitc.build import tensorrt as B
from vitc.build.options import BuildOptions
from vitc.cli.main import app
from vitc.engines import tensorrt as T
from vitc.engines.trt_runner import TensorRTRunner
from vitc.errors import VitcError

cli = CliRunner()


def run(*args: object) -> tuple[int, str]:
    result = cli.invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def error_line(*args: object) -> str:
    """The command fails with exit code 2 and exactly one line, an `error:` line, and no traceback."""
    code, output = run(*args)
    lines = output.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), output
    return lines[0]


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


# -- 1. the held-out tail below the profile minimum ------------------------------------------------------
@pytest.mark.parametrize("version", ["8.5", "10.3", "11.1"])
@pytest.mark.parametrize("batch", ["8", "5:8:10"])
def test_drift_pads_the_last_chunk_up_to_the_profile_minimum(version, batch, fake, export_dir, tmp_path):
    """12 held-out images: profile 8:8:8 leaves 4, profile 5:8:10 leaves 2, both below the minimum."""
    fake(version)
    plan = tmp_path / "m.plan"
    code, output = run("build", export_dir / "model.fp32.onnx", "--out", plan, "--batch", batch)
    assert code == 0, output
    drift = json.loads(sidecar_path(plan).read_text())["engine_drift"]
    assert drift["samples"] == 12 and drift["agreement"] == 100.0 and drift["max_abs_diff"] < 1e-6
    with TensorRTRunner(plan) as runner:
        low = BatchRange.parse(batch).min
        assert runner.min_batch() == low and not runner.supports_batch(low - 1)
    report = tmp_path / "bench.json"
    top = batch.split(":")[-1]
    code, output = run("bench", "-e", plan, "--data", export_dir, "-b", top, "-n", "2", "--json", report)
    assert code == 0, output
    assert json.loads(report.read_text())["rows"][0]["accuracy"]["samples"] == 12


def test_held_out_images_of_another_export_stop_the_build_before_it_starts(fake, export_dir, tmp_path):
    fake("10.3")
    with np.load(export_dir / "heldout.npz") as data:
        arrays = dict(data)
    arrays["images"] = np.zeros((12, 3, 16, 16), np.float32)  # another export's image size
    np.savez(export_dir / "heldout.npz", **arrays)
    line = error_line("build", export_dir / "model.fp32.onnx", "--out", tmp_path / "engines" / "m.plan")
    assert "held-out images are 3×16×16, the engine takes 3×8×8" in line
    assert not (tmp_path / "engines").exists() or not any((tmp_path / "engines").iterdir())


# -- 2. everything the build needs is checked before parsing ------------------------------------------------
def test_missing_cuda_bindings_stop_the_build_before_parsing(fake, monkeypatch, tmp_path):
    from tests.engines.fakes.cuda_fakes import install_cuda

    fake("10.3")
    install_cuda(monkeypatch, cuda_python=None)  # TensorRT's wheels pull in neither cuda-python nor pycuda
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"not even ONNX: parsing it first would fail with a parser error")
    out = tmp_path / "engines"
    line = error_line("build", onnx, "--out", out / "m.plan")
    assert "missing: CUDA bindings (cuda-python: not installed (pip install 'vitc[trt-cu11]'" in line
    assert "; pycuda: not installed)" in line
    assert "TensorRT (" not in line  # the fake TensorRT is there
    assert not out.exists()  # no plan, no sidecar, no timing cache


def test_build_on_a_machine_without_tensorrt_names_everything_missing(monkeypatch, tiny_onnx):
    from tests.engines.fakes.cuda_fakes import install_cuda

    monkeypatch.setattr(T, "tensorrt_available", lambda: False)
    install_cuda(monkeypatch, cuda_python=None)
    line = error_line("build", tiny_onnx)
    assert "vitc build needs TensorRT, CUDA bindings and an NVIDIA GPU; missing: TensorRT (pip install tensorrt" in line
    assert "CUDA bindings (cuda-python: not installed" in line


def test_an_earlier_plan_is_refused_only_where_a_build_could_run(fake, monkeypatch, tiny_onnx, tmp_path):
    """Without TensorRT, `vitc build` over an existing plan said "exists (use --force to replace it)", and only
    --force led to the TensorRT it lacks: the machine is checked first, then the output."""
    import sys

    plan = tmp_path / "engines" / "m.plan"
    plan.parent.mkdir()
    plan.write_bytes(b"an earlier build")
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    line = error_line("build", tiny_onnx, "--out", plan)
    assert line.startswith("error: vitc build needs TensorRT, CUDA bindings and an NVIDIA GPU; missing: TensorRT (")
    fake("10.3")  # a machine that builds: now the plan is what stops it
    assert error_line("build", tiny_onnx, "--out", plan) == f"error: {plan} exists (use --force to replace it)"
    assert plan.read_bytes() == b"an earlier build" and sorted(p.name for p in plan.parent.iterdir()) == ["m.plan"]


def test_a_plan_on_a_machine_without_tensorrt_or_bindings_names_both_as_build_does(
    fake, export_dir, monkeypatch, tmp_path
):
    """bench, predict and eval on a plan said `TensorRT is not installed (...)` alone where build named the CUDA
    bindings too: once TensorRT was installed, the next try stopped at the bindings. They say build's line."""
    import sys

    from tests.engines.fakes.cuda_fakes import install_cuda

    fake("10.3")
    plan = tmp_path / "m.plan"
    assert run("build", export_dir / "model.fp32.onnx", "--out", plan)[0] == 0
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # then a machine with neither
    install_cuda(monkeypatch, cuda_python=None)
    images = tmp_path / "images"
    images.mkdir()
    pytest.importorskip("PIL.Image").new("RGB", (12, 9), (200, 30, 90)).save(images / "x.png")
    built = error_line("build", export_dir / "model.fp32.onnx", "--out", tmp_path / "other.plan")
    missing = built.split("; missing: ", 1)[1]
    assert (
        missing.startswith("TensorRT (pip install tensorrt")
        and "; CUDA bindings (cuda-python: not installed" in missing
    )
    for args in (("bench", "-e", plan), ("predict", plan, images), ("eval", plan)):
        assert (
            error_line(*args)
            == f"error: running {plan} needs TensorRT, CUDA bindings and an NVIDIA GPU; missing: {missing}"
        ), args


def test_a_tensorrt_that_fails_to_import_is_said_so_not_installed(tmp_path: Path) -> None:
    """A TensorRT whose libnvinfer does not load: `vitc doctor` said "broken: ...", vitc build and bench --engine
    "not installed (pip install tensorrt ...)", the wrong remedy on a Jetson."""
    import os
    import subprocess
    import sys

    (tmp_path / "tensorrt").mkdir()
    (tmp_path / "tensorrt" / "__init__.py").write_text(
        '__version__ = "8.5.2.2"\nraise ImportError("libnvinfer.so.8: cannot open shared object file")\n'
    )
    script = (
        "from vitc.build.tensorrt import check_build_machine\nfrom vitc.engines.tensorrt import installed_version\n"
        "for check in (check_build_machine, installed_version):\n"
        "    try:\n        check()\n    except Exception as exc:\n        print(exc)\n"
    )
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), root])}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    build, version = done.stdout.splitlines()
    broken = "tensorrt is installed but cannot be imported: libnvinfer.so.8: cannot open shared object file"
    assert f"missing: TensorRT ({broken}); CUDA bindings" in build, done.stdout + done.stderr
    assert version == broken


def test_a_failed_drift_check_leaves_the_earlier_plan_and_sidecar(fake, export_dir, monkeypatch, tmp_path):
    """Nothing half-written: plan and sidecar are renamed into place only after the check succeeded."""
    from vitc.engines import accuracy

    fake("10.3")
    out = tmp_path / "engines"
    code, output = run("build", export_dir / "model.fp32.onnx", "--out", out / "m.plan")
    assert code == 0, output
    before = files(out)

    def broken(*args: object, **kwargs: object) -> None:
        raise VitcError("m.plan: out of GPU memory during the check")

    monkeypatch.setattr(accuracy, "heldout_accuracy", broken)
    line = error_line("build", export_dir / "model.fp32.onnx", "--out", out / "m.plan", "--batch", "1:2:4", "--force")
    assert "no plan was written" in line and "--no-check" in line
    after = files(out)
    assert {k: v for k, v in after.items() if not k.startswith("timing")} == {
        k: v for k, v in before.items() if not k.startswith("timing")
    }
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary file left behind


def test_ctrl_c_as_the_first_of_plan_and_sidecar_lands_waits_for_the_other(fake, export_dir, monkeypatch, tmp_path):
    """A rebuild renamed its new sidecar in, then its plan: a Ctrl-C between the two left the new sidecar beside the
    old plan, which every reader refuses. The pair is renamed in together; the Ctrl-C is sent from the first rename."""
    import os
    import signal

    from vitc.artifacts.sidecar import check_sidecar_matches, load_sidecar

    fake("10.3")
    plan = tmp_path / "engines" / "m.plan"
    assert run("build", export_dir / "model.fp32.onnx", "--out", plan)[0] == 0
    before = files(plan.parent)
    rename, sent = os.replace, []

    def rename_then_ctrl_c(source: str, target: str) -> None:
        rename(source, target)
        if Path(target) in (plan, sidecar_path(plan)) and not sent:
            sent.append(target)
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(os, "replace", rename_then_ctrl_c)
    code, output = run("build", export_dir / "model.fp32.onnx", "--out", plan, "--batch", "1:2:4", "--force")
    assert sent and code == 130, output
    after = files(plan.parent)
    pair = {plan.name, sidecar_path(plan).name}
    assert {name for name in pair if after[name] != before[name]} == pair  # both new, not one of them
    check_sidecar_matches(plan, load_sidecar(plan), plan.read_bytes())


# -- 4. the timing cache and version-compatible plans -----------------------------------------------------
def test_an_unreadable_timing_cache_falls_back_to_a_fresh_one(fake, tiny_onnx, monkeypatch, tmp_path):
    fake("10.3")
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"someone else's cache")
    real_read = Path.read_bytes

    def read_bytes(self: Path) -> bytes:  # tests run as root, so chmod 000 would not stop the read
        if self == cache:
            raise PermissionError(13, "Permission denied", str(self))
        return real_read(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    opts = BuildOptions(onnx=tiny_onnx, output=tmp_path / "m.plan", timing_cache=cache, check=False)
    result = B.build_engine(opts)
    assert sidecar_path(result.plan).is_file()
    assert any("cannot read the timing cache" in w and "Permission denied" in w for w in result.warnings)
    monkeypatch.setattr(Path, "read_bytes", real_read)
    assert cache.read_bytes() == b"someone else's cache"  # left as it was


def test_a_foreign_timing_cache_is_one_warning_line(fake, tiny_onnx, tmp_path):
    """A cache of another GPU is not an error: the build goes on with a fresh cache and says so once."""
    fake("10.3")
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"FAKETC" + json.dumps({"origin": ["10.3.0.26", [7, 2]], "entries": ["k"]}).encode())
    code, output = run("build", tiny_onnx, "--out", tmp_path / "m.plan", "--timing-cache", cache, "--batch", "2")
    assert code == 0, output
    assert [line for line in output.splitlines() if line.startswith("warning:")] == [
        line for line in output.splitlines() if "does not match this TensorRT/GPU" in line
    ]


@pytest.mark.parametrize(
    ("built", "runtime", "runs"),
    [("8.6", "10.3", True), ("8.6", "11.1", False), ("10.3", "11.1", True), ("10.16", "10.3", False)],
)
def test_version_compatible_plans_across_majors(built, runtime, runs, fake, tiny_onnx, tmp_path):
    """Support matrix 11.4.1: within a major, and across majors only 8 -> 10 and 10 -> 11."""
    fake(built)
    opts = BuildOptions(onnx=tiny_onnx, output=tmp_path / "vc.plan", version_compatible=True, check=False)
    plan = B.build_engine(opts).plan
    fake(runtime)
    if runs:
        with TensorRTRunner(plan) as runner:
            assert runner.infer({"input": np.ones((1, 3, 8, 8), np.float32)})["logits"].shape == (1, 10)
    else:
        line = error_line("bench", "-e", plan)
        assert f"built with TensorRT {built}" in line and "rebuild it here with `vitc build`" in line


def test_a_version_compatible_plan_without_its_sidecar_says_so(fake, tiny_onnx, tmp_path):
    """Without the sidecar vitc cannot know to allow the plan's host code: name that, not only 'could not'."""
    fake("8.6")
    opts = BuildOptions(onnx=tiny_onnx, output=tmp_path / "vc.plan", version_compatible=True, check=False)
    plan = B.build_engine(opts).plan
    sidecar_path(plan).unlink()
    fake("10.3")
    line = error_line("bench", "-e", plan)
    assert "built with TensorRT 8.6" in line and "--version-compatible" in line and "no sidecar, vc.plan.json" in line
    # the same release, and TensorRT itself refuses the plan: vitc names the missing sidecar as the likely cause
    plan = B.build_engine(BuildOptions(onnx=tiny_onnx, output=tmp_path / "c.plan", check=False)).plan
    sidecar_path(plan).unlink()
    plan.write_bytes(plan.read_bytes()[:40])  # the header intact, the engine not
    line = error_line("bench", "-e", plan)
    assert "TensorRT 10.3.0.26 could not deserialise the plan; it has no sidecar (c.plan.json)" in line


# -- bad input: one line, exit 2 ---------------------------------------------------------------------------
def test_a_plan_of_another_major_is_one_line(fake, tiny_onnx, tmp_path):
    fake("8.6")
    plan = B.build_engine(BuildOptions(onnx=tiny_onnx, output=tmp_path / "m.plan", check=False)).plan
    fake("10.3")
    assert "built with TensorRT 8.6" in error_line("bench", "-e", plan)


def test_a_plan_without_its_sidecar_runs_with_a_warning(fake, tiny_onnx, tmp_path):
    fake("10.3")
    plan = B.build_engine(BuildOptions(onnx=tiny_onnx, output=tmp_path / "m.plan", check=False)).plan
    sidecar_path(plan).unlink()
    code, output = run("bench", "-e", plan, "-n", "2")
    assert code == 0, output
    assert "no sidecar (m.plan.json)" in output


def test_a_sidecar_of_another_plan_is_refused(fake, tiny_onnx, tmp_path):
    fake("10.3")
    a = B.build_engine(BuildOptions(onnx=tiny_onnx, output=tmp_path / "a.plan", check=False)).plan
    b = B.build_engine(
        BuildOptions(onnx=tiny_onnx, output=tmp_path / "b.plan", batch=BatchRange.parse("1:2:4"), check=False)
    ).plan
    shutil.copy(sidecar_path(a), sidecar_path(b))
    for command in (("bench", "-e", b), ("info", b)):
        line = error_line(*command)
        assert "b.plan.json: this sidecar describes another plan" in line


def test_sidecars_written_before_the_plan_record_still_load(fake, tiny_onnx, tmp_path):
    """Byte compatibility: a sidecar of the previous release has no "plan" record and is trusted as before."""
    fake("10.3")
    plan = B.build_engine(BuildOptions(onnx=tiny_onnx, output=tmp_path / "m.plan", check=False)).plan
    record = json.loads(sidecar_path(plan).read_text())
    assert record["plan"]["sha256"] and record["plan"]["bytes"] == plan.stat().st_size
    del record["plan"]
    sidecar_path(plan).write_text(json.dumps(record))
    with TensorRTRunner(plan) as runner:
        assert runner.infer({"input": np.ones((1, 3, 8, 8), np.float32)})["logits"].shape == (1, 10)


def test_static_engines_still_pad_to_their_batch(fake, tmp_path, export_dir):
    """The old path (a graph with a static batch) keeps working: 12 images through a batch-5 engine."""
    fake("10.3")
    onnx = make_tiny_onnx(tmp_path / "s.onnx", batch=5)
    plan = B.build_engine(BuildOptions(onnx=onnx, output=tmp_path / "s.plan", check=False)).plan
    from vitc.artifacts import load_heldout
    from vitc.engines.accuracy import heldout_accuracy

    with TensorRTRunner(plan) as runner:
        drift = heldout_accuracy(runner, load_heldout(export_dir / "heldout.npz"))
    assert drift.to_dict()["samples"] == 12 and drift.to_dict()["agreement"] == 100.0
