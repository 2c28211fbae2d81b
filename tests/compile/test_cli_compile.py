"""`vitc compile` through a local Typer app (the lead registers compile_ in vitc.cli.main)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from typer.testing import CliRunner

from vitc.checkpoint import write_checkpoint
from vitc.cli._errors import handle_errors
from vitc.cli.compile import compile_

from .conftest import build

app = typer.Typer()
app.command("compile")(handle_errors(compile_))
app.command("noop")(lambda: None)  # two commands, so `compile` stays a subcommand as in vitc.cli.main
runner = CliRunner()


def test_model_name_table_and_json(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    result = runner.invoke(app, ["compile", "convit_micro", "--target", "onnx", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "static_gpsa" in result.output and "compile+check" in result.output
    record = json.loads(out.read_text())
    assert record["target"] == "onnx" and record["source"] == "convit_micro"
    assert record["rows"][0] == {"name": "static_gpsa", "fired": 4, "max_abs_diff": record["rows"][0]["max_abs_diff"]}
    assert record["max_abs_diff"] <= 1e-4


def test_json_to_stdout_is_the_report_alone(tmp_path: Path, monkeypatch) -> None:
    """`vitc compile convit_micro --json - | jq`: the report alone on stdout, the table on stderr (`-` was refused:
    "a vitc compile report is written to a file whose name ends in .json")."""
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["compile", "convit_micro", "--target", "onnx", "--json", "-"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["source"] == "convit_micro" and record["max_abs_diff"] <= 1e-4
    assert "static_gpsa" in result.stderr and "compile+check" in result.stderr and "wrote" not in result.output
    assert not (tmp_path / "-").exists()


def test_checkpoint(tmp_path: Path) -> None:
    path = write_checkpoint(tmp_path / "model.safetensors", build("cvt_micro"))
    result = runner.invoke(app, ["compile", str(path)])
    assert result.exit_code == 0, result.output
    assert "fold_cvt_projections" in result.output


def test_a_checkpoint_pooling_the_patch_tokens(tmp_path: Path) -> None:
    path = write_checkpoint(tmp_path / "model.safetensors", build("spvit_micro", global_pool="avg"))
    result = runner.invoke(app, ["compile", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "static_spatial_prior" in result.output and (tmp_path / "out" / "model.pt2").is_file()


def test_errors_exit_2(tmp_path: Path) -> None:
    for args in (["convit_micro", "--target", "tpu"], ["convit_mikro"], [str(tmp_path / "missing.safetensors")]):
        result = runner.invoke(app, ["compile", *args])
        assert result.exit_code == 2, (args, result.output)


def test_out_writes_an_exported_program_with_a_dynamic_batch(tmp_path: Path) -> None:
    import torch

    from vitc.checkpoint import read_checkpoint
    from vitc.cli.info import describe
    from vitc.compile import compile_model
    from vitc.compile.program import load_program

    torch.manual_seed(0)
    ckpt = write_checkpoint(tmp_path / "model.safetensors", build("convit_small"))
    out = tmp_path / "deploy"
    result = runner.invoke(app, ["compile", str(ckpt), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["compile_report.json", "compile_report.md", "model.pt2"]
    program, meta = load_program(out / "model.pt2")
    assert meta["model"] == "convit_small" and meta["compile"]["rows"][0]["name"] == "static_gpsa"
    record = json.loads((out / "compile_report.json").read_text())
    assert record["export"]["checked_batches"] == [1, 3] and record["export"]["input"] == ["batch", 3, 64, 64]
    assert "| static_gpsa | 1 |" in (out / "compile_report.md").read_text()
    described = describe(out / "model.pt2")  # `vitc info` reads the record without torch
    assert described["kind"] == "torch.export program" and described["export"]["checked_batches"] == [1, 3]
    original, _ = read_checkpoint(ckpt)
    compiled, _ = compile_model(original)
    module = program.module()
    with torch.no_grad():
        for batch in (1, 3):
            x = torch.randn(batch, 3, 64, 64)
            got = module(x)
            assert got.shape == (batch, original.num_classes)
            assert torch.allclose(got, compiled(x), atol=1e-5) and torch.allclose(got, original.eval()(x), atol=1e-4)
    # nothing in the program pins the CPU it was exported on: a no-op .to() is recorded as an assertion of
    # the traced device and dtype, which failed with "Tensor device mismatch" once moved to a GPU
    pinned = [n for n in program.graph.nodes if "assert_tensor_metadata" in str(n.target)]
    assert not pinned, [n.kwargs for n in pinned]


def test_program_carries_class_names_and_preprocessing(tmp_path: Path) -> None:
    """model.pt2 had no class names, mean/std or preprocessing (issue 24): the ONNX manifest carries
    them, and so does the program now; `vitc info model.pt2` shows them, and a run folder compiles."""
    import torch

    from vitc.checkpoint import meta_for
    from vitc.cli.main import app as main_app
    from vitc.models import create_model, get_model_cfg

    torch.manual_seed(0)
    model = create_model("deit_micro", depth=1, embed_dim=32, num_heads=2, img_size=16, num_classes=3)
    names = ["cat", "dog", "owl"]
    write_checkpoint(tmp_path / "run" / "best.safetensors", model, meta_for(model, class_names=names))
    out = tmp_path / "deploy"
    result = runner.invoke(app, ["compile", str(tmp_path / "run"), "--out", str(out)])  # a run folder: its best
    assert result.exit_code == 0, result.output
    shown = runner.invoke(main_app, ["info", str(out / "model.pt2"), "--json"])
    assert shown.exit_code == 0, shown.output
    record = json.loads(shown.output)
    assert record["class_names"] == names and record["input_size"] == [3, 16, 16]
    cfg = get_model_cfg(model)
    assert record["mean"] == list(cfg.mean) and record["std"] == list(cfg.std)
    assert record["preprocess"]["center_crop"] == [16, 16] and record["preprocess"]["std"] == record["std"]
    from vitc.artifacts.program import read_program_record

    stored = read_program_record(out / "model.pt2")
    assert stored["preprocess"]["mean"] == list(cfg.mean) and "mean" not in stored  # each fact once in the file
    table = runner.invoke(main_app, ["info", str(out / "model.pt2")])
    assert "cat, dog, owl" in table.output and "preprocess" in table.output


def test_a_program_exported_from_python_describes_itself(tmp_path: Path) -> None:
    """export_program(compiled, size, path) needed the record `vitc compile --out` builds inline: with none
    (an empty dict), `vitc info` called the file's record malformed. It is built from the model by default."""
    import vitc
    from vitc.cli.info import describe
    from vitc.compile import compile_model
    from vitc.compile.program import export_program

    model = vitc.create_model("deit_micro", depth=1)
    model.reset_classifier(2)
    path = vitc.save_checkpoint(tmp_path / "m.safetensors", model, class_names=["cat", "dog"])
    compiled, report = compile_model(vitc.load_model(path))
    export_program(compiled, report.input_size, tmp_path / "model.pt2")
    described = describe(tmp_path / "model.pt2")
    assert described["model"] == "deit_micro" and described["class_names"] == ["cat", "dog"]
    assert described["input_size"] == [3, 32, 32] and described["preprocess"]["crop_pct"] == 1.0
    assert described["target"] == "cpu"  # what compile_model rewrote it for
