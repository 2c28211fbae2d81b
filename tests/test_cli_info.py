"""`vitc info`: several exports in one folder, vitc's own resume file, ONNX metadata as fields."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.engines.conftest import make_tiny_onnx, manifest_record
from vitc.cli.main import app


def run(*args: str):
    # a row per line, however long the tmp path (xdist's adds popen-gwN/)
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "400"})


def test_folder_with_several_exports_lists_them_all(tmp_path: Path) -> None:
    for precision, top1 in (("fp32", 50.0), ("fp16", 49.5)):
        make_tiny_onnx(tmp_path / f"model.{precision}.onnx")
        drift = {"samples": 4, "top1": top1, "delta_top1": top1 - 50.0, "max_abs_diff": 1e-3}
        record = manifest_record(precision=precision, drift=drift)
        (tmp_path / f"manifest.{precision}.json").write_text(json.dumps(record))
    result = run("info", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert "2 exports" in result.output and "holds several exports" not in result.output
    fp16 = next(line for line in result.output.splitlines() if "model.fp16.onnx" in line)
    assert "49.50%" in fp16 and "-0.50" in fp16 and "1:4:8" in fp16
    assert any("model.fp32.onnx" in line and "50.00%" in line for line in result.output.splitlines())
    record = json.loads(run("info", str(tmp_path), "--json").output)
    assert record["kind"] == "vitc exports" and sorted(record["exports"]) == ["fp16", "fp32"]
    assert record["exports"]["fp16"]["drift"]["top1"] == 49.5


def test_an_export_whose_onnx_file_differs_is_shown_then_refused(tmp_path: Path) -> None:
    """`vitc info FOLDER` (and a manifest) listed an export whose ONNX file was emptied or replaced by another
    precision's as fine, exit 0, where info of the .onnx itself, bench and build refuse it. Each row now says
    its file's state, and the command ends with the refusal's one line."""
    from vitc._io import sha256_file

    for precision in ("fp32", "fp16", "int8"):
        onnx = make_tiny_onnx(tmp_path / f"model.{precision}.onnx", precision=precision)
        record = manifest_record(precision=precision, onnx_sha256=sha256_file(onnx))
        (tmp_path / f"manifest.{precision}.json").write_text(json.dumps(record))
    fine = run("info", str(tmp_path))
    assert fine.exit_code == 0 and "error" not in fine.output, fine.output
    assert all(" ok " in line for line in fine.output.splitlines() if "model." in line and ".onnx" in line)

    (tmp_path / "model.fp32.onnx").write_bytes(b"")
    (tmp_path / "model.fp16.onnx").write_bytes((tmp_path / "model.int8.onnx").read_bytes())
    result = run("info", str(tmp_path))
    assert result.exit_code == 2, result.output
    lines = result.output.splitlines()
    for precision, state in (("fp32", "sha256 differs"), ("fp16", "sha256 differs"), ("int8", "ok")):
        assert f" {state} " in next(line for line in lines if f"model.{precision}.onnx" in line), result.output
    last = " ".join(result.output.split("error:", 1)[1].split())
    assert last.startswith(f"{tmp_path}: model.fp16.onnx, model.fp32.onnx are not the files") and "--force" in last
    assert result.output.count("error:") == 1

    manifest = run("info", str(tmp_path / "manifest.fp16.json"), "--json")
    assert manifest.exit_code == 2 and '"onnx_file": "sha256 differs"' in manifest.output, manifest.output
    assert "model.fp16.onnx is not the file manifest.fp16.json describes (sha256 differs)" in manifest.output


def test_an_export_whose_onnx_file_is_missing_is_shown_then_refused(tmp_path: Path) -> None:
    """A manifest whose ONNX file was deleted or moved was shown `missing` in the table, exit 0, as if the export
    were usable. It now ends as a differing file does: the table first, then one line naming the files and what
    to do, exit 2; a differing file is named before a missing one, in the one line."""
    from vitc._io import sha256_file

    for precision in ("fp32", "fp16", "int8"):
        onnx = make_tiny_onnx(tmp_path / f"model.{precision}.onnx", precision=precision)
        record = manifest_record(precision=precision, onnx_sha256=sha256_file(onnx))
        (tmp_path / f"manifest.{precision}.json").write_text(json.dumps(record))
    (tmp_path / "model.fp32.onnx").unlink()
    (tmp_path / "model.int8.onnx").unlink()
    result = run("info", str(tmp_path))
    assert result.exit_code == 2, result.output
    lines = result.output.splitlines()
    for precision, state in (("fp32", "missing"), ("fp16", "ok"), ("int8", "missing")):
        assert f" {state} " in next(line for line in lines if f"model.{precision}.onnx" in line), result.output
    assert result.output.count("error:") == 1 and result.output.index("error:") > result.output.index("int8")
    last = " ".join(result.output.split("error:", 1)[1].split())
    assert last == (
        f"{tmp_path}: model.fp32.onnx, model.int8.onnx are missing (manifest.fp32.json, manifest.int8.json "
        "describe them): the export was deleted or moved in part; run vitc export again with --force"
    )

    one = run("info", str(tmp_path / "manifest.fp32.json"))
    assert one.exit_code == 2, one.output
    assert any("│ onnx_file" in ln and " missing " in ln for ln in one.output.splitlines()), one.output
    assert " ".join(one.output.split("error:", 1)[1].split()) == (
        f"{tmp_path / 'model.fp32.onnx'} is missing (manifest.fp32.json describes it): the export was deleted or "
        "moved in part; run vitc export again with --force"
    )
    (tmp_path / "model.fp16.onnx").write_bytes(b"")  # differing and missing: the differing file's line
    both = run("info", str(tmp_path))
    assert both.exit_code == 2 and both.output.count("error:") == 1, both.output
    assert "model.fp16.onnx is not the file manifest.fp16.json describes (sha256 differs)" in " ".join(
        both.output.split()
    )


def test_resume_file_is_recognised(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")  # the training side: absent from the Python 3.8 runtime venv

    from vitc.models import create_model
    from vitc.train.state import TrainState, save_state

    model = create_model("deit_micro", depth=1)
    state = TrainState(epoch=2, global_step=84, best_top1=61.25, history=[{"epoch": 1}, {"epoch": 2}])
    info = {"model": "deit_micro", "args": {"depth": 1}, "config": {"optim": {"epochs": 5}}, "classes": ["a", "b"]}
    path = tmp_path / "run1" / "resume.safetensors"
    path.parent.mkdir()
    save_state(path, state, model, torch.optim.AdamW(model.parameters()), None, {}, info)
    result = run("info", str(path))
    assert result.exit_code == 0, result.output
    assert "vitc resume state" in " ".join(result.output.split()) and "vitc import" not in result.output
    record = json.loads(run("info", str(path), "--json").output)
    assert record["next_epoch"] == 3 and record["of_epochs"] == 5 and record["best_top1"] == 61.25
    assert record["epochs_done"] == 2 and record["classes"] == 2
    assert f"`vitc train --resume {path.parent}` continues it at epoch 3 of 5;" in record["note"]  # wherever it is
    assert "this file the newest weights" not in record["note"] and record["step_in_epoch"] == 0
    within = TrainState(epoch=2, step_in_epoch=7, global_step=91, best_top1=61.25, history=[{"epoch": 1}, {"epoch": 2}])
    save_state(path, within, model, torch.optim.AdamW(model.parameters()), None, {}, info)
    record = json.loads(run("info", str(path), "--json").output)  # stopped within epoch 3: the newest weights here
    assert "at epoch 3 of 5, from its step 8;" in record["note"] and "this file the newest weights" in record["note"]


def test_a_run_folder_says_when_it_is_unfinished(tmp_path: Path) -> None:
    """`vitc info RUN` showed its best checkpoint only: a run stopped before its last epoch looked finished."""
    torch = pytest.importorskip("torch")

    from vitc.checkpoint import write_checkpoint
    from vitc.models import create_model
    from vitc.train.state import TrainState, save_state

    model = create_model("deit_micro", depth=1)
    info = {"model": "deit_micro", "args": {"depth": 1}, "config": {"optim": {"epochs": 3}}, "classes": []}
    run_dir = tmp_path / "run"
    write_checkpoint(run_dir / "best.safetensors", model)
    history = [{"epoch": 1}, {"epoch": 2}]
    for state, said in [
        (
            TrainState(epoch=2, step_in_epoch=4, global_step=24, best_top1=50.0, history=history),
            "epoch 3 of 3, from its step 5",
        ),
        (TrainState(epoch=2, global_step=20, best_top1=50.0, history=history), "epoch 3 of 3"),
        (TrainState(epoch=3, global_step=30, best_top1=50.0, history=[*history, {"epoch": 3}]), None),
        (
            TrainState(
                epoch=2, global_step=20, best_top1=50.0, history=[{"epoch": 1}, {"epoch": 2, "stopped_early": True}]
            ),
            None,
        ),
    ]:
        save_state(run_dir / "resume.safetensors", state, model, torch.optim.AdamW(model.parameters()), None, {}, info)
        record = json.loads(run("info", str(run_dir), "--json").output)
        assert record.get("run") == (said and f"unfinished: `vitc train --resume {run_dir}` continues it at {said}")
        assert record["kind"] == "vitc checkpoint"


def test_damaged_resume_file_is_a_clear_error(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    path = tmp_path / "resume.safetensors"
    save_file({"x": np.zeros(2, np.float32)}, str(path), metadata={"vitc.resume": '{"state": 3}'})
    result = run("info", str(path))
    assert result.exit_code == 2 and "damaged vitc resume file" in result.output


def test_onnx_metadata_shown_as_fields(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    path = make_tiny_onnx(tmp_path / "m.onnx")
    model = onnx.load(str(path))
    values = {"model": "tiny", "batch": {"min": 1, "opt": 4, "max": 8}, "trt_target": "10", "mean": [0.5] * 3}
    for key, value in values.items():
        model.metadata_props.add(key=key, value=json.dumps(value))
    model.metadata_props.add(key="note", value="plain words, not JSON")
    model.metadata_props.add(key="style", value="[red]kept as typed[/red]")  # text, never Rich markup
    onnx.save(model, str(path))
    result = run("info", str(path))
    assert result.exit_code == 0, result.output
    lines = {line.split("│")[1].strip(): line.split("│")[2].strip() for line in result.output.splitlines()[3:-1]}
    assert lines["metadata.model"] == "tiny" and lines["metadata.batch"] == "min=1 opt=4 max=8"
    assert lines["metadata.mean"] == "0.5, 0.5, 0.5" and lines["metadata.note"] == "plain words, not JSON"
    assert lines["metadata.style"] == "[red]kept as typed[/red]"
    assert '\\"' not in result.output and "…" not in result.output
    record = json.loads(run("info", str(path), "--json").output)
    assert record["metadata"]["batch"] == {"min": 1, "opt": 4, "max": 8}


def test_an_empty_onnx_file_is_refused(tmp_path: Path) -> None:
    """Zero bytes parse as an empty ModelProto: info showed ir_version 0 and 0 nodes, exit 0."""
    pytest.importorskip("onnx")
    path = tmp_path / "model.onnx"
    path.write_bytes(b"")
    result = run("info", str(path))
    assert result.exit_code == 2 and result.output.strip() == f"error: {path} is not an ONNX model (empty: no graph)"


def test_pt2_without_vitc_record_or_not_a_zip_is_a_clear_error(tmp_path: Path) -> None:
    import zipfile

    (tmp_path / "junk.pt2").write_bytes(b"not a zip archive")
    assert "not a readable .pt2 archive" in run("info", str(tmp_path / "junk.pt2")).output
    with zipfile.ZipFile(tmp_path / "other.pt2", "w") as archive:
        archive.writestr("archive/models/model.json", "{}")
    result = run("info", str(tmp_path / "other.pt2"))
    assert result.exit_code == 2 and "without vitc's record" in result.output
    with zipfile.ZipFile(tmp_path / "deep.pt2", "w") as archive:
        archive.writestr("archive/extra/vitc.json", "[" * 100_000)
    assert "nested too deeply" in run("info", str(tmp_path / "deep.pt2")).output


@pytest.mark.parametrize("entry", ["model/extra/vitc.json", "extra_files/vitc.json"])  # torch 2.5+, torch 2.4
def test_pt2_record_is_found_in_either_torch_layout(tmp_path: Path, entry: str) -> None:
    import zipfile

    from vitc.artifacts.program import read_program_record

    path = tmp_path / "model.pt2"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(entry, json.dumps({"compile": {"target": "cpu"}}))
    assert read_program_record(path) == {"compile": {"target": "cpu"}}


def test_checkpoint_config_one_row_per_section(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from vitc.checkpoint import meta_for, write_checkpoint
    from vitc.models import create_model

    model = create_model("deit_micro", depth=1)
    config = {"model": {"name": "deit_micro", "args": {}}, "optim": {"epochs": 5, "lr": 0.001}}
    path = write_checkpoint(tmp_path / "c.safetensors", model, meta_for(model, extra={"train_config": config}))
    result = run("info", str(path))
    assert result.exit_code == 0, result.output
    lines = {line.split("│")[1].strip(): line.split("│")[2].strip() for line in result.output.splitlines()[3:-1]}
    assert lines["extra.train_config.optim"] == "epochs=5 lr=0.001"
    assert lines["extra.train_config.model"] == "args=- name=deit_micro" and lines["args.depth"] == "1"


def test_output_that_is_no_terminal_keeps_every_column_whole(tmp_path: Path, monkeypatch) -> None:
    """A log file or a pipe got Rich's 80 columns, which cut this ten-column table to "prec…", "96.1…"."""
    for precision in ("fp32", "fp16"):  # two exports: the one-row-each table
        make_tiny_onnx(tmp_path / f"model.{precision}.onnx")
        drift = {"samples": 4, "top1": 96.11, "delta_top1": 0.0, "max_abs_diff": 5.66e-3, "agreement": 1.0}
        record = manifest_record(precision=precision, drift=drift)
        (tmp_path / f"manifest.{precision}.json").write_text(json.dumps(record))
    result = CliRunner().invoke(app, ["info", str(tmp_path)], env={"COLUMNS": None})
    assert result.exit_code == 0, result.output
    assert "…" not in result.output and "precision" in result.output and "96.11%" in result.output
    from vitc._terminal import LOG_WIDTH, PlainConsole

    monkeypatch.delenv("COLUMNS", raising=False)
    assert PlainConsole().width == LOG_WIDTH and PlainConsole(width=50).width == 50
    monkeypatch.setenv("COLUMNS", "90")
    assert PlainConsole().width == 90


def test_debug_after_the_command_shows_the_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--debug` is taken after any command too (`vitc eval X --debug` was typer's 'No such option: --debug',
    though the README says --debug shows the traceback), as before it; the next run is one line again."""
    from vitc.cli.main import app as vitc_app
    from vitc.errors import VitcError

    monkeypatch.delenv("VITC_DEBUG", raising=False)
    missing = str(tmp_path / "none.onnx")
    for args in (["info", missing, "--debug"], ["check", missing, "--debug"], ["--debug", "info", missing]):
        result = CliRunner().invoke(vitc_app, args)
        assert isinstance(result.exception, VitcError) and "no such file" in str(result.exception), result.output
    plain = run("info", missing)
    assert plain.exit_code == 2 and plain.output.strip() == f"error: {missing}: no such file"
    assert "--debug" not in run("info", "--help").output  # listed once, in `vitc --help`


@pytest.mark.parametrize("columns", ["80", "40"])
def test_an_export_folder_table_keeps_its_figures_whole_in_a_narrow_terminal(tmp_path: Path, columns: str) -> None:
    """At COLUMNS=80 the ten-column table of a folder with a long name cut "96.11%" to "96.…" and "+0.00" to
    "+0.…", or emptied the columns: the figures stay whole, the names fold."""
    folder = tmp_path / "exports of a run with a rather long name"
    folder.mkdir()
    figures = []
    for precision, top1 in (("fp32", 96.11), ("fp16", 95.87)):
        make_tiny_onnx(folder / f"model.{precision}.onnx")
        drift = {"samples": 4, "top1": top1, "delta_top1": top1 - 96.11, "max_abs_diff": 5.66e-3, "agreement": 99.5}
        (folder / f"manifest.{precision}.json").write_text(
            json.dumps(manifest_record(precision=precision, drift=drift))
        )
        figures += [f"{top1:.2f}%", f"{top1 - 96.11:+.2f}", "99.5%", "5.66e-03", "1:4:8"]
    result = CliRunner().invoke(app, ["info", str(folder)], env={"COLUMNS": columns})
    assert result.exit_code == 0, result.output
    assert "…" not in result.output and all(len(line) <= int(columns) for line in result.output.splitlines())
    assert not [f for f in figures if f not in result.output], result.output


def test_an_export_folder_table_names_precision_file_and_its_state(tmp_path: Path) -> None:
    """Its "precision" column showed the file's name and its "file" column the file's state (ok); an int8
    file did not say whether what it does not quantize is FP16 (for GPUs) or float32 (for CPUs)."""
    for precision, report in (("fp32", {}), ("int8", {"quantized": 1, "high_precision_dtype": "fp16"})):
        make_tiny_onnx(tmp_path / f"model.{precision}.onnx", precision=precision)
        record = manifest_record(precision=precision, precision_report=report)
        (tmp_path / f"manifest.{precision}.json").write_text(json.dumps(record))
    result = CliRunner().invoke(app, ["info", str(tmp_path)], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    rows = [[cell.strip() for cell in line.split("│")[1:4]] for line in result.output.splitlines() if "│" in line]
    header = [cell.strip() for cell in next(ln for ln in result.output.splitlines() if "┃" in ln).split("┃")[1:4]]
    assert header == ["precision", "file", "sha256"]
    assert rows == [["fp32", "model.fp32.onnx", "no sha256"], ["int8 (fp16 base)", "model.int8.onnx", "no sha256"]]


def test_an_export_without_a_target_says_which_tensorrt_parses_it(tmp_path: Path) -> None:
    """An export made without --trt showed "TensorRT │ any": its opset-17 LayerNormalization is beyond 8.5's parser,
    and its int8 weight initializers beyond 8.x's. The column derives the oldest target from the manifest, and so does
    the trt_target row of one manifest given alone."""
    exports = {
        "fp32": ({"opset": 17}, "8.6+ (not targeted; JetPack 5: --trt 8.5)"),
        "fp16": ({"opset": 17, "trt_target": "8.6"}, "8.6"),
        "int8": (
            {"opset": 17, "precision_report": {"quantized": 1, "weights": "int8", "high_precision_dtype": "fp16"}},
            "10+ (not targeted; JetPack 5: --trt 8.5; JetPack 6.0: --trt 8.6)",
        ),
    }
    for precision, (facts, _) in exports.items():
        make_tiny_onnx(tmp_path / f"model.{precision}.onnx")
        record = manifest_record(precision=precision, **{"trt_target": None, **facts})
        (tmp_path / f"manifest.{precision}.json").write_text(json.dumps(record))
    result = CliRunner().invoke(app, ["info", str(tmp_path)], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    column = {}
    for line in result.output.splitlines():
        cells = [cell.strip() for cell in line.split("│")]
        if len(cells) > 8:
            column[cells[1].split()[0]] = cells[8]
    assert column == {precision: shown for precision, (_, shown) in exports.items()}
    for precision, (facts, shown) in exports.items():  # one manifest given: its row said "trt_target -"
        manifest = tmp_path / f"manifest.{precision}.json"
        one = CliRunner().invoke(app, ["info", str(manifest)], env={"COLUMNS": "300"})
        row = next(line for line in one.output.splitlines() if "trt_target" in line)
        assert [cell.strip() for cell in row.split("│")[1:3]] == ["trt_target", shown], one.output
        recorded = json.loads(CliRunner().invoke(app, ["info", str(manifest), "--json"]).output)
        assert recorded["trt_target"] == facts.get("trt_target")  # the JSON keeps the manifest's own field
    from vitc.export.trt_rules import untargeted

    assert untargeted(16, False) == "8.5+ (not targeted)" and untargeted(None, False) == "not targeted"


def test_each_json_report_vitc_writes_is_described(tmp_path: Path) -> None:
    """`vitc info` on eval's, predict's and bench's JSON said "unknown artifact"; each is recognised as the command
    that writes it recognises it (its ReportKind) and shown by its figures, per-image and per-class lists counted."""
    from PIL import Image

    from tests.engines.conftest import make_export

    onnx = str(make_export(tmp_path / "export" / "tiny") / "model.fp32.onnx")
    (tmp_path / "photos").mkdir()
    for i in range(3):
        Image.fromarray(np.full((8, 8, 3), 40 * i, dtype=np.uint8)).save(tmp_path / "photos" / f"{i}.png")
    timed = ["-b", "1", "-n", "3", "--warmup", "1"]
    made = {
        "eval.json": ["eval", onnx, "--out", str(tmp_path / "eval.png")],
        "predict.json": ["predict", onnx, str(tmp_path / "photos"), "--json", str(tmp_path / "predict.json")],
        "bench.json": ["bench", "-e", onnx, *timed, "--json", str(tmp_path / "bench.json")],
    }
    for name, args in made.items():
        assert run(*args).exit_code == 0, name
    shown = {}
    for name in made:
        result = run("info", str(tmp_path / name))
        assert result.exit_code == 0, result.output
        shown[name] = {
            c[1].strip(): c[2].strip() for c in (ln.split("│") for ln in result.output.splitlines()) if len(c) == 4
        }
        assert f"{name} (vitc {name.split('.')[0]} report)" in result.output
    evaluated, benched = (json.loads((tmp_path / name).read_text()) for name in ("eval.json", "bench.json"))
    eval_rows = {
        "model": evaluated["model"],
        "top1": f"{evaluated['top1']:.6g}",
        "classes": str(len(evaluated["classes"])),
    }
    assert {k: shown["eval.json"][k] for k in eval_rows} == eval_rows
    assert shown["predict.json"]["images"] == "3"
    assert shown["predict.json"]["top_1"].startswith(f"{tmp_path / 'photos' / '0.png'}: ")
    line = f"runner={benched['rows'][0]['runner']} batch=1 p50_ms={benched['rows'][0]['e2e']['p50']:.6g} img/s="
    assert shown["bench.json"]["rows"].startswith(line)
    assert json.loads(run("info", str(tmp_path / "bench.json"), "--json").output)["kind"] == "vitc bench report"
    (tmp_path / "other.json").write_text('{"top1": 1}')  # no report of vitc's: still refused
    assert "unknown artifact" in run("info", str(tmp_path / "other.json")).output


@pytest.mark.parametrize("files", [("resume.safetensors",), ("last.safetensors", "resume.safetensors")])
def test_a_run_folder_without_best_is_said_to_be_one(tmp_path: Path, files: tuple[str, ...]) -> None:
    """`vitc info RUN` of a run stopped in its first epoch, or without best.safetensors, said "no export manifest
    (manifest.<precision>.json) in this folder", where eval and export say what the run folder holds."""
    from safetensors.numpy import save_file

    from vitc._run_layout import run_checkpoint
    from vitc.errors import VitcError

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text("{}")
    for name in files:
        save_file({"x": np.zeros(1, np.float32)}, str(run_dir / name))
    with pytest.raises(VitcError) as resolved:
        run_checkpoint(run_dir)
    result = CliRunner().invoke(app, ["info", str(run_dir)], env={"COLUMNS": "400"})
    assert result.exit_code == 2 and result.output.strip() == f"error: {resolved.value}", result.output
    assert "is a vitc train run folder" in result.output and "manifest" not in result.output


def _table(output: str) -> dict[str, str]:
    """The field → value rows of `vitc info`'s two-column table (each row on one line at 160 columns)."""
    cells = (line.split("│") for line in output.splitlines())
    return {c[1].strip(): c[2].strip() for c in cells if len(c) == 4}


def test_a_runs_own_records_are_described(tmp_path: Path) -> None:
    """`vitc info` on a run folder's summary.json, config.json and metrics.jsonl said "unknown artifact"; each is
    recognised as a run's record (beside its config.json, as no report may replace it) and shown by its figures:
    metrics.jsonl by its epochs, the best validation top-1 and the last epoch's row."""
    import shutil

    from vitc._io import json_line, json_text

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    shutil.copy(
        Path(__file__).parent / "fixtures" / "deit_micro_depth1.v0.1.0.safetensors", run_dir / "best.safetensors"
    )
    config = {"model": {"name": "deit_micro", "args": {}}, "optim": {"epochs": 3, "lr": 0.001, "warmup_epochs": 0}}
    (run_dir / "config.json").write_text(json_text(config))  # as vitc train writes them (vitc._io.write_json)
    summary = {"model": "deit_micro", "test_top1": 91.5, "best_val_top1": 93.25, "best_epoch": 2, "resumes": []}
    (run_dir / "summary.json").write_text(json_text(summary))
    epochs = [
        {"epoch": 1, "train_loss": 2.1, "lr": 0.001, "val_top1": 80.0, "val_top5": 99.0, "val_loss": 1.5},
        {"epoch": 2, "train_loss": 1.2, "lr": 0.0005, "val_top1": 93.25, "val_top5": 100.0, "val_loss": 0.4},
        {"epoch": 3, "train_loss": 1.1, "lr": 1e-05, "val_top1": float("nan"), "val_top5": 99.5, "val_loss": 0.5},
    ]  # the last epoch's top-1 NaN: written as null, no best
    (run_dir / "metrics.jsonl").write_text("".join(json_line(row) for row in epochs))

    described = {}
    for name, kind in (("summary.json", "summary"), ("config.json", "config"), ("metrics.jsonl", "metrics")):
        result = run("info", str(run_dir / name))
        assert result.exit_code == 0, result.output
        assert f"(vitc train {kind})" in " ".join(result.output.split())  # the title, wrapped in a narrow table
        described[name] = _table(result.output)
    assert described["summary.json"]["test_top1"] == "91.5" and described["summary.json"]["best_epoch"] == "2"
    assert described["config.json"]["train_config.optim"] == "epochs=3 lr=0.001 warmup_epochs=0"  # a row a section
    assert {k: v for k, v in described["metrics.jsonl"].items() if not k.startswith("last_epoch.")} == {
        "epochs": "3",
        "best_val_top1": "93.25",
        "best_epoch": "2",
    }
    last = {k[len("last_epoch.") :]: v for k, v in described["metrics.jsonl"].items() if k.startswith("last_epoch.")}
    assert last == {
        "epoch": "3",
        "train_loss": "1.1",
        "lr": "1e-05",
        "val_top1": "-",
        "val_top5": "99.5",
        "val_loss": "0.5",
    }
    recorded = json.loads(run("info", str(run_dir / "metrics.jsonl"), "--json").output)
    assert recorded["kind"] == "vitc train metrics" and recorded["last_epoch"]["epoch"] == 3
    assert json.loads(run("info", str(run_dir / "config.json"), "--json").output)["train_config"] == config

    (run_dir / "metrics.jsonl").write_text(json_line(epochs[0]) + '{"epoch": 2, "train_lo')  # cut short
    result = run("info", str(run_dir / "metrics.jsonl"))
    assert result.exit_code == 2 and result.output.startswith(f"error: {run_dir / 'metrics.jsonl'} line 2 is not valid")
    shutil.copy(run_dir / "summary.json", tmp_path / "summary.json")  # no config.json beside it: not a run's
    assert "unknown artifact" in run("info", str(tmp_path / "summary.json")).output


def test_a_hugging_face_config_json_is_not_taken_for_a_runs(tmp_path: Path) -> None:
    """A Hugging Face model folder's config.json matched the run records' name rule and was shown as
    "vitc train config" with its keys as train_config rows: it is not vitc's, and info says so."""
    (tmp_path / "config.json").write_text(
        json.dumps({"architectures": ["CvtForImageClassification"], "model_type": "cvt", "num_labels": 1000})
    )
    result = run("info", str(tmp_path / "config.json"))
    assert result.exit_code == 2 and "unknown artifact" in result.output, result.output
