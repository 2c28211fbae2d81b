"""Bad input at the command line itself: one line, exit code 2, nothing started or overwritten."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vitc._device import cpu_cores
from vitc.checkpoint import resolve_checkpoint
from vitc.errors import VitcError
from vitc.importers import read_state_dict

ROOT = Path(__file__).resolve().parents[1]


def _vitc(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The console entry point (vitc.cli.main:main), as the installed `vitc` runs it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "80"}
    command = [sys.executable, "-c", "import sys; sys.argv[0] = 'vitc'; from vitc.cli.main import main; main()", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("train", "--epochs", "abc"), "error: Invalid value for '--epochs'"),
        (("inspect", "run", "--images", "0"), "error: Invalid value for '--images'"),
        (("import",), "error: Missing argument 'source'."),
        (("trian",), "error: No such command 'trian'."),
        (("bench", "--bogus"), "error: No such option: --bogus"),
        (("train", "--epochs"), "error: Option '--epochs' requires an argument."),  # no context: the command's help
        (("bench", "--threads", "0", "-e", "m.onnx"), "error: Invalid value for '--threads'"),  # 0 ran as default
    ],
)
def test_a_usage_error_is_one_line(args: tuple[str, ...], said: str, tmp_path: Path) -> None:
    """typer drew click's usage errors in a box of five or six lines ("Usage: … ╭─ Error ─╮ …"); they are
    one line now, as vitc's own, naming the help to read."""
    done = _vitc(*args, cwd=tmp_path)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(said), done.stderr
    assert lines[0].endswith("--help`)") and not done.stdout


def test_a_usage_error_names_its_commands_help(tmp_path: Path) -> None:
    """click raises a missing option value without its context: the line named `vitc --help`, which does not
    list the option."""
    assert _vitc("train", "--epochs", cwd=tmp_path).stderr.strip().endswith("(see `vitc train --help`)")


def test_an_abort_and_a_closed_pipe_end_quietly(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Evaluating `except click.Abort` on typer's vendored click (no Abort there) turned every exception
    the entry point did not catch first, such as the exit of a closed pipe (`vitc train --help | head -1`),
    into an AttributeError traceback."""
    from typer.exceptions import Abort

    from vitc.cli import main as cli_main

    def aborting(**_: object) -> None:
        raise Abort

    monkeypatch.setattr(cli_main, "app", aborting)
    with pytest.raises(SystemExit) as ended:
        cli_main.main()
    assert ended.value.code == 1 and capsys.readouterr().err.strip() == "Aborted!"

    def piped(**_: object) -> None:
        raise SystemExit(1)  # what click does on EPIPE

    monkeypatch.setattr(cli_main, "app", piped)
    with pytest.raises(SystemExit) as ended:
        cli_main.main()
    assert ended.value.code == 1 and capsys.readouterr().err == ""


def test_ctrl_c_after_the_command_ends_it_quietly_with_130(tmp_path: Path) -> None:
    """A Ctrl-C just after `vitc export` printed its last line fell into torch's exit callback (its libraries
    unloading): `Exception ignored in atexit callback … KeyboardInterrupt` on stderr, and exit code 0. As one during
    the command: 130 and nothing more. The Ctrl-C is sent from an exit callback that runs where torch's does."""
    script = (
        "import atexit, os, signal, sys\n"
        "atexit.register(os.kill, os.getpid(), signal.SIGINT)  # registered first: runs after main's, as torch's\n"
        "sys.argv = ['vitc', '--version']\n"
        "from vitc.cli.main import main\n"
        "main()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert (done.returncode, done.stderr) == (130, ""), done.stderr
    assert done.stdout.startswith("vitc ")  # what the command printed is out


def test_ctrl_c_that_typer_made_an_abort_is_130_quietly(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """typer 0.12 (what pyproject admits) turned a Ctrl-C into an Abort: `Aborted!` and exit code 1."""
    from typer.exceptions import Abort

    from vitc.cli import main as cli_main

    def interrupted(**_: object) -> None:
        raise Abort from KeyboardInterrupt()

    monkeypatch.setattr(cli_main, "app", interrupted)
    monkeypatch.setattr(
        cli_main, "_quiet_ctrl_c_at_exit", lambda: None, raising=False
    )  # this process's own exit keeps its Ctrl-C
    with pytest.raises(SystemExit) as ended:
        cli_main.main()
    assert ended.value.code == 130 and capsys.readouterr().err == ""


def test_an_onnx_file_given_as_weights_says_what_it_is(tmp_path: Path) -> None:
    """`vitc train --pretrained model.onnx` and `vitc import m.plan` said "corrupt pickle" of a valid file."""
    path = tmp_path / "model.fp32.onnx"
    path.write_bytes(b"\x08\x07")
    with pytest.raises(VitcError) as refused:
        read_state_dict(path)
    assert str(refused.value) == (
        f"{path} is an ONNX file, not weights: name the checkpoint or weights file it was made from"
    )


def test_help_and_the_bare_command_still_show_the_help(tmp_path: Path) -> None:
    assert "Usage: vitc" in " ".join(_vitc("--help", cwd=tmp_path).stdout.split())
    bare = _vitc(cwd=tmp_path)
    assert "Usage: vitc" in " ".join((bare.stdout + bare.stderr).split())


@pytest.mark.parametrize("nproc", ["0", "-1", "100000"])
def test_nproc_out_of_range_is_refused_before_anything_starts(nproc: str, tmp_path: Path) -> None:
    """--nproc 0 and -1 trained in-process as 1; a typo such as 100000 started rank processes, each importing
    torch, until the machine gave out. Refused in one line naming the range, with no run folder made."""
    done = _vitc("train", "--nproc", nproc, "--name", "np", cwd=tmp_path)
    assert done.returncode == 2
    cores = cpu_cores()
    assert done.stderr.strip() == (
        f"error: --nproc must be 1 to {max(8, cores)} on this machine ({cores} CPU core{'s' * (cores != 1)}; one "
        "process per GPU), "
        f"got {nproc}"
    )
    assert not (tmp_path / "train").exists()


def test_nproc_counts_the_cores_this_process_may_use(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under taskset or a container's CPU limit, --nproc's range and message count the cores the process may run
    on (its affinity, as `vitc bench` and ONNX Runtime's threads count them), not os.cpu_count()'s machine."""
    from vitc.cli.train import _check_nproc

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(9)), raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    with pytest.raises(VitcError) as refused:
        _check_nproc(10)
    assert str(refused.value) == "--nproc must be 1 to 9 on this machine (9 CPU cores; one process per GPU), got 10"
    _check_nproc(9)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)  # `taskset -c 0`: "1 CPU cores"
    with pytest.raises(VitcError, match=r"\(1 CPU core; one process per GPU\), got 9$"):
        _check_nproc(9)


@pytest.mark.parametrize("text", [b"Repository not found", b"hello", b"test", b"error", b"see README"])
def test_a_short_text_file_given_as_weights_is_one_line(text: bytes, tmp_path: Path) -> None:
    """An error page saved by curl as w.pth: torch's weights-only unpickler raised IndexError or KeyError on
    the garbled opcodes, which left as a 60-line traceback (HTML, JSON and random bytes were one line)."""
    path = tmp_path / "w.pth"
    path.write_bytes(text + b"\n")
    with pytest.raises(VitcError, match=r"w\.pth: not a readable PyTorch checkpoint \(corrupt pickle\)$"):
        read_state_dict(path)


@pytest.mark.parametrize(
    ("name", "what"),
    [("model.fp16.onnx", "an ONNX file"), ("m.plan", "a TensorRT plan"), ("model.pt2", "an exported PyTorch program")],
)
def test_an_artifact_given_for_a_checkpoint_says_what_it_is(name: str, what: str, tmp_path: Path) -> None:
    """`vitc export model.fp32.onnx` said "not a safetensors file (bad header length)"; export, compile,
    inspect, eval and bench --ckpt read their checkpoint through resolve_checkpoint, which now names it."""
    path = tmp_path / name
    path.write_bytes(b"\x08\x07")
    with pytest.raises(VitcError) as refused:
        resolve_checkpoint(path)
    assert str(refused.value) == (
        f"{path} is {what}, not a vitc checkpoint: name the checkpoint or run folder it was made from"
    )


def test_output_in_a_legacy_code_page_writes_what_it_cannot_encode_as_a_question_mark(tmp_path: Path) -> None:
    """Windows writes a redirected stdout in cp1252 (no '→', 'Δ', 'σ'): the help ran into UnicodeEncodeError."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "80", "PYTHONIOENCODING": "cp1252"}
    command = [sys.executable, "-c", "import sys; sys.argv[0] = 'vitc'; from vitc.cli.main import main; main()"]
    done = subprocess.run([*command, "--help"], cwd=tmp_path, env=env, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode("cp1252")
    assert b"Usage: vitc" in done.stdout
    assert "σ".encode("cp1252", errors="replace") in done.stdout


def test_narrow_encodings_are_tolerated_on_both_streams(monkeypatch: pytest.MonkeyPatch) -> None:
    from vitc.cli._console import tolerate_narrow_encodings

    streams = {name: io.TextIOWrapper(io.BytesIO(), encoding="cp1252") for name in ("stdout", "stderr")}
    for name, stream in streams.items():
        monkeypatch.setattr(sys, name, stream)
    tolerate_narrow_encodings()
    for stream in streams.values():
        stream.write("max |Δ| → 1e-7, ≥ 99%")
        stream.flush()
        assert stream.buffer.getvalue() == b"max |?| ? 1e-7, ? 99%"  # type: ignore[attr-defined]
