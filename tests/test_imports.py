"""The light path stays light: `import vitc` and the CLI root pull in no heavy optional package."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("torch", "onnx", "onnxruntime", "tensorrt", "transformers", "matplotlib", "sklearn")


@pytest.mark.parametrize("module", ["vitc", "vitc.cli.main", "vitc._io", "vitc.errors"])
def test_light_modules_import_no_heavy_dependency(module: str) -> None:
    code = f"import sys, {module}; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"importing {module} pulled in {out}"


def test_help_runs_without_heavy_dependencies() -> None:
    code = (
        "import sys\n"
        f"for m in {HEAVY!r}: sys.modules[m] = None  # any import of them now fails\n"
        "from typer.testing import CliRunner\n"
        "from vitc.cli.main import app\n"
        "r = CliRunner().invoke(app, ['--help'])\n"
        "assert r.exit_code == 0, r.output\n"
        "print(r.output)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "models" in out.stdout


def test_missing_optional_dependency_is_a_clear_error() -> None:
    from vitc._lazy import lazy_import
    from vitc.errors import VitcError

    with pytest.raises(VitcError, match="not installed"):
        lazy_import("vitc_no_such_package")


def test_a_broken_optional_dependency_is_said_broken_not_missing(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """Installed but failing to import (a shared library missing: OSError) is one VitcError that says so and why,
    neither "not installed" nor the OSError's traceback."""
    from vitc._lazy import lazy_import
    from vitc.errors import VitcError

    (tmp_path / "vitc_broken_package").mkdir()
    (tmp_path / "vitc_broken_package" / "__init__.py").write_text('raise OSError("libfoo.so.1: cannot open")\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    said = r"needs 'vitc_broken_package': vitc_broken_package is installed but cannot be imported: libfoo\.so\.1"
    with pytest.raises(VitcError, match=said):
        lazy_import("vitc_broken_package.sub")


def test_a_missing_dependency_names_the_extra_that_brings_it(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """`vitc train` without scikit-learn must say `pip install 'vitc[torch]'`, not `pip install 'vitc'`."""
    from typer.testing import CliRunner

    from vitc.cli.main import app

    for name in [m for m in sys.modules if m == "sklearn" or m.startswith("sklearn.")] or ["sklearn"]:
        monkeypatch.setitem(sys.modules, name, None)  # as if scikit-learn were not installed
    tiny = ["--set", "optim.epochs=1", "--set", "data.fraction=0.05", "--set", "model.args.depth=1"]
    tiny += ["--set", "model.args.local_up_to_layer=0"]
    result = CliRunner().invoke(app, ["train", "-q", "--set", f"run.out_dir={tmp_path}", *tiny])
    assert result.exit_code == 2 and "pip install 'vitc[torch]'" in result.output, result.output


def _imports_between_parts() -> dict[str, set[str]]:
    """{part: parts it imports} over every import statement (function-level ones too), where a part is a
    top-level package or module of vitc (`export`, `quant`, `_zoo`, `models`, …)."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "vitc"
    edges: dict[str, set[str]] = {}
    for path in root.rglob("*.py"):
        part = path.relative_to(root).parts[0].removesuffix(".py")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module] if node.module != "vitc" else [f"vitc.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                parts = name.split(".")
                if parts[0] == "vitc" and len(parts) > 1 and parts[1] != part and parts[1] != "__init__":
                    edges.setdefault(part, set()).add(parts[1])
    return edges


def test_no_two_parts_import_each_other() -> None:
    """Imports point down the stages (docs/architecture.md): no cycle such as export ↔ quant or _zoo ↔ models."""
    edges = _imports_between_parts()
    cycles = sorted(f"{a} ↔ {b}" for a in edges for b in edges[a] if a < b and a in edges.get(b, set()))
    assert cycles == []
    assert "export" not in edges["quant"] and "_zoo" not in edges["models"]


@pytest.mark.parametrize("module", ["vitc", "vitc.export", "vitc.checkpoint", "vitc.api"])
def test_importing_the_library_draws_nothing_from_pythons_random(module: str) -> None:
    """`import vitc.export` advanced `random`'s state: it imported Rich (vitc._text), whose style module draws
    from it at import, so a caller's seeded sequence came out otherwise after the import."""
    code = (
        "import random, sys, importlib\n"
        "import torch, numpy\n"  # what a caller has loaded already: their own draws are not this test's
        "random.seed(0); before = random.getstate()\n"
        f"importlib.import_module({module!r})\n"
        "print(random.getstate() == before)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "True", f"importing {module} changed random's state"
