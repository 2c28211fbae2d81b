"""`vitc build X.onnx` and the Python call with the same arguments (`build_engine(BuildOptions(onnx=X))`) decide
the same defaults (precision from the manifest or file name, the plan path engines/<run>.<precision>.plan,
the plan-suffix check) and so write the same plan and sidecar at the same path."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.engines.conftest import make_tiny_onnx, manifest_record
from vitc.artifacts.sidecar import sidecar_path
from vitc.build.options import BuildOptions
from vitc.build.tensorrt import build_engine
from vitc.cli.main import app
from vitc.errors import VitcError

cli = CliRunner()
VOLATILE = ("built_at", "build_seconds")  # what differs between two builds of the same plan


def fp16_export(export_dir: Path) -> Path:
    """model.fp16.onnx with its manifest.fp16.json in the fixture's export folder (export/tiny)."""
    onnx = make_tiny_onnx(export_dir / "model.fp16.onnx", precision="fp16")
    (export_dir / "manifest.fp16.json").write_text(json.dumps(manifest_record(precision="fp16")))
    return onnx


def bare_int8(tmp_path: Path) -> Path:
    """A bare model.int8.onnx (no manifest beside it) in a folder named `bare`."""
    (tmp_path / "bare").mkdir()
    return make_tiny_onnx(tmp_path / "bare" / "model.int8.onnx", precision="int8")


def bare_fp16(tmp_path: Path) -> Path:
    """A bare net.onnx computing in float16 (no manifest, no precision in its name)."""
    (tmp_path / "bare").mkdir()
    return make_tiny_onnx(tmp_path / "bare" / "net.onnx", precision="fp16")


def written(folder: Path) -> dict[str, Any]:
    """The plans and sidecars under `folder`: plan bytes, sidecar records without the build's time."""
    files: dict[str, Any] = {}
    for path in sorted(folder.rglob("*")):
        if path.suffix == ".plan":
            files[path.relative_to(folder).as_posix()] = path.read_bytes()
            record = json.loads(sidecar_path(path).read_text())
            files[sidecar_path(path).relative_to(folder).as_posix()] = {
                key: value for key, value in record.items() if key not in VOLATILE
            }
    return files


CASES: dict[str, tuple[Callable[[Path, Path], Path], list[str], dict[str, Any], str, str]] = {
    # case: (the ONNX file, CLI options, the same as BuildOptions fields, the plan path, its precision)
    "export folder: precision from the manifest": (
        lambda export_dir, tmp_path: fp16_export(export_dir),
        [],
        {},
        "engines/tiny.fp16.plan",
        "fp16",
    ),
    "bare model.int8.onnx: precision from the name": (
        lambda export_dir, tmp_path: bare_int8(tmp_path),
        [],
        {},
        "engines/bare.int8.plan",
        "int8",
    ),
    "an explicit precision names a bare file's": (
        lambda export_dir, tmp_path: bare_fp16(tmp_path),
        ["--precision", "fp16"],
        {"precision": "fp16"},
        "engines/net.fp16.plan",
        "fp16",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_cli_and_the_python_call_build_the_same_plan_at_the_same_path(
    case, fake, export_dir, tmp_path, monkeypatch
):
    make_onnx, args, fields, plan, precision = CASES[case]
    fake("10.3")
    onnx = make_onnx(export_dir, tmp_path)
    by_cli, by_python = tmp_path / "cli", tmp_path / "python"
    by_cli.mkdir()
    by_python.mkdir()
    monkeypatch.chdir(by_cli)
    result = cli.invoke(app, ["build", str(onnx), *args])
    assert result.exit_code == 0, result.output
    monkeypatch.chdir(by_python)
    built = build_engine(BuildOptions(onnx=onnx, **fields))
    assert built.plan == Path(plan) and built.sidecar.precision == precision
    from_cli = written(by_cli)
    assert list(from_cli) == [plan, sidecar_path(Path(plan)).as_posix()]
    assert from_cli == written(by_python)  # the same plan bytes and the same sidecar (manifest, drift, precision)
    if "manifest" in case:  # the Python call read the manifest as the CLI does: its held-out set was checked
        assert built.sidecar.model == "tiny" and built.sidecar.engine_drift is not None


@pytest.mark.parametrize("out", ["model.onnx", "best.safetensors", "m"])
def test_a_plan_path_of_another_kind_is_the_same_one_line_from_python(out, fake, export_dir, tmp_path, monkeypatch):
    """`--out` / `output=` naming an ONNX file or a checkpoint would put a plan over it: refused alike."""
    fake("10.3")
    onnx = export_dir / "model.fp32.onnx"
    monkeypatch.chdir(tmp_path)
    result = cli.invoke(app, ["build", str(onnx), "--out", out])
    assert result.exit_code == 2
    with pytest.raises(VitcError) as err:
        build_engine(BuildOptions(onnx=onnx, output=Path(out)))
    message = str(err.value)
    assert result.output == f"error: {message}\n" and "\n" not in message
    assert message == f"--out {out}: a TensorRT plan is written to a file whose name ends in .plan or .engine or .trt"
    assert not (tmp_path / out).exists() and not (tmp_path / "engines").exists()


def test_resolved_options_decide_every_default_once(export_dir, tmp_path, monkeypatch):
    """The order `vitc build` documents: --precision, else the manifest's, else the file name's, else fp32; the
    plan beside the others in engines/; a path given as a string is a Path. Resolving twice changes nothing."""
    from vitc.build.options import resolve_options

    monkeypatch.chdir(tmp_path)
    onnx = fp16_export(export_dir)
    opts = resolve_options(BuildOptions(onnx=str(onnx)))  # type: ignore[arg-type]  # as a Python caller may pass it
    assert (opts.onnx, opts.output, opts.precision) == (onnx, Path("engines/tiny.fp16.plan"), "fp16")
    assert opts.manifest is not None and opts.manifest.path.name == "manifest.fp16.json"
    assert resolve_options(opts) == opts
    plain = make_tiny_onnx(tmp_path / "plain.onnx")
    assert resolve_options(BuildOptions(onnx=plain)).precision == "fp32"
    with pytest.raises(VitcError, match=r"^--precision: unknown precision 'fp64' \(choose one of: fp32, fp16, int8\)$"):
        resolve_options(BuildOptions(onnx=plain, precision="fp64"))  # type: ignore[arg-type]
    with pytest.raises(VitcError, match=r"missing\.onnx: no such file$"):
        resolve_options(BuildOptions(onnx=tmp_path / "missing.onnx"))


@pytest.mark.parametrize(
    "given, plan",
    [
        ("export/tiny/model.int8.onnx", "engines/tiny.int8.plan"),
        ("model.int8.onnx", "engines/tiny.int8.plan"),  # given from inside the export folder
        ("model.onnx", "engines/tiny.int8.plan"),
        ("convit.fp16.onnx", "engines/convit.int8.plan"),
        ("convit.onnx", "engines/convit.int8.plan"),
    ],
)
def test_the_default_plan_is_named_by_the_run_never_model_int8_int8(given, plan, tmp_path, monkeypatch):
    """A file given from inside its export folder named its plan engines/model.int8.int8.plan (the file's stem
    with its precision kept): the run is the folder's name for vitc's own file names, else the file's name
    without its precision."""
    from vitc.build.options import default_plan_path

    folder = tmp_path / "export" / "tiny"
    folder.mkdir(parents=True)
    monkeypatch.chdir(tmp_path if given.startswith("export/") else folder)
    assert default_plan_path(Path(given), "int8") == Path(plan)


def refused(args: list[str], onnx: Path, **fields: Any) -> str:
    """`vitc build ONNX ARGS` and `build_engine(BuildOptions(onnx, **fields))` both refuse in the same line, and
    nothing is written."""
    result = cli.invoke(app, ["build", str(onnx), *args])
    assert result.exit_code == 2, result.output
    with pytest.raises(VitcError) as err:
        build_engine(BuildOptions(onnx=onnx, **fields))
    assert result.output == f"error: {err.value}\n" and "\n" not in str(err.value)
    assert not Path("engines").exists() or list(Path("engines").iterdir()) == []  # no plan, sidecar, timing cache
    return str(err.value)


def test_an_export_builds_at_its_own_precision_only(fake, export_dir, tmp_path, monkeypatch):
    """`vitc build model.fp16.onnx --precision int8` built the fp16 graph (no Q/DQ nodes) and its sidecar said
    int8, silently; --precision fp16 on the fp32 export built FP32 kernels called fp16. Precision lives in the
    ONNX file the export verified: another is refused, naming the file or the export that has it."""
    fake("10.3")
    monkeypatch.chdir(tmp_path)
    onnx = fp16_export(export_dir)
    line = refused(["--precision", "int8"], onnx, precision="int8")
    assert line == (
        f"{onnx} is the fp16 export (manifest.fp16.json says so), not int8: vitc builds the precision an export "
        "holds, which `vitc export` verified; write one with `vitc export x --precision int8 --trt 10`"
    )
    fp32 = export_dir / "model.fp32.onnx"
    line = refused(["-p", "fp16"], fp32, precision="fp16")
    assert line.startswith(f"{fp32} is the fp32 export (manifest.fp32.json says so), not fp16: ")
    assert line.endswith(f"; build {onnx}")  # the export beside it holds fp16
    result = cli.invoke(app, ["build", str(onnx), "--precision", "fp16"])  # its own precision, said again: built
    assert result.exit_code == 0 and "fp16" in result.output, result.output


@pytest.mark.parametrize(("precision", "lacks"), [("int8", "no Q/DQ nodes"), ("fp16", "no float16 tensors")])
def test_a_bare_graph_without_that_precision_is_refused_after_parsing(precision, lacks, fake, tmp_path, monkeypatch):
    """No manifest: the parsed network must hold the precision asked for (by --precision or the file name), or
    TensorRT builds an FP32 engine under its name."""
    fake("8.5")
    monkeypatch.chdir(tmp_path)
    onnx = make_tiny_onnx(tmp_path / f"net.{precision}.onnx")  # float32 throughout
    assert refused([], onnx) == (
        f"{onnx} has {lacks}, so it is no {precision} graph: TensorRT builds the precision the ONNX file holds; "
        f"write one with `vitc export CHECKPOINT --precision {precision}`"
    )


@pytest.mark.parametrize(("name", "args", "holds", "what"), [
    ("model.onnx", [], "int8", "Q/DQ nodes"),  # no manifest, no precision in the name: fp32 by default
    ("net.onnx", ["-p", "fp16"], "int8", "Q/DQ nodes"),
    ("half.onnx", ["-p", "fp32"], "fp16", "float16 tensors"),
])  # fmt: skip
def test_a_bare_graph_of_a_reduced_precision_is_not_built_under_another(
    name, args, holds, what, fake, tmp_path, monkeypatch
):
    """A model.onnx of Q/DQ nodes without a manifest was taken as fp32 and its plan called engines/model.fp32.plan:
    the plan is called what the graph holds, and --precision of that precision builds it."""
    fake("10.3")
    monkeypatch.chdir(tmp_path)
    onnx = make_tiny_onnx(tmp_path / name, precision=holds)
    want = args[1] if args else "fp32"
    precision = {"precision": want} if args else {}
    assert refused(args, onnx, **precision) == (
        f"{onnx} holds an {holds} graph ({what}), not {want}: TensorRT builds the precision the ONNX file holds; "
        f"build it with --precision {holds}"
    )
    result = cli.invoke(app, ["build", str(onnx), "--precision", holds])
    assert result.exit_code == 0, result.output
    assert [plan.name.endswith(f".{holds}.plan") for plan in Path("engines").glob("*.plan")] == [True]
