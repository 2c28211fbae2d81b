"""The runtime path runs on Python 3.8 (JetPack 5), the training side says in one line that it needs 3.10.

`make test-runtime` runs the runtime tests under 3.8 and 3.10; the checks here also run in the main
venv: vermin finds 3.9+ APIs (zip(strict=), functools.cache, importlib.resources.files) in every module
the runtime imports and in the tests the old interpreters run, which lint (syntax only) cannot.
"""

from __future__ import annotations

import json
import platform
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]

# What `vitc info/doctor/check/build/bench --engine/predict ENGINE` import (lazily too), with torch absent.
RUNTIME_ENTRY = [
    "vitc.cli.main",
    "vitc._device",
    "vitc._model_sources",
    "vitc.artifacts",
    "vitc.artifacts.given",
    "vitc.checkpoint",
    "vitc.engines",
    "vitc.engines.accuracy",
    "vitc.engines.classify",
    "vitc.engines.cuda",
    "vitc.engines.onnxrt",
    "vitc.engines.platform",
    "vitc.engines.tensorrt",
    "vitc.engines.trt_plan",
    "vitc.engines.trt_runner",
    "vitc.build.tensorrt",
    "vitc.bench.report",
    "vitc.bench.runner",
    "vitc.bench.timing",
    "vitc.cli.eval",
    "vitc.metrics",
    "vitc.train.report",
    "vitc.data.cifar",
    "vitc.data.files",
    "vitc.data.folder_index",
    "vitc.data.images",
    "vitc.export.onnx_export",
    "vitc.export.trt_rules",
]
CLOSURE = r"""
import importlib, json, sys
sys.modules["torch"] = None
for name in sys.argv[1:]:
    importlib.import_module(name)
files = [m.__file__ for n, m in list(sys.modules.items()) if n.split(".")[0] == "vitc" and m and m.__file__]
print(json.dumps(sorted(files)))  # a namespace package (vitc/train) has no __file__
"""
TRAINING_COMMANDS = [
    ["train"],
    ["eval", "x.safetensors"],
    ["compile", "convit_micro"],
    ["export", "x.safetensors"],
    ["inspect", "x.safetensors"],
    ["import", "x.pth", "-m", "convit_micro", "-o", "out"],
]


def _named(argv: list[str]) -> str:
    """How a training command names itself; `vitc eval` also runs engines, so it says that a checkpoint needs torch."""
    return f"vitc {argv[0]}" + (
        " on a checkpoint (an engine, .plan or .onnx, needs no torch)" if argv[0] == "eval" else ""
    )


def runtime_files() -> list[str]:
    """The vitc modules the runtime imports, the tests `make test-runtime` selects, and their helpers."""
    done = subprocess.run(
        [sys.executable, "-c", CLOSURE, *RUNTIME_ENTRY], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr[-3000:]
    modules = json.loads(done.stdout.strip().splitlines()[-1])
    makefile = (ROOT / "Makefile").read_text()
    selected = re.search(r"^RUNTIME_TESTS :=((?:.*\\\n)*.*)$", makefile, re.M)
    assert selected, "RUNTIME_TESTS not found in the Makefile"
    args = selected.group(1).replace("\\\n", " ").split()
    ignored = {ROOT / a.split("=", 1)[1] for a in args if a.startswith("--ignore=")}
    tests: list[Path] = []
    for arg in (ROOT / a for a in args if not a.startswith("-")):
        tests += sorted(arg.rglob("*.py")) if arg.is_dir() else [arg]
    tests += [ROOT / "tests/conftest.py"]
    imported = [t for t in tests if t.name.startswith(("test_", "conftest")) or t.parent.name == "fakes"]
    return modules + [str(t) for t in imported if t not in ignored]  # not the extraction scripts


def test_runtime_modules_use_no_api_newer_than_python_3_8() -> None:
    pytest.importorskip("vermin")
    files = runtime_files()
    assert any(f.endswith("vitc/engines/base.py") for f in files) and any(f.endswith("cli/train.py") for f in files)
    done = subprocess.run(
        [sys.executable, "-c", "from vermin import main; raise SystemExit(main())", "-t=3.8-", "--no-tips",
         "--violations", "--backport", "typing_extensions", *files],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    # str methods of 3.9 that vermin cannot see (it does not know the receiver is a str)
    newer = [f"{f}:{n}" for f in files for n, line in enumerate(Path(f).read_text().splitlines(), 1)
             if re.search(r"\.remove(prefix|suffix)\(", line)]  # fmt: skip
    assert not newer, newer


@pytest.fixture
def old_python(monkeypatch: pytest.MonkeyPatch) -> str:
    """On 3.10+ pretend the training side needs a newer Python; on 3.8 (make test-runtime) it is real."""
    from vitc import _lazy

    if sys.version_info >= (3, 10):
        monkeypatch.setattr(_lazy, "TRAINING_PYTHON", (sys.version_info[0], sys.version_info[1] + 1))
    return ".".join(map(str, _lazy.TRAINING_PYTHON))


@pytest.mark.parametrize("argv", TRAINING_COMMANDS, ids=lambda a: a[0])
def test_training_commands_say_they_need_a_newer_python_in_one_line(old_python: str, argv: list[str]) -> None:
    from vitc.cli.main import app

    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith(f"error: {_named(argv)} needs Python >= {old_python} and PyTorch (this is Python ")
    assert "info, doctor, check, build, and bench, predict and eval on an engine run here" in lines[0]


@pytest.mark.parametrize("argv", TRAINING_COMMANDS, ids=lambda a: a[0])
def test_training_commands_without_torch_say_so_in_one_line(monkeypatch: pytest.MonkeyPatch, argv: list[str]) -> None:
    """Python 3.10 without the torch extra (JetPack 6): one line naming the install, not a ModuleNotFoundError."""
    from vitc import _lazy
    from vitc.cli.main import app

    monkeypatch.setattr(_lazy, "TRAINING_PYTHON", (3, 8))
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` fails, find_spec says absent
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 2, result.output
    assert result.output.strip() == (
        f"error: {_named(argv)} needs PyTorch, which is not installed "
        "(pip install torch==2.13.0 && pip install 'vitc[torch]')"
    )


def test_the_python_api_says_it_needs_a_newer_python(old_python: str) -> None:
    import vitc

    with pytest.raises(vitc.VitcError, match=rf"vitc\.create_model needs Python >= {re.escape(old_python)}"):
        vitc.create_model  # noqa: B018


def test_every_command_builds_and_the_runtime_ones_run(tmp_path: Path) -> None:
    """typer evaluates all signatures for --help; a `X | None` would fail here on 3.8."""
    from vitc.cli.main import app

    runner = CliRunner()
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0, result.output
    for name in ("train", "eval", "compile", "export", "inspect", "import", "check", "build", "bench", "doctor"):
        assert name in result.output
        helped = runner.invoke(app, [name, "--help"])
        assert helped.exit_code == 0 and "Usage" in helped.output, (name, helped.output)
    doctor = runner.invoke(app, ["doctor", "--json"])
    assert doctor.exit_code == 0, doctor.output
    facts = json.loads(doctor.output)["facts"]
    assert facts["python"] == ".".join(map(str, sys.version_info[:3]))


def test_doctor_says_training_needs_a_newer_python(old_python: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Even where torch imports (NVIDIA's JetPack 5 wheel is for Python 3.8), the training rows are unsupported,
    and say it is the Python: not "missing", which sent a JetPack 5 user to install a torch that would not help."""
    from vitc import _lazy
    from vitc.cli import doctor
    from vitc.cli.main import app

    jetpack_torch = SimpleNamespace(
        __version__="2.0.0", version=SimpleNamespace(cuda="11.4"), cuda=SimpleNamespace(is_available=lambda: True)
    )
    found = _lazy.import_optional
    monkeypatch.setattr(
        _lazy, "import_optional", lambda name: (jetpack_torch, None) if name == "torch" else found(name)
    )
    facts = doctor.gather()
    assert facts["torch"]["version"] == "2.0.0"  # it imports, and is still no use here
    rows = {command: (needs, ok, why) for command, needs, ok, _, why in doctor.requirements(facts)}
    said = f"Python {platform.python_version()} < {old_python}"
    assert rows["train / compile / eval ckpt"] == (f"Python >= {old_python}, torch", False, said)
    for command in ("export", "bench --model / --compare", "bench --device cuda"):
        assert rows[command][1:] == (False, said), command
    assert rows["bench / predict / eval x.onnx"][1:] == (True, "")  # the runtime rows do not ask for 3.10
    monkeypatch.setenv("COLUMNS", "400")  # one table row per line
    table = CliRunner().invoke(app, ["doctor"])
    assert table.exit_code == 0, table.output
    row = [line for line in table.output.splitlines() if "train / compile" in line]
    assert row[0].split("│")[3].strip() == f"unsupported: {said}"


def test_doctor_torch_row_says_the_python_is_too_old(old_python: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The component row too: `missing` (or a broken torch's why) sent a JetPack 5 user to install a torch that
    would not help; whether torch is absent, broken or imports, the row says the Python is the reason."""
    from vitc import _lazy
    from vitc.cli import doctor
    from vitc.cli.main import app

    said = f"unsupported: Python {platform.python_version()} < {old_python}"
    monkeypatch.setenv("COLUMNS", "400")
    for found in [(None, None), (None, "libcusparseLt.so.0: cannot open shared object file")]:
        monkeypatch.setattr(
            _lazy, "import_optional", lambda name, found=found: found if name == "torch" else (None, None)
        )
        facts = doctor.gather()
        assert facts["torch"]["unsupported"] == said.split(": ", 1)[1]
        table = CliRunner().invoke(app, ["doctor"])
        assert table.exit_code == 0, table.output
        row = [line for line in table.output.splitlines() if line.startswith("│ torch ")]
        assert row[0].split("│")[2].strip() == said, table.output


def test_doctor_shows_the_install_hint_whole_on_jetpack_5(monkeypatch: pytest.MonkeyPatch) -> None:
    """JetPack 5 with the CUDA 12 bindings: the table names the extra to install, brackets and all."""
    from tests.engines.fakes.cuda_fakes import install_cuda
    from vitc.cli.main import app

    install_cuda(monkeypatch, cuda_python="12.6", driver=11040)
    monkeypatch.setenv("COLUMNS", "400")  # one table row per line
    result = CliRunner().invoke(app, ["doctor"])
    assert result.exit_code == 0, result.output
    assert "built for CUDA 12.6 but the driver supports CUDA 11.4" in result.output
    assert "pip install 'vitc[trt-cu11]' (CUDA 11 drivers, JetPack 5)" in result.output


# A Jetson's torch without its CUDA libraries, and onnxruntime built against numpy 2's C API with apt's numpy
# 1.17.4 ahead on PYTHONPATH: pybind11 prints numpy's RuntimeError and raises a bare ImportError.
BROKEN_PACKAGES = {
    "torch": 'raise ImportError("libcusparseLt.so.0: cannot open shared object file: No such file or directory")\n',
    "onnxruntime": (
        "import sys\n"
        'sys.stderr.write("RuntimeError: module compiled against API version 0xe "\n'
        '"but this version of numpy is 0xd\\n")\n'
        "raise ImportError()\n"
    ),
}
MAIN_WITH_TRAINING = (
    "import sys; from vitc import _lazy; _lazy.TRAINING_PYTHON = (3, 8)\n"  # the torch check, on 3.8 too
    "from vitc.cli.main import main; sys.argv[0] = 'vitc'; main()\n"
)


def _run_with_broken_packages(
    tmp_path: Path, *argv: str, packages: dict[str, str] = BROKEN_PACKAGES
) -> subprocess.CompletedProcess[str]:
    """`vitc ARGV` in a fresh interpreter where torch and onnxruntime are installed but fail to import."""
    import os

    for name, source in packages.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(source)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]), "COLUMNS": "300"}
    return subprocess.run(
        [sys.executable, "-c", MAIN_WITH_TRAINING, *argv], capture_output=True, text=True, env=env, timeout=120
    )


def test_doctor_shows_a_broken_torch_and_onnxruntime_as_rows(tmp_path: Path) -> None:
    """Installed but failing to import: a `broken: why` row each, every other row, exit 0 (was a traceback); the
    commands that need them `broken: name (why)`."""
    done = _run_with_broken_packages(tmp_path, "doctor")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    rows = {line.split("│")[1].strip(): line.split("│")[-2].strip() for line in done.stdout.splitlines() if "│" in line}
    assert rows["torch"] == "broken: libcusparseLt.so.0: cannot open shared object file: No such file or directory"
    assert rows["onnxruntime"] == (
        "broken: RuntimeError: module compiled against API version 0xe but this version of numpy is 0xd"
    )
    assert {"python", "platform", "onnx", "tensorrt", "cuda_binding", "gpus", "jetson"} <= set(rows)
    # the command table says so too, where it said "missing" as if a pip install would help
    onnxruntime = "onnxruntime (RuntimeError: module compiled against API version 0xe but this version of numpy is 0xd)"
    assert rows["bench / predict / eval x.onnx"] == f"broken: {onnxruntime}"
    torch = "torch (libcusparseLt.so.0: cannot open shared object file: No such file or directory)"
    assert rows["train / compile / eval ckpt"] == rows["bench --device cuda"] == f"broken: {torch}"
    torch_why, onnxruntime_why = torch[7:-1], onnxruntime[13:-1]  # 77 and 86 characters: 60 of 120 each
    assert rows["export"] == f"broken: torch ({torch_why[:59]}…); onnxruntime ({onnxruntime_why[:59]}…)"
    (tmp_path / "json").mkdir()
    done = _run_with_broken_packages(tmp_path / "json", "doctor", "--json")
    commands = {row["command"]: row for row in json.loads(done.stdout)["commands"]}
    assert commands["export"]["broken"] == f"{torch}; {onnxruntime}"
    assert commands["bench / predict / eval x.onnx"] == {
        "command": "bench / predict / eval x.onnx",
        "needs": "onnxruntime",
        "ok": False,
        "broken": onnxruntime,
        "unsupported": "",
    }


WINDOWS_TORCH = (  # torch's DLLs not found: the path makes the why longer than the command table's cut
    "[WinError 126] The specified module could not be found. Error loading "
    '"C:\\Users\\me\\venv\\Lib\\site-packages\\torch\\lib\\c10_cuda.dll" or one of its dependencies.'
)


def test_doctor_names_each_broken_package_a_command_needs(tmp_path: Path) -> None:
    """With torch's why longer than the table's cut, export's row said `broken: torch (…)` alone: the line was
    cut whole, onnxruntime with it. Each broken package is named, its why cut to its share (JSON: whole)."""
    packages = {**BROKEN_PACKAGES, "torch": f"raise OSError({WINDOWS_TORCH!r})\n"}
    done = _run_with_broken_packages(tmp_path, "doctor", packages=packages)
    assert done.returncode == 0, done.stderr
    rows = {line.split("│")[1].strip(): line.split("│")[-2].strip() for line in done.stdout.splitlines() if "│" in line}
    assert rows["torch"] == f"broken: {WINDOWS_TORCH}"
    onnxruntime = "RuntimeError: module compiled against API version 0xe but this version of numpy is 0xd"
    assert rows["export"] == f"broken: torch ({WINDOWS_TORCH[:59]}…); onnxruntime ({onnxruntime[:59]}…)"
    assert rows["train / compile / eval ckpt"] == f"broken: torch ({WINDOWS_TORCH[:119]}…)"  # alone: all 120
    (tmp_path / "json").mkdir()
    done = _run_with_broken_packages(tmp_path / "json", "doctor", "--json", packages=packages)
    commands = {row["command"]: row for row in json.loads(done.stdout)["commands"]}
    assert commands["export"]["broken"] == f"torch ({WINDOWS_TORCH}); onnxruntime ({onnxruntime})"


def test_a_short_why_is_kept_whole_and_a_long_one_takes_the_rest() -> None:
    from vitc.cli.doctor import _broken_needs

    facts = {"torch": {"version": None, "broken": "x" * 200}, "onnxruntime": {"version": None, "broken": "no numpy"}}
    assert _broken_needs(facts, ("torch", "onnxruntime"), 120) == f"torch ({'x' * 111}…); onnxruntime (no numpy)"
    assert _broken_needs(facts, ("torch", "onnxruntime")) == f"torch ({'x' * 200}); onnxruntime (no numpy)"


def test_the_training_check_imports_no_torch() -> None:
    """require_training runs before every training command checks its arguments: it imported torch (seconds on a
    Jetson) before a typo's one line; a broken torch is said where the command imports it."""
    pytest.importorskip("torch")
    script = "import sys; from vitc._lazy import require_training; require_training('x'); print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.stdout.strip() == "False", done.stdout + done.stderr


@pytest.mark.skipif(
    sys.version_info < (3, 10), reason="the training side needs Python 3.10: on 3.8 it is refused before torch"
)
@pytest.mark.parametrize("argv", [["train"], ["bench", "--model", "convit_micro"]], ids=lambda a: a[0])
def test_training_commands_with_a_broken_torch_say_so_in_one_line(tmp_path: Path, argv: list[str]) -> None:
    done = _run_with_broken_packages(tmp_path, *argv)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == (
        "error: this command needs 'torch': torch is installed but cannot be imported: libcusparseLt.so.0: cannot "
        "open shared object file: No such file or directory"
    )  # said where the command imports it, once its arguments are checked
