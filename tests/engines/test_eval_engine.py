"""`vitc eval` on an engine: a .onnx or .plan file measured on a labelled folder, or on the held-out set its
export kept, without torch (these run on Python 3.8 and 3.10 in the runtime venvs)."""

from __future__ import annotations

import errno
import json
import pickle
import re
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.engines.conftest import make_tiny_onnx, manifest_record, tiny_logits_by_hand
from vitc.cli.main import app
from vitc.data.cifar import CIFAR10_CLASSES
from vitc.engines.accuracy import evaluate_folder
from vitc.engines.classify import Classifier

Image = pytest.importorskip("PIL.Image")
cli = CliRunner()
CLASSES = ["3", "7"]  # two of the tiny model's ten classes ("0".."9")


def _folder(root: Path, per_class: int = 5) -> Path:
    """Class folders of JPEGs of assorted sizes (the model takes 3×8×8; < 16 px: no JPEG draft decoding)."""
    rng = np.random.default_rng(3)
    for c in CLASSES:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (9 + i, 12, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / c / f"{i}.jpg", quality=95)
    return root


def _by_hand(onnx: Path, root: Path) -> Dict[str, List[int]]:
    """Each class folder's predicted classes, from the export's record spelled out with Pillow and ORT."""
    return {c: tiny_logits_by_hand(onnx, sorted((root / c).iterdir())).argmax(1).tolist() for c in CLASSES}


def _eval(*args: str) -> Dict:
    out = Path(args[args.index("--out") + 1])
    result = cli.invoke(app, ["eval", *args])
    assert result.exit_code == 0, result.output
    return {"output": result.output, **json.loads(out.with_suffix(".json").read_text())}


def test_an_export_is_measured_on_a_folder_as_its_images_are_prepared(
    export_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The figures are those of the classes Pillow + ONNX Runtime give by hand; decoded by threads or not,
    chunk after chunk, the report is the same; an unreadable file is named and skipped."""
    from vitc.engines import accuracy

    monkeypatch.setattr(accuracy, "FOLDER_CHUNK", 3)  # 11 files: four chunks, the last one short
    photos = _folder(tmp_path / "photos")
    onnx = export_dir / "model.fp32.onnx"
    predicted = _by_hand(onnx, photos)
    (photos / "7" / "broken.jpg").write_bytes(b"not a jpeg")
    reports = [_eval(str(onnx), "--data-dir", str(photos), "--out", str(tmp_path / f"cm{n}.png"), "--workers", n)
               for n in ("0", "2")]  # fmt: skip
    outputs = [report.pop("output") for report in reports]
    for output, by in zip(outputs, ("this thread", "2 threads")):
        lines = output.splitlines()
        assert lines[0] == f"11 images in {photos}, decoded by {by}, evaluated by onnxruntime (CPUExecutionProvider)"
        assert lines[1].startswith(f"skipped: cannot read image {photos / '7' / 'broken.jpg'}")
        assert re.fullmatch(r"per image: \d+\.\d ms in the engine \(batches of up to 32\), \d+\.\d ms more "
                            r"reading and preparing the images", lines[2]), lines[2]  # fmt: skip
        assert f"tiny (model.fp32.onnx) on {photos} (10 images, 2 of the model's 10 classes, 1 unreadable" in " ".join(
            lines[-2:]
        )
    assert reports[0] == reports[1]
    report = reports[0]
    with Classifier(onnx, device="cpu") as classify:  # the same in Python
        assert evaluate_folder(classify, photos, threads=2) == {
            k: v for k, v in report.items() if k not in ("model", "engine", "data", "split", "folder", "device")
        }
        assert classify.runner.total_inference_time > 0  # four chunks of 3 readable images or fewer, summed
    hits = {c: sum(p == int(c) for p in predicted[c]) for c in CLASSES}
    assert report["top1"] == pytest.approx(100 * sum(hits.values()) / 10)
    assert [row["recall"] for row in report["classes"]] == pytest.approx([100 * hits[c] / 5 for c in CLASSES])
    assert report["images"] == 10 and len(report["skipped"]) == 1 and report["engine"] == str(onnx)
    assert report["device"] == "onnxruntime (CPUExecutionProvider)" and report["data"] == "imagefolder"
    shown = [[sum(p == int(c) for p in predicted[t]) for c in CLASSES] for t in CLASSES]
    assert [row[:2] for row in report["confusion"]["counts"]] == shown
    assert report["confusion"]["other"] == any(p not in (3, 7) for ps in predicted.values() for p in ps)
    png = tmp_path / "cm0.png"
    try:
        import matplotlib  # noqa: F401
    except ImportError:  # a Jetson's runtime install: the counts are in the JSON
        assert not png.exists() and "no confusion PNG: matplotlib is not installed" in outputs[0]
    else:
        assert png.stat().st_size > 1000


@pytest.mark.parametrize("version", ["8.5", "10.3"])
def test_a_plan_is_measured_as_its_export(version, fake, export_dir: Path, tmp_path: Path) -> None:
    """On a folder and, with none named, on the held-out set the export kept (found through the sidecar)."""
    fake(version)
    plan = tmp_path / "engines" / "tiny.plan"
    onnx = export_dir / "model.fp32.onnx"
    built = cli.invoke(app, ["build", str(onnx), "--out", str(plan), "--batch", "1:4:8"])
    assert built.exit_code == 0, built.output
    photos = _folder(tmp_path / "photos", per_class=6)
    drop = ("engine", "device", "output")
    for args in (("--data-dir", str(photos)), ()):  # the held-out set last: checked below
        ours = _eval(str(plan), *args, "--out", str(tmp_path / "plan.png"))
        theirs = _eval(str(onnx), *args, "--device", "cpu", "--out", str(tmp_path / "onnx.png"))
        assert ours["device"] == "tensorrt" and ours["engine"] == str(plan)
        assert ours.pop("loss") == pytest.approx(theirs.pop("loss"), abs=1e-5)
        assert {k: v for k, v in ours.items() if k not in drop} == {k: v for k, v in theirs.items() if k not in drop}
    heldout = np.load(export_dir / "heldout.npz")
    assert ours["images"] == 12 and theirs["top1"] == pytest.approx(100 * 9 / 12)  # the fixture's 3 wrong labels
    assert ours["folder"] == f"its data/test, the held-out set of {export_dir}"
    assert ours["top1"] == pytest.approx(
        100 * float((heldout["reference_logits"].argmax(1) == heldout["labels"]).mean())
    )


def test_a_rebuilt_plan_takes_the_reports_of_the_one_it_replaced(fake, export_dir: Path, tmp_path: Path) -> None:
    """`vitc build --force` over a plan removes eval's reports of the old plan, named as eval names them, and
    says so; a report of another file, or one named with --out, stays."""
    fake("10.3")
    plan = tmp_path / "engines" / "tiny.plan"
    onnx = export_dir / "model.fp32.onnx"
    for _ in range(2):
        assert cli.invoke(app, ["build", str(onnx), "--out", str(plan), "--force"]).exit_code == 0
        for source, args in ((plan, []), (onnx, ["--device", "cpu"]), (plan, ["--out", str(tmp_path / "mine.png")])):
            assert cli.invoke(app, ["eval", str(source), *args]).exit_code == 0
        made = sorted(p.name for p in plan.parent.glob("tiny.confusion.*"))  # no PNG without matplotlib (a Jetson)
        assert made[0] == "tiny.confusion.test.json" and made[1:] in ([], ["tiny.confusion.test.png"])
    built = cli.invoke(app, ["build", str(onnx), "--out", str(plan), "--force"])
    assert built.exit_code == 0, built.output
    assert f"removed {', '.join(made)}: vitc eval's reports of the replaced tiny.plan" in built.output
    assert not list(plan.parent.glob("tiny.confusion.*"))  # both stayed before, describing the old plan
    assert (export_dir / "model.fp32.confusion.test.json").exists() and (tmp_path / "mine.json").exists()
    assert cli.invoke(app, ["eval", str(plan)]).exit_code == 0

    unlink = Path.unlink

    def refused(self: Path, missing_ok: bool = False) -> None:
        if ".confusion." in self.name:  # a report of another user's, in a sticky folder
            raise PermissionError(errno.EACCES, "Permission denied")
        unlink(self, missing_ok=missing_ok)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Path, "unlink", refused)
        built = cli.invoke(app, ["build", str(onnx), "--out", str(plan), "--force"])
    assert built.exit_code == 0 and "warning: cannot remove" in built.output, built.output  # the plan stands


def test_a_plan_rebuilt_from_python_takes_the_reports_of_the_one_it_replaced(
    fake, export_dir: Path, tmp_path: Path
) -> None:
    """`build_engine` replaces a plan, as torch.save and Polygraphy's SaveEngine replace their file, and then
    removes eval's reports of the old plan as `vitc build --force` does, naming them in its result (they
    stayed, describing an engine that was gone); a report named with --out stays."""
    from vitc.build.options import BuildOptions
    from vitc.build.tensorrt import build_engine

    fake("10.3")
    plan = tmp_path / "engines" / "tiny.plan"
    opts = BuildOptions(onnx=export_dir / "model.fp32.onnx", output=plan)
    build_engine(opts)
    for args in ([], ["--out", str(tmp_path / "mine.png")]):
        assert cli.invoke(app, ["eval", str(plan), *args]).exit_code == 0
    made = sorted(plan.parent.glob("tiny.confusion.*"))  # no PNG without matplotlib (a Jetson)
    assert made and made[0].name == "tiny.confusion.test.json"
    second = build_engine(opts)
    assert not list(plan.parent.glob("tiny.confusion.*")), "the old plan's reports stayed beside the new plan"
    assert sorted(second.removed_reports.removed) == made and second.removed_reports.failed == ()
    assert (tmp_path / "mine.json").exists()
    assert build_engine(opts).removed_reports.removed == ()  # nothing left to remove


def test_an_engine_report_is_named_by_the_split_read(export_dir: Path, tmp_path: Path) -> None:
    """Without test/, val/ is measured and named (it was named test); a plain folder is "all"; the
    held-out set of an image folder without test/ is its val split (the manifest's drift says so)."""
    onnx = export_dir / "model.fp32.onnx"
    _folder(tmp_path / "photos2" / "val")
    _folder(tmp_path / "photos2" / "train")
    plain = _folder(tmp_path / "plain")
    record = json.loads((export_dir / "manifest.fp32.json").read_text())
    (export_dir / "manifest.fp32.json").write_text(json.dumps({**record, "drift": {**record["drift"], "split": "val"}}))
    for args, name, split in (
        (["--data-dir", str(tmp_path / "photos2")], "model.fp32.confusion.photos2.val.json", "val"),
        (["--data-dir", str(plain), "--split", "train"], "model.fp32.confusion.plain.all.json", "all"),
        ([], "model.fp32.confusion.val.json", "val"),
        (["--split", "val"], "model.fp32.confusion.val.json", "val"),  # the held-out set is that split: measured
    ):
        result = cli.invoke(app, ["eval", str(onnx), *args])
        assert result.exit_code == 0, result.output
        assert json.loads((export_dir / name).read_text())["split"] == split
    assert sorted(p.name for p in export_dir.glob("*.confusion.*.json")) == [
        "model.fp32.confusion.photos2.val.json", "model.fp32.confusion.plain.all.json", "model.fp32.confusion.val.json",
    ]  # fmt: skip


def test_eval_on_an_engine_refuses_what_it_cannot_measure_in_one_line(export_dir: Path, tmp_path: Path, fake) -> None:
    photos = _folder(tmp_path / "photos")
    onnx = str(export_dir / "model.fp32.onnx")

    def one_line(*args: str) -> str:
        result = cli.invoke(app, ["eval", *args])
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1, result.output
        return result.output.strip()

    (photos / "zebra").mkdir()
    assert "has class folders the model does not know: zebra" in one_line(onnx, "--data-dir", str(photos))
    assert "choose one with --split" not in one_line(onnx, "--split", "val")
    assert "the export kept its data's test split, not a val split: give --data-dir" in one_line(onnx, "--split", "val")
    assert "not cifar10: give --data-dir" in one_line(onnx, "--data", "cifar10")
    cifar = tmp_path / "cifar-10-batches-py"
    cifar.mkdir()
    batch = {b"labels": [1, 2], b"data": np.zeros((2, 3072), np.uint8)}
    (cifar / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))
    assert one_line(onnx, "--data-dir", str(tmp_path)).endswith(
        "the engine 0, 1, 2, 3, 4, … (10 in all): it was not trained on CIFAR-10"
    )  # its classes first: an image size's advice would send it to measure CIFAR images it never learnt
    c8 = tmp_path / "c8"  # an 8×8 model of CIFAR-10's classes: where to measure it instead
    c8.mkdir()
    make_tiny_onnx(c8 / "model.fp32.onnx")
    (c8 / "manifest.fp32.json").write_text(json.dumps(manifest_record(class_names=list(CIFAR10_CLASSES))))
    assert "takes 8×8 images and CIFAR-10's are resized to that with torch" in one_line(
        str(c8 / "model.fp32.onnx"), "--data-dir", str(tmp_path)
    )
    assert f"no CIFAR-10 batches in {photos}" in one_line(onnx, "--data", "cifar10", "--data-dir", str(photos))
    assert "class folders of images or CIFAR-10 batches, not --data digits" in one_line(
        onnx, "--data", "digits", "--data-dir", str(photos)
    )
    assert one_line(onnx, "--device", "gpu").endswith(": --device cuda")
    if "CUDAExecutionProvider" not in pytest.importorskip("onnxruntime").get_available_providers():
        assert "ONNX Runtime has no GPU provider here" in one_line(onnx, "--device", "cuda")  # not quietly the CPU
    c32 = tmp_path / "c32"  # a 32×32 model of 5 unnamed classes on CIFAR-10's 10 labels
    c32.mkdir()
    make_tiny_onnx(c32 / "model.fp32.onnx", size=32, classes=5)
    prep = {**manifest_record()["preprocess"], "resize_shorter_side": 32, "center_crop": [32, 32]}  # type: ignore[dict-item]
    (c32 / "manifest.fp32.json").write_text(
        json.dumps(manifest_record(input_size=[3, 32, 32], class_names=None, preprocess=prep))
    )
    assert "model.fp32.onnx gives 5 classes and CIFAR-10 has 10" in one_line(
        str(c32 / "model.fp32.onnx"), "--data-dir", str(tmp_path), "--device", "cpu"
    )
    record = json.loads((export_dir / "manifest.fp32.json").read_text())
    labelless = np.load(export_dir / "heldout.npz")
    np.savez(export_dir / "heldout.npz", images=labelless["images"], reference_logits=labelless["reference_logits"])
    assert "measured on generated inputs, which have no labels" in one_line(onnx)
    del record["heldout"]
    (export_dir / "manifest.fp32.json").write_text(json.dumps(record))
    assert "no export beside it keeps a held-out set to measure on" in one_line(onnx)
    fake("10.3")
    plan = tmp_path / "tiny.plan"
    assert cli.invoke(app, ["build", onnx, "--out", str(plan)]).exit_code == 0
    assert "is a TensorRT plan, which runs on the GPU" in one_line(str(plan), "--device", "cpu")


def test_a_folder_it_cannot_write_in_gets_the_result_then_where_to_write(
    export_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`vitc eval ENGINE` beside an engine on a read-only mount evaluated, then printed only `error: cannot write
    …png`: the result was lost, and the line did not say what to do. The result comes first, then the line names
    --out. (Writes fail as on a read-only mount: chmod does not stop root.)"""
    import errno
    import tempfile

    make_temporary = tempfile.mkstemp

    def read_only(*args: object, dir: object = None, **kwargs: object) -> object:
        if dir is not None and Path(str(dir)) == export_dir:
            raise OSError(errno.EROFS, "Read-only file system", str(dir))
        return make_temporary(*args, dir=dir, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    result = cli.invoke(app, ["eval", str(export_dir / "model.fp32.onnx")])
    assert result.exit_code == 2, result.output
    png = export_dir / "model.fp32.confusion.test.png"
    first = png.with_suffix(".json")  # written before the PNG is drawn (with matplotlib or without: a Jetson)
    *before, error = result.output.strip().splitlines()
    assert error == (
        f"error: cannot write {first}: the folder is read-only or not writable; the report above is not saved: "
        f"--out DIR/{png.name} writes it elsewhere"
    )
    assert before[-1].endswith("(12 images, 8 of the model's 10 classes): top-1 75.00%  top-5 83.33%"), before[-1]
    assert not list(export_dir.glob("*confusion*"))


def test_a_plan_is_not_measured_on_an_export_made_after_it(fake, export_dir: Path, tmp_path: Path) -> None:
    """The held-out set found through a plan's sidecar is the one of the ONNX file it was built from: once
    the folder is exported again (another file, another manifest), its labels need not be the plan's."""
    onnx_lib = pytest.importorskip("onnx")
    from vitc._io import sha256_file

    fake("10.3")
    onnx = export_dir / "model.fp32.onnx"
    manifest = export_dir / "manifest.fp32.json"
    manifest.write_text(json.dumps(manifest_record(onnx_sha256=sha256_file(onnx))))
    plan = tmp_path / "tiny.plan"
    assert cli.invoke(app, ["build", str(onnx), "--out", str(plan)]).exit_code == 0
    assert _eval(str(plan), "--out", str(tmp_path / "a.png"))["images"] == 12
    again = onnx_lib.load(str(onnx))
    again.doc_string = "exported again"
    onnx_lib.save(again, str(onnx))
    manifest.write_text(json.dumps(manifest_record(onnx_sha256=sha256_file(onnx))))
    result = cli.invoke(app, ["eval", str(plan)])
    assert result.exit_code == 2, result.output
    assert f"was built from another model.fp32.onnx than the one in {export_dir} now" in " ".join(result.output.split())


def test_a_static_batch_is_fed_whole_chunks(tmp_path: Path) -> None:
    """Chunks of images are rounded up to whole calls of a static batch: 96 images through a batch of 48
    are 2 calls (chunks of 64 made 3: 48, then 16 and 32 each padded to 48), and the speed line names the
    batch the engine runs, not the one asked for."""
    from vitc.engines.accuracy import pixel_logits

    folder = tmp_path / "static"
    folder.mkdir()
    onnx = make_tiny_onnx(folder / "model.fp32.onnx", batch=48)
    (folder / "manifest.fp32.json").write_text(json.dumps(manifest_record(batch={"min": 48, "opt": 48, "max": 48})))
    pixels = np.random.default_rng(5).integers(0, 256, (96, 3, 8, 8), dtype=np.uint8)
    with Classifier(onnx, device="cpu", batch=32) as classify:
        rows: List[int] = []
        infer = classify.runner.infer
        classify.runner.infer = lambda feed: rows.append(len(feed["input"])) or infer(feed)  # type: ignore[method-assign]
        logits = pixel_logits(classify, pixels)
    assert rows == [48, 48] and logits.shape == (96, 10)
    output = _eval(str(onnx), "--data-dir", str(_folder(tmp_path / "photos")), "--device", "cpu", "--out",
                   str(tmp_path / "cm.png"))["output"]  # fmt: skip
    assert "ms in the engine (batches of up to 48)" in output


def test_a_squashing_export_and_its_plan_prepare_images_as_their_records_say(
    fake, squash_export_dir: Path, tmp_path: Path
) -> None:
    """crop_mode "squash" (CvT at 384: the whole image to size × size) travels from the manifest (version 3)
    to the plan's sidecar (version 2), and both read non-square images squashed, decoded by threads or not:
    the logits Pillow + ONNX Runtime give for the squash spelled out, not those of the centre crop."""
    from vitc.artifacts import sidecar_path
    from vitc.data.images import prepare

    fake("10.3")
    onnx = squash_export_dir / "model.fp32.onnx"
    plan = tmp_path / "engines" / "tiny.plan"
    built = cli.invoke(app, ["build", str(onnx), "--out", str(plan)])
    assert built.exit_code == 0, built.output
    manifest = json.loads((squash_export_dir / "manifest.fp32.json").read_text())
    sidecar = json.loads(sidecar_path(plan).read_text())
    assert (manifest["version"], sidecar["version"]) == (3, 2)
    assert manifest["preprocess"]["crop_mode"] == sidecar["preprocess"]["crop_mode"] == "squash"
    photos = _folder(tmp_path / "photos")
    files = [f for c in CLASSES for f in sorted((photos / c).iterdir())]
    squashed = tiny_logits_by_hand(onnx, files, "squash")
    assert not np.allclose(squashed, tiny_logits_by_hand(onnx, files), atol=1e-3)  # the two tell apart
    for engine in (onnx, plan):
        with Classifier(engine, device="auto" if engine == plan else "cpu") as classify:
            assert classify.card.preprocess.crop_mode == "squash"
            np.testing.assert_allclose(classify.logits(prepare(files, classify.card.preprocess)), squashed, atol=1e-5)
    by_class = {c: squashed[5 * i : 5 * i + 5].argmax(1).tolist() for i, c in enumerate(CLASSES)}
    shown = [[sum(p == int(c) for p in by_class[t]) for c in CLASSES] for t in CLASSES]
    for engine, workers in ((onnx, "0"), (onnx, "2"), (plan, "2")):
        report = _eval(str(engine), "--data-dir", str(photos), "--workers", workers, "--out", str(tmp_path / "cm.png"))
        assert [row[:2] for row in report["confusion"]["counts"]] == shown, (engine, workers)
