"""The light path stays light: `import vitc` and the CLI root pull in no heavy optional package."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

from tests.processes import python_says

HEAVY = ("torch", "onnx", "onnxruntime", "tensorrt", "transformers", "matplotlib", "sklearn")


# vitc.train.launcher: `vitc train --nproc N` starts its ranks without importing torch itself (a second a launch)
@pytest.mark.parametrize("module", ["vitc", "vitc.cli.main", "vitc._io", "vitc.errors", "vitc.train.launcher"])
def test_light_modules_import_no_heavy_dependency(module: str) -> None:
    code = f"import sys, {module}; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = python_says(code)
    assert out == "", f"importing {module} pulled in {out}"


@pytest.mark.parametrize("family", ["deit_micro", "convit_micro", "cvt_micro", "spvit_micro"])
def test_a_model_builds_and_runs_without_torchs_compiler(family: str) -> None:
    """torch._dynamo, over a second of a process's start, is imported by what compiles or trains (torch's
    optimisers import it), not by building and running a model: predict, eval and bench --model start without it.
    A module-level torch.compiler.disable imported it with vitc.models."""
    code = (
        "import sys, torch, vitc\n"
        f"model = vitc.create_model({family!r}).eval()\n"
        "with torch.no_grad(): model(torch.zeros(1, *model.pretrained_cfg['input_size']))\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    assert python_says(code) == "False"


def test_the_training_side_imports_torchs_compiler_before_any_process_group() -> None:
    """Imported after a gloo process group (by the first optimiser), torch._dynamo made a process abort at its exit
    now and then (SIGABRT, 1 launch of a library user's own group in 3 to 6); vitc.train imports it first."""
    code = "import sys, vitc.train.loop; print('torch._dynamo' in sys.modules)"
    assert python_says(code) == "True"
    measuring = "import sys, vitc.train.evaluate; print('torch._dynamo' in sys.modules)"  # vitc eval CHECKPOINT's
    assert python_says(measuring) == "False"


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
    assert "models" in python_says(code)


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


ROOT = Path(__file__).resolve().parents[1]
TOP = {"cli", "__init__"}  # the commands, and the package's lazy names: they may import any part
PACKAGE_NAMES = {"__version__"}  # `from vitc import __version__`: the package itself, imported before any part


def _parts() -> set[str]:
    """vitc's parts: its top-level modules and packages (`export`, `_zoo`, `checkpoint`, `train`: no __init__)."""
    found = (ROOT / "vitc").iterdir()
    return {p.name.removesuffix(".py") for p in found if p.suffix == ".py" or (p.is_dir() and any(p.glob("*.py")))}


def _stage_table() -> tuple[list[set[str]], dict[str, set[str]], dict[str, set[str]]]:
    """docs/architecture.md's picture and table: (the picture's rows, bottom first, the bottom row being the
    shared pieces; {part: the parts its table row names}; {vitc/part/module.py: the parts it alone may add})."""
    text = (ROOT / "docs/architecture.md").read_text()
    picture = re.search(r"```\n( cli .*?)```", text, re.S)
    assert picture, "docs/architecture.md: the picture of the stages (a code block starting with ` cli `) is missing"
    known = _parts()
    rows: list[set[str]] = []
    for line in picture.group(1).splitlines():
        if line.strip().startswith(("─", "═")):
            continue
        cells = re.split(r"\s*·\s*|\s{2,}", re.sub(r"\([^()]*\)", "", line).strip())
        rows.append({cell.split()[0].removesuffix(".py") for cell in cells if cell} & known)
    allowed: dict[str, set[str]] = {}
    alone: dict[str, set[str]] = {}
    for part, imports in re.findall(r"^\| `vitc/(\w+)(?:\.py|/)` \| ([^|]*) \|", text, re.M):
        while re.search(r"\([^()]*\)", imports):
            imports = re.sub(r"\([^()]*\)", "", imports)
        allowed[part] = set()
        for segment in imports.split(";"):
            module = re.match(r"\s*`(\w+)` alone:", segment)
            names = set(re.findall(r"\w+", segment)) & known
            if module:
                alone[f"vitc/{part}/{module.group(1)}.py"] = names
            else:
                allowed[part] |= names
    return rows[::-1], allowed, alone


def _imports() -> list[tuple[str, str, str]]:
    """(file:line, part, the part it imports) for every import of vitc by vitc: at module level, inside
    functions, under TYPE_CHECKING, and `lazy_import("vitc.…")` / `import_module("vitc.…")` calls."""
    found = []
    for path in sorted((ROOT / "vitc").rglob("*.py")):
        rel = path.relative_to(ROOT)
        part = rel.parts[1].removesuffix(".py")
        package = list(rel.parent.parts)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = package[: len(package) - node.level + 1] if node.level else []
                module = ".".join([*base, *([node.module] if node.module else [])])
                names = [f"{module}.{a.name}" for a in node.names] if module == "vitc" else [module]
            elif (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", getattr(node.func, "attr", None)) in ("lazy_import", "import_module")
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                names = [node.args[0].value]
            else:
                continue
            for name in names:
                parts = name.split(".")
                if parts[0] == "vitc" and len(parts) > 1 and parts[1] != part:
                    found.append((f"{rel}:{node.lineno}", part, parts[1]))
    return found


def test_the_stage_table_names_every_part_once_and_points_down() -> None:
    """The picture places every part once, the table states each part's imports, and those point down the
    picture: a new part, or an edge added to the table sideways, is caught here, not by a reviewer."""
    rows, allowed, alone = _stage_table()
    placed = [part for row in rows for part in row]
    assert sorted(set(placed)) == sorted(placed), "a part is in two rows of docs/architecture.md's picture"
    assert sorted(_parts() - set(placed) - TOP) == [], "parts missing from docs/architecture.md's picture"
    level = {part: i for i, row in enumerate(rows) for part in row}
    bottom = rows[0]
    assert sorted(set(placed) - bottom - TOP - set(allowed)) == [], "parts of the picture without a row in the table"
    sideways = [
        f"{part} → {name}"
        for part, names in [*allowed.items(), *((f.split("/")[1], n) for f, n in alone.items())]
        for name in names - bottom
        if level[name] >= level[part]
    ]
    said = "docs/architecture.md's table names imports that do not point down its picture: "
    assert not sideways, said + ", ".join(sideways)
    assert [f for f in alone if not (ROOT / f).is_file()] == [], "the table names a module that is not there"


def test_every_import_points_down_the_stages() -> None:
    """An import the table of docs/architecture.md does not allow fails here, at module level or inside a
    function alike (the torch-free bottom row importing `downloads`, `bench` importing `train`, `build` importing
    `export` were found by a reviewer, not by this test's earlier pairwise check)."""
    rows, allowed, alone = _stage_table()
    bottom = rows[0]
    wrong = []
    for where, part, name in _imports():
        if part in TOP or name in PACKAGE_NAMES:
            continue
        if part in bottom:
            ok = name in bottom
        else:
            ok = name in bottom or name in allowed[part] or name in alone.get(where.rsplit(":", 1)[0], set())
        if not ok:
            wrong.append(f"{where}: {part} imports {name}")
    assert not wrong, (
        "imports not in docs/architecture.md's table (move the shared piece down, or add the edge):\n"
        + "\n".join(wrong)
    )


def test_no_cycle_between_parts() -> None:
    """Imports point down the stages: no cycle such as export → quant → export, or artifacts → downloads →
    checkpoint → artifacts, through any number of parts."""
    edges: dict[str, dict[str, str]] = {}
    for where, part, name in _imports():
        if name not in PACKAGE_NAMES:
            edges.setdefault(part, {}).setdefault(name, where)
    cycles = []

    def visit(part: str, path: list[str]) -> None:
        for name, where in edges.get(part, {}).items():
            if name == path[0]:
                cycles.append(" → ".join([*path, name]) + f" (last: {where})")
            elif name not in path and name > path[0]:  # each cycle once, from its smallest part
                visit(name, [*path, name])

    for start in sorted(edges):
        visit(start, [start])
    assert not cycles, "cycles between parts:\n" + "\n".join(cycles)


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
    assert python_says(code) == "True", f"importing {module} changed random's state"
