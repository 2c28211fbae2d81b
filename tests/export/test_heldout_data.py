"""Which data measures a checkpoint: the user's own run's data, what the user names, never a meaningless set."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from vitc.checkpoint import meta_for, read_checkpoint, training_data, write_checkpoint
from vitc.cli.main import app
from vitc.errors import VitcError
from vitc.models import create_model

runner = CliRunner()
SMALL = {"depth": 1, "embed_dim": 32, "num_heads": 2}


def _checkpoint(path: Path, data: dict[str, str], **args: int) -> Path:
    torch.manual_seed(0)
    model = create_model("deit_micro", **SMALL, **args)
    return write_checkpoint(path, model, meta_for(model, extra={"train_config": {"data": data}}))


def test_a_run_folder_of_the_users_own_names_its_data(tmp_path: Path) -> None:
    data = {"name": "imagefolder", "dir": str(tmp_path / "photos")}
    own = _checkpoint(tmp_path / "runs" / "r" / "best.safetensors", data)
    (own.parent / "config.json").write_text(json.dumps({"data": data}))
    _, meta = read_checkpoint(own)
    assert training_data(own, meta) == ("imagefolder", data["dir"])
    assert training_data(own, meta, "digits") == ("digits", None)  # named by the user: always used

    downloaded = _checkpoint(tmp_path / "downloads" / "model.safetensors", data)
    _, meta = read_checkpoint(downloaded)
    with pytest.raises(VitcError, match="pass --data-dir"):
        training_data(downloaded, meta)
    mine = tmp_path / "mine"
    for split in ("train", "val"):
        (mine / split / "cat").mkdir(parents=True)
    assert training_data(downloaded, meta, data_dir=str(mine)) == ("imagefolder", str(mine))


def test_a_folder_given_for_weights_that_name_no_data_says_its_kind(tmp_path: Path) -> None:
    """`vitc export model.safetensors --data-dir photos` for imported weights (no training data recorded)
    measured digits and refused ("digits has 10 classes and the model 4"), where train and eval take the
    folder's kind; the folder now says it: class folders an image folder, batches CIFAR-10."""
    path = _checkpoint(tmp_path / "imported" / "model.safetensors", {})
    _, meta = read_checkpoint(path)
    photos = tmp_path / "photos"
    for split in ("train", "val"):
        (photos / split / "cat").mkdir(parents=True)
    assert training_data(path, meta, data_dir=str(photos)) == ("imagefolder", str(photos))
    assert training_data(path, meta) == ("digits", None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(VitcError, match="holds neither class folders"):
        training_data(path, meta, data_dir=str(tmp_path / "empty"))


def test_a_folder_given_for_a_digits_run_is_read_or_refused(tmp_path: Path) -> None:
    """`vitc export RUN --data-dir /no/such/folder` (and inspect) for a run trained on digits measured digits
    and said "360 images from /no/such/folder": the folder was never read. It is read as the kind it holds,
    as eval and train read it, or refused in one line; digits named with a folder are refused too."""
    from PIL import Image

    run = _checkpoint(tmp_path / "runs" / "d" / "best.safetensors", {"name": "digits"})
    _, meta = read_checkpoint(run)
    missing = str(tmp_path / "no" / "such")
    with pytest.raises(VitcError, match="missing folder"):
        training_data(run, meta, data_dir=missing)
    with pytest.raises(VitcError, match="digits are bundled and take no folder"):
        training_data(run, meta, "digits", str(tmp_path))
    for command in (["export", str(run.parent), "--out", str(tmp_path / "x")], ["inspect", str(run.parent)]):
        result = runner.invoke(app, [*command, "--data-dir", missing])
        assert result.exit_code == 2 and result.output.strip() == f"error: missing folder {missing}", result.output
    assert not (tmp_path / "x").exists()

    photos = tmp_path / "photos"  # the digits' own classes, as photos: measured on them
    for split in ("train", "val"):
        for digit in range(10):
            (photos / split / str(digit)).mkdir(parents=True)
            Image.new("RGB", (12, 12), (20 * digit, 0, 0)).save(photos / split / str(digit) / "0.png")
    assert training_data(run, meta, data_dir=str(photos)) == ("imagefolder", str(photos))
    result = runner.invoke(app, ["export", str(run), "-p", "fp32", "--data-dir", str(photos), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert f"held-out set: imagefolder val split, 10 images from {photos}" in " ".join(result.output.split())


def test_export_refuses_a_folder_of_other_classes_of_the_same_count(tmp_path: Path) -> None:
    """A folder with as many classes as the head but other names was measured as if its classes were the
    model's (only the count was compared), a drift table of meaningless top-1. Refused as another count is."""
    from PIL import Image

    torch.manual_seed(0)
    model = create_model("deit_micro", **SMALL, num_classes=3)
    meta = meta_for(model, class_names=["cat", "dog", "fox"], extra={"train_config": {"data": {}}})
    path = write_checkpoint(tmp_path / "m" / "model.safetensors", model, meta)
    photos = tmp_path / "photos"
    for split in ("train", "val"):
        for name in ("ant", "bee", "cow"):
            (photos / split / name).mkdir(parents=True)
            Image.new("RGB", (40, 40), (90, 30, 200)).save(photos / split / name / "0.png")
    out = tmp_path / "x"
    result = runner.invoke(app, ["export", str(path), "--data-dir", str(photos), "--out", str(out)])
    assert result.exit_code == 2, result.output
    said = " ".join(result.output.split())  # read as vitc eval reads it, and refused in its words
    assert (
        f"{photos / 'val'} has class folders the model does not know: ant, bee, cow (its 3 classes: cat, dog, fox)"
        in said
    )
    assert not out.exists()


PETS = ["cat", "dog", "fox"]


def _jpegs(root: Path, counts: dict[str, int]) -> Path:
    """Class folders of small JPEGs, `counts` images each."""
    from PIL import Image

    rng = np.random.default_rng(len(str(root)))
    for name, count in counts.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(rng.integers(0, 256, (20 + i, 24, 3), dtype=np.uint8)).save(root / name / f"{i}.jpg")
    return root


def _photo_run(tmp_path: Path) -> tuple[Path, Path]:
    """A 3-class photo model saved as the user's own run (config.json) trained on photos/ (train/ and val/)."""
    photos = tmp_path / "photos"
    for split in ("train", "val"):
        _jpegs(photos / split, dict.fromkeys(PETS, 2))
    torch.manual_seed(0)
    model = create_model("deit_micro", **SMALL, img_size=16, num_classes=3)
    data = {"name": "imagefolder", "dir": str(photos)}
    meta = meta_for(model, class_names=PETS, extra={"train_config": {"data": data}})
    run = write_checkpoint(tmp_path / "runs" / "pets" / "best.safetensors", model, meta).parent
    (run / "config.json").write_text(json.dumps({"data": data}))
    return run, photos


def test_export_and_inspect_read_a_plain_folder_of_class_folders_as_eval_does(tmp_path: Path) -> None:
    """`vitc eval RUN --data-dir holdout` reads class folders without train/ val/ test/ whole, but export (its
    held-out set) and inspect refused the same folder: "holds class folders but no train/ and val/: vitc trains
    on ...". They now read it as eval does: all its images, labelled by the model's class names (two of its
    three here), the split recorded as "all"; INT8 calibrates on the run's own training data, as it does
    without --data-dir, and says so."""
    from vitc.artifacts import load_heldout, load_manifest

    run, photos = _photo_run(tmp_path)
    holdout = _jpegs(tmp_path / "holdout", {"cat": 2, "fox": 3})
    out = tmp_path / "out"
    args = ["export", str(run), "-p", "fp32", "-p", "int8", "--calib-images", "4", "--data-dir", str(holdout)]
    result = runner.invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert (
        f"held-out set: imagefolder, the whole folder (no train/ val/ test/), 5 images, 2 of the model's 3 classes "
        f"from {holdout}"
    ) in said
    assert f"calibrating on imagefolder's train split in {photos}, the run's training data: {holdout} has no" in said
    for precision in ("fp32", "int8"):
        manifest = load_manifest(out / "pets" / f"manifest.{precision}.json")
        assert manifest.drift is not None and manifest.drift["samples"] == 5, manifest.drift
        assert (manifest.drift["data"], manifest.drift["split"]) == ("imagefolder", "all")
    assert manifest.calibration is not None and manifest.calibration["images"] == 4
    assert load_heldout(manifest).labels.tolist() == [0, 0, 2, 2, 2]  # the model's indices of cat and fox

    reports = {}  # the held-out set is what eval reads in the folder: the engine on it, the checkpoint on holdout
    for name, command in (
        ("checkpoint", [str(run), "--data-dir", str(holdout)]),
        ("engine", [str(manifest.onnx_path)]),
    ):
        evaluated = runner.invoke(app, ["eval", *command, "--out", str(tmp_path / f"{name}.png")])
        assert evaluated.exit_code == 0, evaluated.output
        reports[name] = json.loads((tmp_path / f"{name}.json").read_text())
    assert reports["engine"]["confusion"] == reports["checkpoint"]["confusion"]
    assert reports["engine"]["split"] == "all" and [row["support"] for row in reports["engine"]["classes"]] == [2, 3]
    other = runner.invoke(app, ["eval", str(manifest.onnx_path), "--split", "val"])
    assert other.exit_code == 2 and " ".join(other.output.split()) == (
        "error: the export kept a whole folder of class folders (no splits), not a val split: give --data-dir to "
        "measure on one"
    )

    shown = runner.invoke(app, ["inspect", str(run), "--data-dir", str(holdout), "--out", str(tmp_path / "inspect")])
    assert shown.exit_code == 0, shown.output
    summary = json.loads((tmp_path / "inspect" / "summary.json").read_text())
    assert summary["data"] == "imagefolder" and summary["images"] == 5


def test_a_plain_folder_with_a_class_the_model_does_not_know_is_one_line(tmp_path: Path) -> None:
    """As eval names them: export and inspect stop in the same one line, before anything is written."""
    run, _ = _photo_run(tmp_path)
    other = _jpegs(tmp_path / "other", {"cat": 1, "owl": 1})
    line = f"error: {other} has class folders the model does not know: owl (its 3 classes: cat, dog, fox)"
    for command in (["eval", str(run)], ["export", str(run), "--out", str(tmp_path / "x")], ["inspect", str(run)]):
        result = runner.invoke(app, [*command, "--data-dir", str(other)])
        assert result.exit_code == 2 and " ".join(result.output.split()) == line, (command, result.output)
    assert not (tmp_path / "x").exists() and not (run / "best.inspect").exists()


def test_int8_on_a_plain_folder_of_weights_that_record_no_training_data_asks_for_calib_dir(tmp_path: Path) -> None:
    """A plain folder has no train split to calibrate on, and imported weights no training data of their own:
    one line before any work (not the bundled digits); --calib-dir calibrates on the images it names."""
    from vitc.artifacts import load_manifest

    torch.manual_seed(0)
    model = create_model("deit_micro", **SMALL, img_size=16, num_classes=3)
    meta = meta_for(model, class_names=PETS, extra={"train_config": {"data": {}}})
    weights = write_checkpoint(tmp_path / "imported" / "model.safetensors", model, meta)
    holdout = _jpegs(tmp_path / "holdout", {"dog": 2, "fox": 2})
    args = [
        "export",
        str(weights),
        "-p",
        "fp32",
        "-p",
        "int8",
        "--data-dir",
        str(holdout),
        "--out",
        str(tmp_path / "x"),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and result.output.count("error:") == 1, result.output
    said = " ".join(result.output.split())
    assert f"int8 calibrates on a train split: {holdout} has no train/" in said and "pass --calib-dir DIR" in said
    assert not (tmp_path / "x").exists()
    result = runner.invoke(app, [*args, "--calib-dir", str(holdout), "--calib-images", "2"])
    assert result.exit_code == 0, result.output
    manifest = load_manifest(tmp_path / "x" / "imported" / "manifest.int8.json")
    assert manifest.calibration is not None and manifest.calibration["images"] == 2
    assert manifest.drift is not None and manifest.drift["split"] == "all" and manifest.drift["samples"] == 4


def test_export_refuses_data_whose_classes_do_not_match_the_head(tmp_path: Path) -> None:
    """An ImageNet head measured on digits gave 'top-1 0.00% vs 0.00%' without a word. Named data that does
    not fit is refused; unnamed, the export is agreement-only (tests/export/test_agreement_only.py)."""
    path = _checkpoint(tmp_path / "imported" / "model.safetensors", {}, num_classes=1000)
    result = runner.invoke(app, ["export", str(path), "--data", "digits", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2, result.output
    assert "digits has 10 classes and the model 1000" in result.output and "--data" in result.output


def test_eval_defaults_to_the_training_data_and_names_it(tmp_path: Path) -> None:
    path = _checkpoint(tmp_path / "m" / "model.safetensors", {"name": "digits"})
    result = runner.invoke(app, ["eval", str(path), "--split", "val", "--out", str(tmp_path / "cm.png")])
    assert result.exit_code == 0, result.output
    assert "on digits/val (" in result.output

    foreign = _checkpoint(tmp_path / "f" / "model.safetensors", {"name": "cifar10", "dir": "/elsewhere"})
    result = runner.invoke(app, ["eval", str(foreign)])
    assert result.exit_code == 2 and "pass --data-dir" in result.output, result.output


def test_manifest_carries_the_preprocessing(exports: dict) -> None:
    record = exports["fp32"].manifest.preprocess
    assert record["center_crop"] == [32, 32] and record["channel_order"] == "RGB" and record["layout"] == "NCHW"
    assert record["interpolation"] == "bicubic" and record["mean"] == list(exports["fp32"].manifest.mean)
    assert record["resize_shorter_side"] == round(32 / record["crop_pct"])
    written = json.loads(exports["fp32"].manifest.path.read_text())  # each fact once (issue 23)
    assert "mean" not in written and "std" not in written and written["preprocess"]["std"] == record["std"]


def test_the_heldout_set_stores_pixels_that_give_the_reference_inputs(
    exports: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """uint8 pixels with the mean and std (a quarter of the float bytes); normalised by a reader, chunk by
    chunk, they are the very inputs the reference logits came from: the FP32 file reproduces them."""
    import onnxruntime as ort

    from vitc.artifacts import load_heldout
    from vitc.engines import accuracy
    from vitc.engines.accuracy import heldout_logits
    from vitc.engines.onnxrt import OnnxRuntimeRunner

    manifest = exports["fp32"].manifest
    heldout = load_heldout(manifest)
    assert heldout.images.dtype == np.uint8 and heldout.images.shape == (360, 3, 32, 32)  # digits' test split
    assert heldout.mean == tuple(manifest.preprocess["mean"]) and heldout.std == tuple(manifest.preprocess["std"])
    assert manifest.heldout_path.stat().st_size < 360 * 3 * 32 * 32 + 64 * 1024  # pixels, logits, labels
    session = ort.InferenceSession(str(manifest.onnx_path), providers=["CPUExecutionProvider"])
    first = session.run(None, {"input": heldout.inputs(0, 4)})[0]
    np.testing.assert_allclose(first, heldout.reference_logits[:4], atol=1e-4)
    with OnnxRuntimeRunner(manifest.onnx_path, device="cpu") as runner:
        whole = heldout_logits(runner, heldout, batch=8)
        monkeypatch.setattr(accuracy, "HELDOUT_CHUNK", 44)  # chunks of 44: 360 = 8 × 44 + 8, the last one short
        np.testing.assert_array_equal(heldout_logits(runner, heldout, batch=8), whole)
    np.testing.assert_allclose(whole, heldout.reference_logits, atol=1e-4)


def test_a_squashing_checkpoint_exports_a_record_its_engine_reads_squashed(tmp_path: Path) -> None:
    """checkpoint → export → engine: crop_mode "squash" (a Hugging Face CvT at 384, imported) in the checkpoint
    (version 2) is the manifest's (version 3); the held-out set keeps each test photo squashed, and the ONNX
    file measured on the folder without torch gives the checkpoint's own report."""
    from dataclasses import replace

    from PIL import Image

    from vitc._io import read_safetensors_header
    from vitc.artifacts import load_heldout, load_manifest
    from vitc.data.images import center_crop, open_image

    rng = np.random.default_rng(0)
    for split in ("train", "val", "test"):
        for name in ("a", "b"):
            (tmp_path / "photos" / split / name).mkdir(parents=True)
            for i in range(3):
                pixels = rng.integers(0, 256, (30, 40 + 8 * i, 3), dtype=np.uint8)  # wider than high
                Image.fromarray(pixels).save(tmp_path / "photos" / split / name / f"{i}.jpg", quality=90)
    torch.manual_seed(0)
    model = create_model("deit_micro", **SMALL, num_classes=2)
    model.vitc_cfg = replace(model.vitc_cfg, crop_mode="squash")
    ckpt = write_checkpoint(tmp_path / "m" / "model.safetensors", model, meta_for(model, class_names=["a", "b"]))
    assert json.loads(read_safetensors_header(ckpt)["__metadata__"]["vitc"])["version"] == 2
    photos = str(tmp_path / "photos")
    args = ["export", str(ckpt), "-p", "fp32", "--data", "imagefolder", "--data-dir", photos, "--out", str(tmp_path)]
    result = runner.invoke(app, [*args, "--run", "r"])
    assert result.exit_code == 0, result.output
    manifest = load_manifest(tmp_path / "r" / "manifest.fp32.json")
    assert manifest.version == 3 and manifest.preprocess is not None and manifest.preprocess["crop_mode"] == "squash"
    files = sorted((tmp_path / "photos" / "test").rglob("*.jpg"))
    squashed = np.stack([center_crop(open_image(f), 32, 32, "squash") for f in files])
    assert np.array_equal(load_heldout(manifest).images, squashed)
    reports = {}
    for name, source in (("checkpoint", ckpt), ("engine", tmp_path / "r" / "model.fp32.onnx")):
        out = tmp_path / f"{name}.png"
        evaluated = runner.invoke(app, ["eval", str(source), "--data-dir", photos, "--out", str(out)])
        assert evaluated.exit_code == 0, evaluated.output
        reports[name] = json.loads(out.with_suffix(".json").read_text())
    assert reports["engine"]["confusion"] == reports["checkpoint"]["confusion"]
    assert reports["engine"]["loss"] == pytest.approx(reports["checkpoint"]["loss"], abs=1e-4)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"mean": None}, "needs a float mean of 1 or 3 values"),
        ({"std": np.zeros(3, np.float32)}, "the held-out std must be finite and non-zero"),
        ({"std": np.ones(2, np.float32)}, "needs a float std of 1 or 3 values"),
        ({"pixels": np.zeros((4, 3, 2, 2), np.float32)}, "the held-out pixels must be uint8"),
    ],
)
def test_a_heldout_set_without_its_normalisation_is_refused(change: dict, message: str, tmp_path: Path) -> None:
    from vitc.artifacts import load_heldout
    from vitc.errors import VitcError

    arrays = {"pixels": np.zeros((4, 3, 2, 2), np.uint8), "mean": np.zeros(3, np.float32),
              "std": np.ones(3, np.float32), "reference_logits": np.zeros((4, 5), np.float32)}  # fmt: skip
    arrays.update(change)
    np.savez(tmp_path / "heldout.npz", **{k: v for k, v in arrays.items() if v is not None})
    with pytest.raises(VitcError, match=message):
        load_heldout(tmp_path / "heldout.npz")


def test_the_heldout_memory_benchmark_runs(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """docs/heldout_memory.py's plumbing on a tiny set: both layouts, the readers, the old-tree switch."""
    from tests.doc_scripts import load_doc_script

    script = load_doc_script("heldout_memory")
    root = str(Path(__file__).resolve().parents[2])
    monkeypatch.setattr("sys.argv", ["heldout_memory", "--images", "10", "--size", "64", "--rounds", "1",
                                     "--old-tree", root])  # fmt: skip
    script.main()
    lines = capsys.readouterr().out.splitlines()
    sizes = {line.split()[0]: float(line.split()[2]) for line in lines if line.endswith(" MiB")}
    assert sizes["uint8"] < sizes["float32"]
    assert sum("peak RSS median" in line for line in lines) == 4, lines


def test_the_export_memory_script_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """docs/export_memory.py's plumbing on a micro model: one row per stage, each peak at least its start."""
    from tests.doc_scripts import load_doc_script

    model = create_model("deit_micro", depth=1, embed_dim=32, num_heads=2, img_size=16, num_classes=3)
    ckpt = write_checkpoint(tmp_path / "m.safetensors", model, meta_for(model, class_names=["a", "b", "c"]))
    monkeypatch.setattr("sys.argv", ["export_memory", str(ckpt)])
    load_doc_script("export_memory").main()
    rows = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines() if line.startswith("| ")][1:]
    stages = [row[0].strip() for row in rows]
    assert stages[:4] == [
        "checkpoint.read_checkpoint",
        "pipeline._compile",
        "pipeline.heldout_set",
        "pipeline._torch_logits",
    ]
    assert "onnx_export.clean" in stages and stages[-1] == "pipeline.write_export"
    assert all(float(row[2].split()[0]) >= float(row[1].split()[0]) - 0.01 for row in rows)


def test_a_capped_held_out_set_spans_every_class_and_decodes_only_what_it_keeps(tmp_path: Path, monkeypatch) -> None:
    """A test split over HELDOUT_MAX images was decoded whole, then its first images kept: listed class by class,
    the drift of a 1,000-class validation set was measured on its first 40 classes. Now the images kept are
    spread evenly over the split (every class in proportion) and chosen before any is decoded; INT8's
    calibration draw is made on the file list too (the same draw as before on a folder that reads whole)."""
    import vitc.data.datasets as datasets
    from vitc.data.datasets import capped
    from vitc.export.heldout import heldout_set
    from vitc.quant.calib import calibration_set

    photos = _jpegs(tmp_path / "photos" / "test", dict.fromkeys(PETS, 4)).parent
    _jpegs(photos / "train", dict.fromkeys(PETS, 5))
    model = create_model("deit_micro", **SMALL, img_size=16, num_classes=3)
    meta = meta_for(model, class_names=PETS)
    decoded: list[str] = []
    read_image = datasets.read_image
    monkeypatch.setattr(datasets, "read_image", lambda f, *a: decoded.append(f.name) or read_image(f, *a))

    held = heldout_set(meta, meta.cfg.preprocess, "imagefolder", str(photos), max_images=6)
    assert held.labels.tolist() == [0, 0, 1, 1, 2, 2] and len(decoded) == 6  # before: [0, 0, 0, 0, 1, 1], 12 decoded
    whole = heldout_set(meta, meta.cfg.preprocess, "imagefolder", str(photos))
    assert np.array_equal(held.pixels, whole.pixels[capped(whole.labels, 6)])
    monkeypatch.setattr("vitc.export.heldout.HELDOUT_MAX", 9)  # the cap is read at the call (a default argument before)
    assert len(heldout_set(meta, meta.cfg.preprocess, "imagefolder", str(photos)).labels) == 9

    decoded.clear()
    drawn = calibration_set("imagefolder", 4, meta.cfg.preprocess, str(photos), seed=3, classes=PETS)
    every = calibration_set("imagefolder", 15, meta.cfg.preprocess, str(photos), seed=3, classes=PETS)
    order = np.sort(np.random.default_rng(3).permutation(15)[:4])  # the draw on the decoded split, before
    assert len(decoded) == 4 + 15 and np.array_equal(drawn.images, every.images[order])
    sizes = np.repeat(np.arange(12), [2004, 1500, 603, 999, 402, 198, 150, 102, 30, 9, 3, 2])  # 6,002 images
    kept = np.bincount(sizes[capped(sizes, 2000)]).tolist()  # the spread of before dropped the last 3 classes
    assert kept == [667, 500, 201, 333, 134, 66, 50, 34, 10, 3, 1, 1] and capped(sizes[:5], 5) is None
    by_turns = np.repeat(np.arange(100), 5)[capped(np.repeat(np.arange(100), 5), 50)]  # fewer than the classes
    assert len(set(by_turns.tolist())) == 50 and by_turns.max() >= 90  # one each, spread over the 100


def test_inspect_decodes_only_the_images_it_averages_over_spread_over_the_classes(tmp_path: Path, monkeypatch) -> None:
    """`vitc inspect --images N` decoded the whole val split and averaged over its first N images, from its
    first classes; now N images spread over the split, and only those decoded."""
    import vitc.data.datasets as datasets

    run, _ = _photo_run(tmp_path)  # val/: 2 images of each of 3 classes
    decoded: list[str] = []
    read_image = datasets.read_image
    monkeypatch.setattr(datasets, "read_image", lambda f, *a: decoded.append(f.parent.name) or read_image(f, *a))
    result = runner.invoke(app, ["inspect", str(run), "--images", "3", "--out", str(tmp_path / "inspect")])
    assert result.exit_code == 0, result.output
    assert sorted(decoded) == PETS  # before: all 6 decoded, the first 3 (cat, cat, dog) averaged over
    assert json.loads((tmp_path / "inspect" / "summary.json").read_text())["images"] == 3


def test_an_unreadable_image_in_the_calibration_draw_is_replaced_by_the_next_drawn(tmp_path: Path) -> None:
    """Drawn from the file list before decoding, an unreadable file would leave calibration short of
    --calib-images: the draw goes on to the next file, as --calib-dir's does (and as the draw among the
    decoded images did)."""
    from vitc.quant.calib import calibration_set

    photos = _jpegs(tmp_path / "photos" / "train", dict.fromkeys(PETS, 5)).parent
    broken = sorted((photos / "train").rglob("*.jpg"))[:10]
    for path in broken:
        path.write_bytes(b"not a jpeg")
    model = create_model("deit_micro", **SMALL, img_size=16, num_classes=3)
    meta = meta_for(model, class_names=PETS)
    drawn = calibration_set("imagefolder", 4, meta.cfg.preprocess, str(photos), seed=1, classes=PETS)
    assert len(drawn.images) == 4 and 1 <= len(drawn.skipped) <= 10, (len(drawn.images), len(drawn.skipped))


def test_int8_on_a_held_out_folder_whose_run_data_moved_is_one_line_before_any_precision(tmp_path: Path) -> None:
    """The fall-back to the run's training data was not checked up front: the fp32 file was written (over an
    earlier one with --force), then int8 stopped at `missing folder`: half an export."""
    run, photos = _photo_run(tmp_path)
    holdout = _jpegs(tmp_path / "holdout", {"cat": 2, "dog": 2})
    photos.rename(tmp_path / "moved")
    out = tmp_path / "out"
    result = runner.invoke(app, ["export", str(run), "-p", "fp32", "-p", "int8", "--data-dir", str(holdout),
                                 "--out", str(out)])  # fmt: skip
    said = " ".join(result.output.split())
    assert result.exit_code == 2 and result.output.count("error:") == 1, result.output
    assert f"the run's training data is not there (missing folder {photos})" in said and "--calib-dir DIR" in said
    assert not out.exists()


def test_inspect_reads_a_test_split_copied_without_train_or_val(tmp_path: Path) -> None:
    """Export and eval read test/ alone; inspect, which has no --split, said "choose one with --split"."""
    run, _ = _photo_run(tmp_path)
    copied = _jpegs(tmp_path / "copied" / "test", {"cat": 1, "dog": 2}).parent
    result = runner.invoke(app, ["inspect", str(run), "--data-dir", str(copied), "--out", str(tmp_path / "inspect")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "inspect" / "summary.json").read_text())["images"] == 3


def test_an_unreadable_image_in_a_capped_held_out_set_is_replaced(tmp_path: Path) -> None:
    """The stratified pick of a capped held-out set, or of inspect's images, goes on past an unreadable file:
    6 asked of 12 with one broken gave 5."""
    from vitc.export.heldout import heldout_set

    photos = _jpegs(tmp_path / "photos" / "test", dict.fromkeys(PETS, 4)).parent
    (photos / "test" / "cat" / "0.jpg").write_bytes(b"not a jpeg")  # the first pick of its class
    model = create_model("deit_micro", **SMALL, img_size=16, num_classes=3)
    meta = meta_for(model, class_names=PETS)
    held = heldout_set(meta, meta.cfg.preprocess, "imagefolder", str(photos), max_images=6)
    assert len(held.labels) == 6 and len(held.skipped) == 1 and sorted(set(held.labels.tolist())) == [0, 1, 2]


def test_a_held_out_folder_that_is_the_runs_own_train_split_is_warned_of(tmp_path: Path) -> None:
    """photos/train has no splits of its own, so it is read whole, as any folder of class folders: the drift's
    top-1 would be on the images the run trained on, which export now says in a line."""
    run, photos = _photo_run(tmp_path)
    result = runner.invoke(app, ["export", str(run), "-p", "fp32", "--data-dir", str(photos / "train"),
                                 "--out", str(tmp_path / "out")])  # fmt: skip
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert f"warning: {photos / 'train'} is the train/ folder the run trained on" in said
    other = runner.invoke(app, ["export", str(run), "-p", "fp32", "--data-dir", str(photos / "val"),
                                "--out", str(tmp_path / "out2")])  # fmt: skip
    assert other.exit_code == 0 and "warning:" not in other.output, other.output


def test_a_val_split_without_some_classes_is_measured_as_eval_measures_it(tmp_path: Path) -> None:
    """A photos/ tree whose val/ has no fox images (an empty fox/ folder, no owl): `vitc eval` measured it
    ("2 of the model's 3 classes"), export and inspect said "class folder .../val/fox has no images" (or
    "must have the same class folders as train"). Training's own val still needs train's class folders."""
    from vitc.artifacts import load_heldout, load_manifest
    from vitc.data.datasets import load_dataset

    run, photos = _photo_run(tmp_path)  # trained on photos/: cat, dog, fox in train/ and val/
    for image in (photos / "val" / "fox").iterdir():
        image.unlink()
    out = tmp_path / "out"
    result = runner.invoke(app, ["export", str(run), "-p", "fp32", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "4 images, 2 of the model's 3 classes" in " ".join(result.output.split())
    manifest = load_manifest(out / "pets" / "manifest.fp32.json")
    assert manifest.drift is not None and manifest.drift["split"] == "val"
    assert load_heldout(manifest).labels.tolist() == [0, 0, 1, 1]
    shown = runner.invoke(app, ["inspect", str(run), "--out", str(tmp_path / "inspect")])
    assert shown.exit_code == 0, shown.output
    with pytest.raises(VitcError, match=r"class folder .*val/fox has no images"):
        load_dataset("imagefolder", "val", data_dir=photos, image_size=16)  # what training reads
