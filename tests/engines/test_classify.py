"""`vitc predict` and `vitc.engines.classify`: an engine classifies images prepared as its export's manifest
or its plan's sidecar records, without torch (these run on Python 3.8 and 3.10 in the runtime venvs)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.engines.conftest import tiny_logits_by_hand
from vitc.artifacts import sidecar_path
from vitc.artifacts.preprocess import Preprocess
from vitc.cli.main import app
from vitc.data.images import prepare
from vitc.engines.classify import Classifier, model_card
from vitc.errors import VitcError

Image = pytest.importorskip("PIL.Image")
cli = CliRunner()


def _photos(folder: Path) -> List[Path]:
    """Five images of other sizes and modes than the model's 3×8×8: JPEGs, a grey PNG in a subfolder."""
    rng = np.random.default_rng(7)
    (folder / "more").mkdir(parents=True)
    files = []
    for i, (h, w) in enumerate([(12, 16), (20, 10), (8, 8), (31, 15)]):  # < 16: no JPEG draft decoding
        files.append(folder / f"{i}.jpg")
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(files[-1], quality=95)
    files.append(folder / "more" / "grey.png")
    Image.fromarray(rng.integers(0, 256, (9, 14), dtype=np.uint8)).save(files[-1])
    return files


def _by_hand(onnx: Path, files: List[Path], top_k: int) -> List[List[str]]:
    """The classes a reader of the manifest should get, from the record spelled out with Pillow and ORT."""
    return [[str(i) for i in np.argsort(-row, kind="stable")[:top_k]] for row in tiny_logits_by_hand(onnx, files)]


def test_an_export_classifies_images_as_its_manifest_prepares_them(export_dir: Path, tmp_path: Path) -> None:
    files = _photos(tmp_path / "photos")
    onnx = export_dir / "model.fp32.onnx"
    card = model_card(onnx)
    assert card.preprocess == Preprocess((3, 8, 8), 1.0, mean=(0.5,) * 3, std=(0.5,) * 3)
    assert card.class_names == [str(i) for i in range(10)]
    with Classifier(onnx, device="cpu", batch=2) as classify:  # batches of 2, the last one short
        top = classify(files, top_k=3)
    assert [[name for name, _ in row] for row in top] == _by_hand(onnx, files, 3)
    assert all(row[0][1] >= row[1][1] >= row[2][1] > 0 for row in top)
    arrays = [np.asarray(Image.open(f).convert("RGB")) for f in files[:2]]  # arrays and PIL images alike
    with Classifier(onnx, device="cpu") as classify:
        assert classify(arrays, top_k=3) == classify([Image.open(f) for f in files[:2]], top_k=3) == top[:2]


def test_a_classifier_takes_one_image_or_a_batch_as_vitc_predict_does(export_dir: Path, tmp_path: Path) -> None:
    """One image (a path, a PIL image, a uint8 (H, W) or (H, W, C) array: a camera's frame) gives one
    prediction, as `vitc.predict`; a list, a tuple or a uint8 (N, H, W, C) array gives one per image."""
    files = _photos(tmp_path / "photos")
    onnx = export_dir / "model.fp32.onnx"
    frame = np.asarray(Image.open(files[0]).convert("RGB"))  # (12, 16, 3)
    frames = np.stack([frame, frame[::-1], frame[:, ::-1]])  # (3, 12, 16, 3)
    grey = np.asarray(Image.open(files[4]))  # (9, 14)
    with Classifier(onnx, device="cpu", batch=1) as classify:  # each image run alone: equal bits, not close
        listed = classify(files, top_k=3)
        assert len(listed) == 5 and all(len(row) == 3 and isinstance(row[0], tuple) for row in listed)
        for one, row in [
            (str(files[0]), listed[0]),
            (files[1], listed[1]),
            (Image.open(files[2]), listed[2]),
            (np.asarray(Image.open(files[3]).convert("RGB")), listed[3]),
            (grey, listed[4]),
            (frame, listed[0]),
        ]:
            top = classify(one, top_k=3)
            assert top == row, type(one)  # one prediction: (name, probability) pairs, not a list of them
            assert isinstance(top[0], tuple) and isinstance(top[0][0], str)
        assert classify(tuple(files[:2]), top_k=3) == listed[:2]
        assert classify((f for f in files[:2]), top_k=3) == listed[:2]  # a generator (Path.glob's): taken before
        with pytest.raises(VitcError, match=r"^expected an image \(a path, .* \(H, W, C\) array\); got int$"):
            classify([files[0], 3])  # an item of a batch, in the same words ("an image path, …, got int")
        batch = classify(frames, top_k=3)
        assert batch == classify(list(frames), top_k=3) and len(batch) == 3 and batch[0] == listed[0]
        assert classify(frames[:1], top_k=3) == [listed[0]]  # a batch of one is still a batch
        assert classify(frame, top_k=1) == [listed[0][0]]
        for bad, got in [
            (3, "int"),
            ({"cat": files[0]}, "dict"),
            (np.zeros((8,), np.float32), "a float32 array of shape (8,)"),
            (np.zeros((2, 8, 8, 3), np.float32), "a float32 array of shape (2, 8, 8, 3)"),
            (np.zeros((1, 2, 8, 8, 3), np.uint8), "a uint8 array of shape (1, 2, 8, 8, 3)"),
        ]:
            with pytest.raises(VitcError) as raised:
                classify(bad)
            assert str(raised.value) == (
                "expected an image (a path, a PIL image, or a uint8 (H, W) or (H, W, C) array), a list, tuple or "
                f"iterator of them, or a uint8 (N, H, W, C) array; got {got}"
            )


def test_a_large_photo_by_path_is_the_same_image_as_in_memory(export_dir: Path, tmp_path: Path) -> None:
    """A JPEG at least twice the resize was decoded at reduced size by path (Pillow's draft mode) and whole as a
    PIL image or array: probabilities differed by up to 6e-3 (a review, 2,000×1,500 photos at 32), and a reader
    of the manifest (Pillow and ONNX Runtime, as spelled out by `tiny_logits_by_hand`) could not reproduce them.
    The evaluation now decodes whole everywhere, as timm's does; only training's crops use draft mode."""
    rng = np.random.default_rng(3)
    photo = tmp_path / "big.jpg"  # smooth, as a photo is: draft mode's DCT scaling differs from a resize there
    ramp = np.linspace(0, 255, 96)[None, :, None] * np.ones((64, 1, 3)) + rng.normal(0, 30, (64, 96, 3))
    Image.fromarray(ramp.clip(0, 255).astype(np.uint8)).save(photo, quality=90)
    onnx = export_dir / "model.fp32.onnx"
    with Image.open(photo) as im:
        pil = im.convert("RGB")
    logits = tiny_logits_by_hand(onnx, [photo])[0]
    expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    with Classifier(onnx, device="cpu") as classify:
        by_path, as_pil, as_array = (classify(one, top_k=10) for one in (photo, pil, np.asarray(pil)))
    assert by_path == as_pil == as_array
    assert np.allclose([p for _, p in sorted(by_path, key=lambda pair: int(pair[0]))], expected, atol=1e-6)


def test_a_classifier_of_a_folder_names_the_files_to_give(export_dir: Path, tmp_path: Path) -> None:
    """An export folder given for its file: the line `vitc predict` says, not "no such file"."""
    onnx = export_dir / "model.fp32.onnx"
    said = f"{export_dir} is an export folder, not an .onnx or .plan file: name one of its files: {onnx}"
    for load in (model_card, Classifier):
        with pytest.raises(VitcError) as raised:
            load(export_dir)
        assert str(raised.value) == said
    with pytest.raises(VitcError) as raised:
        Classifier(str(tmp_path / "none.onnx"))
    assert str(raised.value) == f"{tmp_path / 'none.onnx'}: no such file"
    result = cli.invoke(app, ["predict", str(export_dir), str(_photos(tmp_path / "photos")[0])])
    assert result.exit_code == 2 and " ".join(result.output.split()) == " ".join(
        f"error: {export_dir} is an export folder, not a vitc checkpoint or run folder, or an .onnx or .plan "
        f"file: name one of its files: {onnx}".split()
    )


@pytest.mark.parametrize("version", ["8.5", "10.3"])
def test_a_plan_classifies_as_its_export_with_the_sidecar_alone(version, fake, export_dir: Path, tmp_path: Path):
    """`vitc build` records the export's preprocessing and classes in the sidecar, so the plan classifies on
    its own; a sidecar of an earlier build falls back to the export it names, and without it says what to do."""
    fake(version)
    photos = tmp_path / "photos"
    _photos(photos)
    plan = tmp_path / "engines" / "tiny.plan"
    built = cli.invoke(app, ["build", str(export_dir / "model.fp32.onnx"), "--out", str(plan), "--batch", "1:4:8"])
    assert built.exit_code == 0, built.output
    assert json.loads(sidecar_path(plan).read_text())["preprocess"]["center_crop"] == [8, 8]

    reports = {}
    for name, engine in (("onnx", export_dir / "model.fp32.onnx"), ("plan", plan)):
        out = tmp_path / f"{name}.json"
        result = cli.invoke(app, ["predict", str(engine), str(photos), "-k", "3", "--json", str(out)])
        assert result.exit_code == 0, result.output
        assert result.output.splitlines()[0] == f"{photos / '0.jpg'}: " + ", ".join(
            f"{label} {p:.1%}" for label, p in json.loads(out.read_text())["images"][0]["top"]
        )
        reports[name] = json.loads(out.read_text())
    assert reports["plan"]["backend"] == "tensorrt" and len(reports["plan"]["images"]) == 5
    on_cpu = cli.invoke(app, ["predict", str(plan), str(photos), "--device", "cpu"])  # not quietly on the GPU
    assert on_cpu.exit_code == 2 and "TensorRT plan, which runs on the GPU: --device cpu is for .onnx files" in (
        " ".join(on_cpu.output.split())
    )
    if "CUDAExecutionProvider" not in pytest.importorskip("onnxruntime").get_available_providers():
        on_cuda = cli.invoke(app, ["predict", str(export_dir / "model.fp32.onnx"), str(photos), "--device", "cuda"])
        assert on_cuda.exit_code == 2 and "ONNX Runtime has no GPU provider here" in on_cuda.output  # not the CPU
    for ours, theirs in zip(reports["plan"]["images"], reports["onnx"]["images"]):
        assert ours["image"] == theirs["image"] and [c for c, _ in ours["top"]] == [c for c, _ in theirs["top"]]
        assert [p for _, p in ours["top"]] == pytest.approx([p for _, p in theirs["top"]], abs=1e-5)

    record = json.loads(sidecar_path(plan).read_text())
    del record["preprocess"]  # as vitc build wrote it before: the export it names still says it
    sidecar_path(plan).write_text(json.dumps(record))
    assert model_card(plan).preprocess == model_card(export_dir / "model.fp32.onnx").preprocess
    shutil.move(str(export_dir), str(tmp_path / "elsewhere"))
    result = cli.invoke(app, ["predict", str(plan), str(photos)])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    assert "has no preprocess record and the export it was built from" in result.output


def test_predict_names_what_it_cannot_read_and_refuses_what_it_cannot_do(export_dir: Path, tmp_path: Path):
    photos = tmp_path / "photos"
    _photos(photos)
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    (photos / "notes.txt").write_text("not an image, and not named one")
    onnx = str(export_dir / "model.fp32.onnx")
    result = cli.invoke(app, ["predict", onnx, str(photos), "--device", "cpu"])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 0 and lines[0].startswith(f"skipped: cannot read image {photos / 'broken.jpg'}")
    assert lines[-2] == f"5 images classified by {onnx} (onnxrt); 1 unreadable skipped"
    assert re.fullmatch(r"per image: \d+\.\d ms reading the file, \d+\.\d ms preparing and classifying it "
                        r"\(batches of 8\)", lines[-1]), lines[-1]  # fmt: skip

    def one_line(*args: str) -> str:
        result = cli.invoke(app, ["predict", *args])
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
        return result.output.strip().splitlines()[-1]

    assert "none of the 1 images could be read" in one_line(onnx, str(photos / "broken.jpg"))
    (tmp_path / "empty").mkdir()
    assert one_line(onnx, str(tmp_path / "empty")).startswith(f"error: no images in {tmp_path / 'empty'}")
    assert (
        one_line(onnx, str(tmp_path / "nothing.jpg"))
        == f"error: {tmp_path / 'nothing.jpg'}: no such image file or folder"
    )
    assert one_line(onnx, str(photos), "--device", "gpu").endswith(": --device cuda")
    assert one_line(str(tmp_path / "none.plan"), str(photos)) == f"error: {tmp_path / 'none.plan'}: no such file"
    assert "--top-k and --batch must be at least 1" in one_line(onnx, str(photos), "-k", "0")
    bare = tmp_path / "bare" / "model.onnx"  # an ONNX file without its manifest: nothing says how to prepare
    bare.parent.mkdir()
    shutil.copy(onnx, bare)
    assert "no export manifest beside it says how its images are prepared" in one_line(str(bare), str(photos))


def test_predict_json_to_stdout_is_json_alone(export_dir: Path, tmp_path: Path) -> None:
    """`vitc predict M IMGS --json -` for `| jq`: the JSON alone on stdout, the per-image lines, the summary and
    the skipped file on stderr (`--json -` wrote a file named "-"; the skipped line was on stdout)."""
    photos = tmp_path / "photos"
    files = _photos(photos)
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    onnx = export_dir / "model.fp32.onnx"
    script = "import sys; sys.argv[0] = 'vitc'; from vitc.cli.main import main; main()"
    done = subprocess.run(
        [sys.executable, "-c", script, "predict", str(onnx), str(photos), "--device", "cpu", "-k", "2", "--json", "-"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert [row["image"] for row in record["images"]] == [str(f) for f in sorted(files)]
    assert [[label for label, _ in row["top"]] for row in record["images"]] == _by_hand(onnx, sorted(files), 2)
    assert done.stderr.startswith(f"skipped: cannot read image {photos / 'broken.jpg'}")
    assert "5 images classified by" in done.stderr and "wrote" not in done.stderr
    assert not (tmp_path / "-").exists()


def test_a_preprocess_record_reads_back_and_refuses_what_it_cannot_honour() -> None:
    prep = Preprocess((3, 224, 224), 0.875, mean=(0.5, 0.4, 0.3), std=(0.2, 0.2, 0.2))
    assert Preprocess.from_record(prep.to_record()) == prep
    grey = Preprocess((1, 32, 32), 1.0, mean=(0.5,), std=(0.5,))
    assert Preprocess.from_record(grey.to_record()) == grey
    for change, message in [
        ({"layout": "NHWC"}, "a preprocess record vitc did not write"),
        ({"resize_shorter_side": 300}, "a preprocess record vitc did not write"),
        ({"channel_order": "BGR"}, "malformed preprocess record"),
        ({"center_crop": "224"}, "malformed preprocess record"),
        ({"crop_pct": 2.0}, r"crop_pct must be in \(0, 1\]"),
    ]:
        with pytest.raises(VitcError, match=message):
            Preprocess.from_record({**prep.to_record(), **change}, "m.json")
    with pytest.raises(VitcError, match="no images given"):
        prepare([], prep)


def test_prepare_gives_the_bits_training_evaluates_on(tmp_path: Path) -> None:
    """The torch-free preparation (`vitc.preprocess` and the engines both use it) against the torch
    composition training's evaluation and the held-out sets use (the same crops, `_to_chans`, then
    `eval_transform`): bit for bit, for an RGB model and a grey one (luma as the old torch code computed it)."""
    torch = pytest.importorskip("torch")
    import vitc
    from vitc.data.datasets import _to_chans
    from vitc.data.images import read_image, to_channels
    from vitc.data.transforms import eval_transform
    from vitc.models import create_model, get_model_cfg

    files = _photos(tmp_path / "photos")
    with torch.device("meta"):
        model = create_model("deit_micro", img_size=24)
    rgb_prep = get_model_cfg(model).preprocess
    grey_prep = Preprocess((1, 24, 24), 0.9, mean=(0.45,), std=(0.27,))
    for prep in (rgb_prep, grey_prep):
        short = prep.resize_shorter_side
        crops = torch.from_numpy(np.stack([read_image(f, short, 24) for f in files]))
        torch_way = eval_transform(_to_chans(crops, prep.input_size[0]), prep.mean, prep.std).numpy()
        ours = prepare(files, prep)
        assert ours.dtype == np.float32 and ours.shape == (5, prep.input_size[0], 24, 24)
        assert np.array_equal(ours, torch_way)
    assert np.array_equal(vitc.preprocess(files, model).numpy(), prepare(files, rgb_prep))  # the API's input
    rgb = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    old = (rgb.float() * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True).round_()
    assert np.array_equal(to_channels(rgb.numpy(), 1), old.clamp_(0, 255).to(torch.uint8).numpy())


def test_predict_on_a_checkpoint_without_torch_is_one_line(tmp_path: Path) -> None:
    """On a Jetson's runtime install a checkpoint cannot run; the message says an engine can."""
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(image)
    script = (
        "import sys; sys.modules['torch'] = None\n"
        "from typer.testing import CliRunner\nfrom vitc.cli.main import app\n"
        f"r = CliRunner().invoke(app, ['predict', {str(tmp_path / 'best.safetensors')!r}, {str(image)!r}])\n"
        "print(r.exit_code); print(r.output)"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    code, *lines = done.stdout.strip().splitlines()
    assert code == "2" and len(lines) == 1, done.stdout + done.stderr
    assert "vitc predict on a checkpoint (an engine, .plan or .onnx, needs no torch)" in lines[0]


def test_predict_on_another_kind_of_file_says_what_it_takes(tmp_path: Path) -> None:
    """A `vitc compile --out` program or a foreign weights file is neither an engine nor a checkpoint
    (said before anything asks for torch: also on a Jetson's runtime install)."""
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(image)
    for name in ("model.pt2", "weights.pth"):
        (tmp_path / name).write_bytes(b"x")
        result = cli.invoke(app, ["predict", str(tmp_path / name), str(image)])
        assert result.exit_code == 2 and result.output.strip() == (
            f"error: {tmp_path / name}: vitc predict takes a .plan or .onnx file, or a vitc checkpoint or run folder"
        ), result.output
