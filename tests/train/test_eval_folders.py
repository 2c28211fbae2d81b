"""`vitc eval` on any labelled folder (issue 24): plain or split, a subset of the model's classes mapped by
name, per-class precision/recall, readable confusion counts, and no top-5 with 5 classes or fewer."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from vitc.checkpoint import meta_for, write_checkpoint
from vitc.cli.main import app
from vitc.models import create_model

runner = CliRunner()
CLASSES = ["cat", "dog", "fox", "owl"]


def _photos(root: Path, classes: list[str], per_class: int = 3) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (20 + i, 24, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / c / f"{i}.jpg")
    return root


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-class photo model saved as a run's best checkpoint (no training: the labels are what is tested)."""
    torch.manual_seed(0)
    model = create_model("deit_micro", depth=1, embed_dim=32, num_heads=2, img_size=16, num_classes=4)
    folder = tmp_path_factory.mktemp("runs") / "photos"
    meta = meta_for(model, class_names=CLASSES, extra={"train_config": {"data": {"name": "imagefolder"}}})
    write_checkpoint(folder / "best.safetensors", model, meta)
    return folder


def test_eval_takes_a_plain_subset_folder_by_class_name(run_folder: Path, tmp_path: Path) -> None:
    plain = _photos(tmp_path / "mine", ["dog", "owl"])  # no train/, two of the four classes
    png = tmp_path / "cm.png"
    result = runner.invoke(app, ["eval", str(run_folder), "--data-dir", str(plain), "--out", str(png)])
    assert result.exit_code == 0, result.output
    assert "6 images, 2 of the model's 4 classes" in " ".join(result.output.split())  # rich wraps by path length
    assert "top-5" not in result.output  # 4 classes: top-5 is 100% by construction
    assert "precision" in result.output and "recall" in result.output
    report = json.loads(png.with_suffix(".json").read_text())
    assert [row["class"] for row in report["classes"]] == ["dog", "owl"]
    assert all(row["support"] == 3 for row in report["classes"]) and "top5" not in report
    assert report["confusion"]["true"] == ["dog", "owl"]
    # labels are the model's indices of the names: recall matches the model's own predictions
    from vitc.checkpoint import read_checkpoint
    from vitc.data.images import center_crop, open_image
    from vitc.data.transforms import eval_transform
    from vitc.models import get_model_cfg

    model, _ = read_checkpoint(run_folder / "best.safetensors")
    cfg = get_model_cfg(model)
    x = torch.from_numpy(np.stack([center_crop(open_image(plain / "owl" / f"{i}.jpg"), 16, 16) for i in range(3)]))
    hits = int((model(eval_transform(x, cfg.mean, cfg.std)).argmax(1) == CLASSES.index("owl")).sum())
    assert report["classes"][1]["recall"] == pytest.approx(100 * hits / 3)
    assert png.stat().st_size > 1000
    info = runner.invoke(app, ["info", str(run_folder), "--json"])  # a run folder: its best checkpoint
    assert info.exit_code == 0 and json.loads(info.output)["kind"] == "vitc checkpoint", info.output


def test_eval_takes_a_split_folder_and_names_an_unknown_class(run_folder: Path, tmp_path: Path) -> None:
    split = tmp_path / "split"
    _photos(split / "test", ["cat", "fox"])
    _photos(split / "train", CLASSES)
    result = runner.invoke(app, ["eval", str(run_folder), "--data-dir", str(split), "--out", str(tmp_path / "a.png")])
    assert result.exit_code == 0, result.output
    assert str(split / "test") in result.output.replace("\n", "")

    val_only = tmp_path / "valonly"
    _photos(val_only / "val", ["cat"])  # test falls back to val
    args = ["eval", str(run_folder), "--data-dir", str(val_only), "--out", str(tmp_path / "b.png")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output

    strange = _photos(tmp_path / "strange", ["cat", "zebra"])
    result = runner.invoke(app, ["eval", str(run_folder), "--data-dir", str(strange)])
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert "zebra" in lines[0] and "does not know" in lines[0]


def test_confusion_counts_are_readable(tmp_path: Path) -> None:
    """The counts were 7-point type in a 4-inch figure; now at least 12 points for up to 10 classes."""
    from vitc.train.report import plot_confusion

    seen: list[float] = []
    import matplotlib.text

    original = matplotlib.text.Text.__init__

    def spy(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        original(self, *args, **kwargs)
        if str(kwargs.get("text", args[2] if len(args) > 2 else "")).isdigit():
            seen.append(self.get_fontsize())

    matplotlib.text.Text.__init__ = spy
    try:
        plot_confusion([[5, 1, 0], [0, 6, 0], [2, 0, 4]], ["a", "b", "c"], tmp_path / "cm.png")
    finally:
        matplotlib.text.Text.__init__ = original
    assert len(seen) == 9 and min(seen) >= 12


def test_a_class_folder_named_in_latin1_is_drawn(tmp_path: Path) -> None:
    """A folder `d\xf6g` unzipped from a Latin-1 archive is the str 'd\udcf6g' (surrogateescape): train, export
    and predict took it, and vitc eval ended in matplotlib's traceback (`set_text(): incompatible function
    arguments`), before its result was printed. Names and title are drawn as `printable` shows them."""
    import matplotlib.text

    from vitc.train.report import plot_confusion

    drawn: list[str] = []
    original = matplotlib.text.Text.set_text

    def spy(self, text):  # type: ignore[no-untyped-def]
        drawn.append(str(text))
        original(self, text)

    matplotlib.text.Text.set_text = spy
    try:
        name = os.fsdecode(b"d\xf6g")
        plot_confusion([[3, 1], [0, 4]], [name, "cat"], tmp_path / "cm.png", title=f"model on photos/{name}")
    finally:
        matplotlib.text.Text.set_text = original
    assert (tmp_path / "cm.png").stat().st_size > 0
    assert "d\\udcf6g" in drawn and "model on photos/d\\udcf6g" in drawn


def test_train_summary_hides_top5_with_few_classes(tiny: dict, tmp_path: Path) -> None:
    """A 3-class photo run printed 'test top-5 100.00%', which says nothing."""
    photos = tmp_path / "photos"
    for split in ("train", "val"):
        _photos(photos / split, ["cat", "dog", "owl"], per_class=4)
    overrides = {**tiny, "data.name": "imagefolder", "data.dir": str(photos), "data.image_size": 16}
    overrides |= {"data.fraction": 1.0, "optim.epochs": 1, "optim.batch_size": 4}
    args = [arg for k, v in overrides.items() for arg in ("--set", f"{k}={json.dumps(v)}")]
    result = runner.invoke(app, ["train", *args])  # not -q: the per-epoch line is printed too
    assert result.exit_code == 0, result.output
    assert "run summary" in result.output and "val top-1" in result.output and "top-5" not in result.output
    assert "epoch   1  train loss" in result.output
    summary = json.loads((Path(tiny["run.out_dir"]) / "tiny" / "summary.json").read_text())
    assert summary["test_top1"] is not None and summary["test_top5"] is None


def test_eval_streams_a_folder_alike_with_workers_and_names_unreadable_files(run_folder: Path, tmp_path: Path) -> None:
    """A folder is decoded per batch (any size fits in memory), by worker processes when asked, with the
    same figures; an unreadable file is named and skipped as training skips it (it used to stop eval)."""
    photos = _photos(tmp_path / "mine", CLASSES, per_class=4)
    (photos / "fox" / "broken.jpg").write_bytes(b"not a jpeg")
    reports = []
    for workers in ("0", "2"):
        png = tmp_path / f"cm{workers}.png"
        args = ["eval", str(run_folder), "--data-dir", str(photos), "--out", str(png), "--workers", workers]
        result = runner.invoke(app, [*args, "--device", "cpu"])
        assert result.exit_code == 0, result.output
        by = "this process" if workers == "0" else "2 worker processes"
        assert f"17 images in {photos}, decoded by {by}, evaluated on cpu" in result.output
        assert f"skipped: cannot read image {photos / 'fox' / 'broken.jpg'}" in result.output
        assert "(16 images, 1 unreadable skipped)" in result.output
        speed = next(line for line in result.output.splitlines() if line.startswith("per image:"))
        assert re.fullmatch(r"per image: \d+\.\d ms in the model on cpu \(batches of up to 256\), \d+\.\d ms more "
                            r"reading and preparing the images", speed), speed  # fmt: skip
        reports.append(json.loads(png.with_suffix(".json").read_text()))
    assert reports[0] == reports[1]
    assert reports[0]["images"] == 16 and reports[0]["device"] == "cpu" and len(reports[0]["skipped"]) == 1
    assert [row["support"] for row in reports[0]["classes"]] == [4, 4, 4, 4]
    cuda = runner.invoke(app, ["eval", str(run_folder), "--data-dir", str(photos), "--device", "cuda"])
    if not torch.cuda.is_available():
        assert cuda.exit_code == 2 and "--device cuda was asked for" in cuda.output, cuda.output
    gpu = runner.invoke(app, ["eval", str(run_folder), "--data-dir", str(photos), "--device", "gpu"])
    assert gpu.exit_code == 2 and "unknown device 'gpu' for --device (auto, cpu, cuda): --device cuda" in gpu.output
    split = _photos(tmp_path / "split" / "train", ["cat"]).parent
    _photos(split / "val", ["cat"])
    typo = runner.invoke(app, ["eval", str(run_folder), "--data-dir", str(split), "--split", "tset"])
    assert typo.exit_code == 2 and "has no tset/ folder (it has train/, val/): choose one with --split" in typo.output
    negative = runner.invoke(app, ["eval", str(run_folder), "--data-dir", str(photos), "--workers", "-1"])
    assert negative.exit_code == 2 and "--workers must be 0 or more" in negative.output


def test_an_export_is_measured_on_a_folder_as_its_checkpoint(run_folder: Path, tmp_path: Path) -> None:
    """`vitc eval` of the FP32 export (ONNX Runtime, no torch on that path) gives the checkpoint's report on
    the same folder: the same images read the same way, the same classes predicted."""
    photos = _photos(tmp_path / "mine", CLASSES, per_class=4)
    (photos / "fox" / "broken.jpg").write_bytes(b"not a jpeg")
    exported = runner.invoke(app, ["export", str(run_folder), "-p", "fp32", "--data", "generated",
                                   "--out", str(tmp_path / "export")])  # fmt: skip
    assert exported.exit_code == 0, exported.output
    onnx = tmp_path / "export" / "photos" / "model.fp32.onnx"
    reports = {}
    for name, source in (("checkpoint", run_folder), ("engine", onnx)):
        png = tmp_path / f"{name}.png"
        result = runner.invoke(
            app, ["eval", str(source), "--data-dir", str(photos), "--device", "cpu", "--out", str(png)]
        )
        assert result.exit_code == 0, result.output
        reports[name] = json.loads(png.with_suffix(".json").read_text())
    ours, theirs = reports["engine"], reports["checkpoint"]
    assert ours.pop("loss") == pytest.approx(theirs.pop("loss"), abs=1e-5)
    assert ours.pop("engine") == str(onnx) and theirs.pop("checkpoint") == str(run_folder / "best.safetensors")
    assert ours.pop("device") == "onnxruntime (CPUExecutionProvider)" and theirs.pop("device") == "cpu"
    assert ours == theirs and ours["images"] == 16 and len(ours["skipped"]) == 1


def test_an_export_is_measured_on_cifar_batches_as_its_checkpoint(run_folder: Path, tmp_path: Path) -> None:
    """CIFAR-10 batches at their own 32×32 (unresized, as training feeds them): the FP32 export's report on
    the test batch is the checkpoint's; an engine of another input size says where to measure instead."""
    import pickle

    from vitc.data.cifar import CIFAR10_CLASSES

    cifar = tmp_path / "cifar-10-batches-py"
    cifar.mkdir()
    rng = np.random.default_rng(5)
    batch = {b"labels": [i % 10 for i in range(30)], b"data": rng.integers(0, 256, (30, 3072), dtype=np.uint8)}
    (cifar / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))
    torch.manual_seed(1)
    model = create_model("deit_micro", depth=1, embed_dim=32, num_heads=2, img_size=32, num_classes=10)
    meta = meta_for(model, class_names=list(CIFAR10_CLASSES), extra={"train_config": {"data": {"name": "cifar10"}}})
    write_checkpoint(tmp_path / "cifar_run" / "best.safetensors", model, meta)
    exported = runner.invoke(app, ["export", str(tmp_path / "cifar_run"), "-p", "fp32", "--data", "generated",
                                   "--out", str(tmp_path / "export")])  # fmt: skip
    assert exported.exit_code == 0, exported.output
    reports = {}
    for name, source in (
        ("checkpoint", tmp_path / "cifar_run"),
        ("engine", tmp_path / "export/cifar_run/model.fp32.onnx"),
    ):
        png = tmp_path / f"{name}.png"
        args = ["eval", str(source), "--data-dir", str(tmp_path), "--device", "cpu", "--out", str(png)]
        result = runner.invoke(app, args + (["--data", "cifar10"] if name == "checkpoint" else []))
        assert result.exit_code == 0, result.output
        reports[name] = json.loads(png.with_suffix(".json").read_text())
    ours, theirs = reports["engine"], reports["checkpoint"]
    assert ours.pop("loss") == pytest.approx(theirs.pop("loss"), abs=1e-5)
    for report in (ours, theirs):
        del report["device"]
        report.pop("engine", None), report.pop("checkpoint", None)
    assert ours == theirs and ours["images"] == 30 and ours["folder"] == "cifar10/test"

    other = runner.invoke(app, ["export", str(run_folder), "-p", "fp32", "--data", "generated", "--out",
                                str(tmp_path / "export")])  # fmt: skip
    assert other.exit_code == 0, other.output
    # a 16×16 photo model: not a CIFAR model, as its engine and its checkpoint say alike (not the engine's
    # size advice, nor the checkpoint's "no class folders")
    for source, model in ((tmp_path / "export/photos/model.fp32.onnx", "engine"), (run_folder, "checkpoint")):
        photos = runner.invoke(app, ["eval", str(source), "--data-dir", str(cifar), "--device", "cpu"])
        assert photos.exit_code == 2 and photos.output.strip().splitlines() == [
            f"error: cifar10/test has classes airplane, automobile, bird, cat, deer, … (10 in all), the {model} "
            f"{', '.join(CLASSES)}: it was not trained on CIFAR-10"
        ], photos.output


def test_the_speed_line_counts_the_wait_for_each_batch_as_reading() -> None:
    """The checkpoint's speed line splits the loop's time at each wait for the next batch (as the engine's
    splits it at the runner): three batches that each take 20 ms to arrive are 60 ms or more of waiting."""
    from vitc.cli.eval import _timed

    def slow():
        for i in range(3):
            time.sleep(0.02)
            yield i

    waited = [0.0]
    assert list(_timed(slow(), waited)) == [0, 1, 2]
    assert waited[0] >= 0.06


def test_reports_on_other_folders_do_not_replace_each_other(run_folder: Path, tmp_path: Path) -> None:
    """Without --out, the report is named by the folder measured, beside the checkpoint."""
    for name in ("mine", "theirs"):
        photos = _photos(tmp_path / name, ["dog", "owl"])
        assert runner.invoke(app, ["eval", str(run_folder), "--data-dir", str(photos)]).exit_code == 0
    written = sorted(p.name for p in run_folder.glob("best.confusion.*.json"))
    assert written == ["best.confusion.mine.all.json", "best.confusion.theirs.all.json"]  # plain folders: all


def test_reports_are_named_by_the_split_read(run_folder: Path, tmp_path: Path) -> None:
    """A folder without test/ is measured on val/, and its report says val (it said test); a plain folder
    of class folders is "all", whatever --split asked (it was named .val.train for photos/val), so that a
    plain folder named val does not replace the report on the training data's val split."""
    import shutil

    checkpoint = tmp_path / "best.safetensors"
    shutil.copy(run_folder / "best.safetensors", checkpoint)
    no_test = tmp_path / "photos2"
    _photos(no_test / "train", CLASSES)
    _photos(no_test / "val", ["cat", "dog"])
    plain = _photos(tmp_path / "val", ["owl"])
    for args, name, split, folder in (
        ([], "best.confusion.photos2.val.json", "val", no_test / "val"),
        (["--split", "train"], "best.confusion.photos2.train.json", "train", no_test / "train"),
        (["--split", "train"], "best.confusion.val.all.json", "all", plain),
    ):
        data_dir = plain if folder == plain else no_test
        result = runner.invoke(app, ["eval", str(checkpoint), "--data-dir", str(data_dir), *args])
        assert result.exit_code == 0, result.output
        assert name in result.output
        report = json.loads((tmp_path / name).read_text())
        assert (report["split"], report["folder"]) == (split, str(folder))
    assert sorted(p.name for p in tmp_path.glob("*.json")) == [
        "best.confusion.photos2.train.json", "best.confusion.photos2.val.json", "best.confusion.val.all.json",
    ]  # fmt: skip
