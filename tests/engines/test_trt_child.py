"""TensorRT 8.5 builds in a child process (vitc.build.trt_child): its OnnxParser and network keep each other
alive in pybind11's table, so only the end of a process frees the builder, the network and the weights."""

from __future__ import annotations

import json
import operator
import os
import signal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.engines.fakes.tensorrt_fake import CHILD_ENV
from vitc.build.trt_child import run_in_child
from vitc.cli.main import app
from vitc.engines.tensorrt import parse_version
from vitc.errors import VitcError


def test_the_child_returns_the_result_and_raises_what_it_raised() -> None:
    assert run_in_child(operator.add, ([1], [2]), "the sum") == [1, 2]
    with pytest.raises(VitcError) as err:  # a VitcError: the same one line
        run_in_child(parse_version, ("garbage",), "the version")
    assert str(err.value) == "cannot read the TensorRT version 'garbage'"
    with pytest.raises(ValueError, match="invalid literal"):  # a bug: the same exception (its traceback on stderr)
        run_in_child(int, ("x",), "the number")


def test_a_child_that_ends_without_a_result_is_one_line_with_its_exit_code() -> None:
    with pytest.raises(VitcError) as err:
        run_in_child(os._exit, (3,), "the step")
    assert str(err.value) == "the step ended without a result: exit code 3"
    with pytest.raises(VitcError) as err:
        run_in_child(signal.raise_signal, (signal.SIGKILL,), "the step")
    assert str(err.value) == "the step ended without a result: exit code -9 (SIGKILL: out of memory?)"


def test_an_8_5_build_killed_in_its_child_is_one_line(fake, export_dir: Path, tmp_path: Path, monkeypatch) -> None:
    """The OOM killer (or a crash in TensorRT) ends the child process that builds on 8.5: `vitc build` says so
    in one line naming TensorRT 8.5 and the exit code, and writes nothing."""
    trt = fake("8.5")
    monkeypatch.setenv(CHILD_ENV, json.dumps({**json.loads(os.environ[CHILD_ENV]), "killed_while_building": True}))
    onnx = export_dir / "model.fp32.onnx"
    result = CliRunner().invoke(app, ["build", str(onnx), "--out", str(tmp_path / "m.plan")], env={"COLUMNS": "2000"})
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and "Traceback" not in result.output, result.output
    assert lines[0] == (
        f"error: {onnx}: the TensorRT {trt.__version__} build (a child process: 8.5 never frees its builder) ended "
        "without a result: exit code -9 (SIGKILL: out of memory?)"
    )
    assert not list(tmp_path.glob("*.plan*"))


def test_the_child_passes_no_file_descriptor_and_leaves_no_file(monkeypatch, tmp_path: Path) -> None:
    """The result came back on an inherited pipe (`pass_fds`), which Windows' subprocess refuses with an
    AssertionError (a traceback from `vitc build` on 8.5); it comes back in a file the parent names and removes.
    A large result (a plan) comes back whole."""
    import subprocess
    import tempfile

    popen = subprocess.Popen

    def windows_popen(*args, **kwargs):
        assert not kwargs.get("pass_fds"), "pass_fds not supported on Windows."  # CPython's Windows check
        return popen(*args, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", windows_popen)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    plan = os.urandom(3 << 20)
    assert run_in_child(bytes, (plan,), "the copy") == plan
    assert list(tmp_path.iterdir()) == []
    beside = tmp_path / "engines"  # the plan's folder, not a tmpfs /tmp holding it in memory
    beside.mkdir()
    made = []
    mkdtemp = tempfile.mkdtemp
    monkeypatch.setattr(tempfile, "mkdtemp", lambda **kw: made.append(kw.get("dir")) or mkdtemp(**kw))
    assert run_in_child(bytes, (plan,), "the copy", str(beside)) == plan
    assert made == [str(beside)] and list(beside.iterdir()) == []
