"""The Jetson install: the wheel `pip wheel .` builds here installs without torch and serves `vitc info` and
`vitc bench --engine` (the README's install line for devices where vitc is not on PyPI), on this Python
and on those of JetPack 5 (3.8) and JetPack 6 (3.10): the venvs `make runtime-venvs` makes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import sys
site = sys.argv[1]
sys.path.insert(0, site)  # the installed wheel, ahead of the checkout
sys.modules["torch"] = None  # any `import torch` now raises ImportError, as on a Jetson without it
import json
import vitc
from typer.testing import CliRunner
from vitc.cli.main import app
assert vitc.__file__.startswith(site), vitc.__file__
runner = CliRunner()
info = runner.invoke(app, ["info", sys.argv[2], "--json"])
bench = runner.invoke(app, ["bench", "--engine", sys.argv[2], "--batch", "1", "-n", "2", "--warmup", "1"])
torch = sorted(m for m in sys.modules if m.split(".")[0] == "torch" and sys.modules[m] is not None)
print(json.dumps({"info": [info.exit_code, info.output], "bench": [bench.exit_code, bench.output], "torch": torch}))
"""

# On a JetPack Python: build, describe, bench, evaluate and classify with a plan, with the wheel's vitc on the
# strict fakes of that JetPack's TensorRT and cuda-python (the checkout is on the path only for the fakes).
JETPACK = {"3.8": ("8.5", "11.8", 11040), "3.10": ("10.3", "12.6", 12060)}  # JetPack 5.1, JetPack 6.1/6.2
JETPACK_SCRIPT = r"""
import json, sys
site, root, export, plan = sys.argv[1:5]
trt_version, cuda_python, driver = json.loads(sys.argv[5])
sys.path[:0] = [site, root]
import pytest
import vitc
from typer.testing import CliRunner
from tests.engines.fakes.cuda_fakes import install_cuda
from tests.engines.fakes.tensorrt_fake import install_tensorrt
from vitc.cli.main import app
assert vitc.__file__.startswith(site), vitc.__file__
patch = pytest.MonkeyPatch()
install_tensorrt(patch, trt_version, install_cuda(patch, cuda_python=cuda_python, driver=driver))
run = CliRunner().invoke
out = {
    "build": run(app, ["build", export + "/model.fp32.onnx", "--out", plan]),
    "info": run(app, ["info", plan, "--json"]),
    "bench": run(app, ["bench", "-e", plan, "-b", "1,4", "-n", "2", "--warmup", "1", "--data", export, "--cuda-graph",
                       "--json", plan + ".bench.json"]),
    "eval": run(app, ["eval", plan, "--out", plan + ".confusion.png"]),  # on the held-out set its export kept
    "train": run(app, ["train"]),
}
from PIL import Image
Image.new("RGB", (12, 9), (200, 30, 60)).save(plan + ".photo.jpg")
out["predict"] = run(app, ["predict", plan, plan + ".photo.jpg", "-k", "2"])
print(json.dumps({k: [r.exit_code, r.output] for k, r in out.items()}))
"""


def _pip(*args: str, python: str = sys.executable) -> str:
    done = subprocess.run([python, "-m", "pip", *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`pip wheel --no-deps .` of a copy of the sources (building writes build/ and vitc.egg-info)."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "src"
    shutil.copytree(ROOT / "vitc", source / "vitc", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    _pip("wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", str(tmp / "dist"), str(source))
    (built,) = (tmp / "dist").glob("vitc-*.whl")
    return built


@pytest.mark.slow
def test_the_wheel_installs_and_runs_without_torch(wheel: Path, tiny_onnx: Path, tmp_path: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        metadata = archive.read(next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))).decode()
        assert "vitc/models/zoo_stats.json" in archive.namelist()  # package data travels with it
        assert "vitc/py.typed" in archive.namelist()  # PEP 561: type checkers read an installed vitc's hints
    core = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:") and "extra ==" not in line]
    assert core and not any("torch" in line for line in core), core
    assert "Requires-Python: >=3.8" in metadata
    torch_extra = [line for line in metadata.splitlines() if line.startswith("Requires-Dist: torch")]
    assert torch_extra and all("python_version >= " in line for line in torch_extra), torch_extra

    site = tmp_path / "site"
    _pip("install", "--no-deps", "--no-index", "-q", "--target", str(site), str(wheel))
    assert (site / "bin" / "vitc").is_file()  # the console script
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(site), str(tiny_onnx)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["info"][0] == 0 and json.loads(result["info"][1])["kind"] == "onnx", result["info"][1]
    assert result["bench"][0] == 0, result["bench"][1]
    assert result["torch"] == []


def _venvs() -> list[object]:
    found = [(version, ROOT / f".venv-py{version.replace('.', '')}" / "bin" / "python") for version in JETPACK]
    return [
        pytest.param(
            version,
            python,
            id=f"python{version}",
            marks=[] if python.is_file() else pytest.mark.skip(reason=f"{python} is missing: make runtime-venvs"),
        )
        for version, python in found
    ]


@pytest.mark.slow
@pytest.mark.parametrize(("version", "python"), _venvs())
def test_the_wheel_on_the_pythons_of_jetpack(
    wheel: Path, version: str, python: Path, export_dir: Path, tmp_path: Path
) -> None:
    """Installs with the dependencies that venv has (no index: numpy 1.21.6, typer, rich, no torch), then
    builds, describes, benches, evaluates and classifies with a plan on that JetPack's TensorRT and cuda-python,
    CUDA graph included."""
    python_str = str(python)
    pip_said = _pip("install", "--dry-run", "--no-index", str(wheel), python=python_str)
    assert "Would install vitc-0.1.0" in pip_said, pip_said
    if version == "3.8":  # the training extras hold nothing for Python 3.8: no torch to fetch
        said = _pip("install", "--dry-run", "--no-index", f"vitc[torch] @ {wheel.as_uri()}", python=python_str)
        assert "torch" not in said.replace("vitc[torch]", ""), said
    site = tmp_path / "site"
    _pip("install", "--no-deps", "--no-index", "-q", "--target", str(site), str(wheel), python=python_str)

    env = {**os.environ, "PYTHONPATH": str(site), "COLUMNS": "200"}
    for argv in (["--help"], ["doctor", "--json"]):  # the console script, as a user runs it
        command = [str(site / "bin" / "vitc"), *argv]
        done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert json.loads(done.stdout)["facts"]["python"].startswith(version + ".")

    done = subprocess.run(
        [python_str, "-c", JETPACK_SCRIPT, str(site), str(ROOT), str(export_dir), str(tmp_path / "model.plan"),
         json.dumps(JETPACK[version])],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    for step in ("build", "info", "bench", "eval", "predict"):
        assert result[step][0] == 0, (step, result[step][1])
    assert json.loads((tmp_path / "model.plan.confusion.json").read_text())["images"] == 12
    assert result["predict"][1].startswith(f"{tmp_path / 'model.plan.photo.jpg'}: "), result["predict"][1]
    assert json.loads(result["info"][1])["sidecar"]["tensorrt"].startswith(JETPACK[version][0])
    rows = json.loads((tmp_path / "model.plan.bench.json").read_text())["rows"]
    assert [row["batch"] for row in rows] == [1, 4] and str(rows).count("'agreement': 100.0") == 2, rows
    if version == "3.8":
        assert result["train"][0] == 2 and "needs Python >= 3.10" in result["train"][1], result["train"][1]


def test_every_install_keeps_numpy_1_on_jetpack_6() -> None:
    """numpy 2 in the venv would shadow JetPack 6's numpy 1.21.5 and break the system modules built against
    numpy 1 (its OpenCV). The pin was in [onnx] only: `pip install 'vitc.whl[trt-cu12,torch]'` put numpy
    2.2.6 there. It is a core dependency now, so it holds with every extra; JetPack 5 (3.8) and desktops
    are left to pip."""
    import tomllib
    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]

    def numpy_allowed(python: str, machine: str, extra: str) -> SpecifierSet:
        env = {"python_version": python, "platform_machine": machine, "extra": extra}
        lines = [*project["dependencies"], *extras.get(extra, [])]
        wanted = [Requirement(line) for line in lines if Requirement(line).name == "numpy"]
        return SpecifierSet(",".join(str(r.specifier) for r in wanted if r.marker is None or r.marker.evaluate(env)))

    for extra in ["", *extras]:
        assert "2.2.6" not in numpy_allowed("3.10", "aarch64", extra), extra
        assert "1.26.4" in numpy_allowed("3.10", "aarch64", extra), extra
    for python, machine in (("3.10", "x86_64"), ("3.12", "aarch64")):
        assert "2.2.6" in numpy_allowed(python, machine, "torch")


def test_the_build_stays_on_setuptools_that_reads_the_license_table() -> None:
    """`license` is a TOML table because setuptools 75.3, the last for Python 3.8 (the wheel is built on JetPack 5
    too), reads no SPDX string; 77+ warn that the table's support ends after 2027-02-18. The build requirement is
    capped, admitting 75.3 and the newest release built with here (84.2.1)."""
    import tomllib
    from packaging.requirements import Requirement

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert isinstance(config["project"]["license"], dict)
    setuptools = next(r for r in map(Requirement, config["build-system"]["requires"]) if r.name == "setuptools")
    assert {"75.3.2", "84.2.1"} <= set(setuptools.specifier.filter(["75.3.2", "84.2.1"]))
    assert any(spec.operator == "<" for spec in setuptools.specifier), setuptools


def test_the_training_extras_install_nothing_on_python_3_8() -> None:
    """Training needs Python 3.10: on JetPack 5's 3.8 `[tensorboard]` installed tensorboard for nothing."""
    import tomllib
    from packaging.requirements import Requirement

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for extra in ("torch", "tensorboard"):
        env = {"python_version": "3.8", "platform_machine": "aarch64", "extra": extra}
        wanted = [r for r in map(Requirement, extras[extra]) if r.marker is None or r.marker.evaluate(env)]
        assert wanted == [], (extra, wanted)


def test_onnxscript_comes_with_the_extra_export_needs_not_with_the_runtimes_onnx() -> None:
    """`[onnx]` serves the torch-free runtime (vitc check, info x.onnx, bench x.onnx) and pulled onnxscript and
    onnx-ir in too, which only `vitc export` imports, and export needs torch: onnxscript is in `[torch]`."""
    import tomllib
    from packaging.requirements import Requirement

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert {Requirement(line).name for line in extras["onnx"]} == {"onnx", "onnxruntime"}
    assert "onnxscript" in {Requirement(line).name for line in extras["torch"]}
    users = sorted(
        path.relative_to(ROOT).as_posix() for path in (ROOT / "vitc").rglob("*.py") if "onnxscript" in path.read_text()
    )
    assert "vitc/export/onnx_export.py" in users, users
    assert all(user.startswith("vitc/export/") or user == "vitc/_lazy.py" for user in users), users  # _lazy: its hint


def test_each_install_hint_names_the_extra_that_brings_its_package() -> None:
    """A missing optional package is named with its install hint (vitc._lazy.OPTIONAL): onnxscript's said
    `pip install onnxscript` and pycuda's `pip install pycuda`, where vitc's extras bring them ([torch],
    [trt-pycuda]) at the versions vitc needs. Each hint names only extras that list its package, and one of
    them whenever an extra (other than dev's) does; a core dependency's is `pip install` of it."""
    import re

    import tomllib
    from packaging.requirements import Requirement

    from vitc._lazy import OPTIONAL

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    listed = {extra: {Requirement(line).name for line in lines} for extra, lines in extras.items() if extra != "dev"}
    core = {Requirement(line).name for line in project["dependencies"]}
    distribution = {"sklearn": "scikit-learn", "PIL": "pillow", "cuda": "cuda-python"}  # imported under another name
    for module, hint in OPTIONAL.items():
        name = distribution.get(module, module)
        named = re.findall(r"'vitc\[([\w-]+)\]'", hint)
        bringing = sorted(extra for extra, names in listed.items() if name in names)
        assert (named and set(named) <= set(bringing)) if bringing else not named, (module, hint, bringing)
        if name in core:
            assert hint == f"pip install {name}", (module, hint)
