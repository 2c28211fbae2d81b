"""`vitc info` of what a user finds in vitc's folders: a folder of weights (the one `vitc import --out` writes, its
checkpoint; a Hugging Face or timm model folder: what it is, and how vitc takes it), an export folder's held-out
set and a run folder's image-folder listing (index.json). Torch-free: these run in the Python 3.8 runtime suite too."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.engines.conftest import manifest_record
from vitc.cli.main import app


def run(*args: str):
    # a row per line, however long the tmp path (xdist's adds popen-gwN/)
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "400"})


def test_the_folder_vitc_import_writes_is_shown_as_its_checkpoint(tmp_path: Path) -> None:
    """`vitc import --out weights/x` writes weights/x/model.safetensors, a folder `vitc.load_model` reads: info said
    it held no export manifest."""
    pytest.importorskip("torch")
    from vitc.checkpoint import meta_for, write_checkpoint
    from vitc.models import create_model

    model = create_model("deit_micro", depth=1)
    folder = tmp_path / "weights" / "deit_micro"
    write_checkpoint(folder / "model.safetensors", model, meta_for(model))
    result = run("info", str(folder))
    assert result.exit_code == 0, result.output
    assert "(vitc checkpoint)" in result.output and "no export manifest" not in result.output
    record = json.loads(run("info", str(folder), "--json").output)
    assert record["model"] == "deit_micro" and record["file"] == str(folder / "model.safetensors")


@pytest.mark.parametrize("weights", ["model.safetensors", "pytorch_model.bin"])
def test_a_hugging_face_or_timm_folder_says_how_to_use_it(tmp_path: Path, weights: str) -> None:
    """A downloaded folder (config.json and its weights, not vitc's) is no export: one line says what it is and
    how vitc takes it, naming the model its config.json names."""
    folder = tmp_path / "convit_tiny.fb_in1k"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architecture": "convit_tiny", "num_classes": 1000}))
    (folder / weights).write_bytes(b"not read: the config says what it is")
    result = run("info", str(folder))
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    assert result.output.strip() == (
        f"error: {folder} is a Hugging Face/timm model folder (config.json and {weights}, holding convit_tiny), "
        f"not a vitc artifact: convert it with `vitc import {folder} --out weights/<name>`, or fine-tune it with "
        f"`vitc train --pretrained {folder}`"
    )
    (folder / "config.json").unlink()  # weights alone, no manifest: what an export folder lacks, as before
    assert "no export manifest" in run("info", str(folder)).output


def _table(output: str) -> dict[str, str]:
    """The field → value rows of `vitc info`'s two-column table (each row on one line at 160 columns)."""
    cells = (line.split("│") for line in output.splitlines())
    return {c[1].strip(): c[2].strip() for c in cells if len(c) == 4}


def _heldout(folder: Path, labelled: bool, seed: int = 0) -> tuple[Path, np.ndarray, np.ndarray | None]:
    """A held-out set as `vitc export` writes it (encode_heldout, named by its hash): 7 images 3×32×32, 5 classes
    (pixels past zipfile's first 4 KB read, which checks the CRC-32 of anything shorter)."""
    from vitc.artifacts.heldout import encode_heldout, heldout_name

    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (7, 3, 32, 32), dtype=np.uint8)
    logits = rng.standard_normal((7, 5)).astype(np.float32)
    labels = rng.integers(0, 5, 7) if labelled else None
    data, sha = encode_heldout(pixels, (0.5, 0.25, 0.125), (0.5,), labels, logits)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / heldout_name(sha)
    path.write_bytes(data)
    return path, logits, labels


def test_an_export_folders_held_out_set_is_described(tmp_path: Path) -> None:
    """`vitc info export/run/heldout.<sha>.npz` said "unknown artifact": it is the export's held-out set, shown by
    its size, stored samples, labels, classes, the reference top-1 on its labels, its hash and the manifests of
    the folder that name it (not one naming another checkpoint's set)."""
    folder = tmp_path / "export" / "run"
    path, logits, labels = _heldout(folder, labelled=True)
    other, _, _ = _heldout(folder, labelled=True, seed=1)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    for precision, named, digest in (("fp32", path, sha), ("fp16", path, sha), ("int8", other, None)):
        record = manifest_record(precision=precision, heldout=named.name, heldout_sha256=digest)
        (folder / f"manifest.{precision}.json").write_text(json.dumps(record))
    assert labels is not None
    hits = sum(int(max(range(5), key=lambda k: logits[i, k]) == labels[i]) for i in range(7))  # first of equals

    result = run("info", str(path))
    assert result.exit_code == 0, result.output
    assert "(vitc held-out set)" in " ".join(result.output.split())
    shown = _table(result.output)
    assert {k: shown[k] for k in ("images", "stored", "sample_shape", "dtype", "labels", "classes")} == {
        "images": "7",
        "stored": "uint8 pixels",
        "sample_shape": "3, 32, 32",
        "dtype": "uint8",
        "labels": "True",
        "classes": "5",
    }
    assert shown["reference_top1"] == f"{100 * hits / 7:.6g}" and shown["sha256"] == sha
    assert shown["manifests"] == "manifest.fp16.json, manifest.fp32.json" and shown["mean"] == "0.5, 0.25, 0.125"
    record = json.loads(run("info", str(path), "--json").output)
    assert record["kind"] == "vitc held-out set" and record["file"] == str(path)
    assert (record["images"], record["sample_shape"], record["classes"]) == (7, [3, 32, 32], 5)
    assert record["reference_top1"] == pytest.approx(100 * hits / 7) and record["labels"] is True
    assert (record["mean"], record["std"]) == ([0.5, 0.25, 0.125], [0.5]) and "note" not in record

    damaged = bytearray(path.read_bytes())
    damaged[20000] ^= 0xFF  # a pixel's byte: not the file its manifests recorded
    path.write_bytes(bytes(damaged))
    result = run("info", str(path))
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    assert result.output.startswith("error: ") and "sha256 differs" in result.output


def test_a_held_out_set_of_generated_inputs_says_it_has_no_labels(tmp_path: Path) -> None:
    """A set of generated inputs (a model whose classes no local data has) stores no labels: no top-1, and a
    note that drift on it is agreement-only; with no manifest beside it, its hash is computed from the file."""
    path, _, _ = _heldout(tmp_path, labelled=False)
    record = json.loads(run("info", str(path), "--json").output)
    assert record["labels"] is False and record["reference_top1"] is None and record["manifests"] == []
    assert record["images"] == 7 and record["classes"] == 5
    assert record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert "agreement-only" in record["note"]
    shown = _table(run("info", str(path)).output)
    assert shown["labels"] == "False" and shown["reference_top1"] == "-" and shown["manifests"] == "-"


def test_an_older_held_out_set_of_float_inputs_is_described(tmp_path: Path) -> None:
    """A set written before vitc stored pixels holds the float inputs themselves: said so, with their dtype."""
    path = tmp_path / "heldout.npz"
    images = np.zeros((4, 3, 8, 8), np.float32)
    np.savez(path, images=images, labels=np.arange(4), reference_logits=np.eye(4, dtype=np.float32))
    record = json.loads(run("info", str(path), "--json").output)
    assert record["stored"].startswith("float inputs") and record["dtype"] == "float32"
    assert (record["images"], record["sample_shape"], record["classes"]) == (4, [3, 8, 8], 4)
    assert record["reference_top1"] == 100.0 and record["mean"] is None


def test_an_npz_that_is_no_held_out_set_is_one_line(tmp_path: Path) -> None:
    """Any other .npz, and a set cut short or damaged, is refused in one line (no traceback), exit 2."""
    from vitc.artifacts import load_heldout
    from vitc.errors import VitcError

    weights = tmp_path / "weights.npz"
    np.savez(weights, w=np.zeros((2, 2), np.float32), b=np.zeros(2, np.float32))
    result = run("info", str(weights))
    assert result.exit_code == 2, result.output
    assert result.output.strip() == (
        f"error: {weights}: not a held-out set (.npz of pixels, labels, reference_logits); it holds b, w"
    )
    path, _, _ = _heldout(tmp_path, labelled=True)
    whole = path.read_bytes()
    damaged = bytearray(whole)
    damaged[20000] ^= 0xFF  # a pixel's byte, in a set no manifest names: its CRC-32 says so
    for data in (whole[:100], bytes(damaged)):
        path.write_bytes(data)
        result = run("info", str(path))
        assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
        assert result.output.startswith(f"error: {path}: not a held-out set")
        with pytest.raises(VitcError, match="not a held-out set"):  # as every reader of the set refuses it
            load_heldout(path)


def _jpeg_folder(root: Path, per_split: dict[str, int]) -> Path:
    """Class folders ant, bee, cow of small JPEGs under each split (`per_split`: images per class)."""
    from PIL import Image

    for split, count in per_split.items():
        for c, name in enumerate(("ant", "bee", "cow")):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", (12, 10), (80 * c, 20 * i, 90)).save(root / split / name / f"{i}.jpg")
    return root


def _listed_run(tmp_path: Path) -> tuple[Path, Path]:
    """A data folder and a run folder whose index.json lists its train and val splits, as `vitc train` leaves it."""
    from vitc._run_layout import RunLayout
    from vitc.data.folder_index import index_imagefolder

    data = _jpeg_folder(tmp_path / "data", {"train": 2, "val": 1})
    layout = RunLayout(tmp_path / "runs" / "r")
    layout.folder.mkdir(parents=True)
    layout.config.write_text('{"model": {"name": "deit_micro"}, "optim": {}}')
    for split in ("train", "val"):
        index_imagefolder(data, split, layout.index)
    return data, layout.index


def test_a_runs_index_json_says_per_split_what_it_lists_and_whether_it_is_current(tmp_path: Path) -> None:
    """`vitc info train/runs/X/index.json` said "unknown artifact": it is the run's listing of its image folder, shown
    per split by the folder it lists, its classes and images, and whether a resume takes it (current: the folders'
    modification times are those in its key) or the next run lists the folder again (stale), as it then does."""
    from vitc.data.folder_index import index_imagefolder

    data, index = _listed_run(tmp_path)
    result = run("info", str(index))
    assert result.exit_code == 0, result.output
    assert "(vitc image-folder index)" in " ".join(result.output.split())
    shown = _table(result.output)
    assert shown["splits.train"] == (
        f"root={(data / 'train').resolve()} classes=3 images=6 state=current: a resume takes it as it is"
    )
    assert shown["splits.val"].endswith("classes=3 images=3 state=current: a resume takes it as it is")
    record = json.loads(run("info", str(index), "--json").output)
    assert record["kind"] == "vitc image-folder index" and sorted(record["splits"]) == ["train", "val"]
    assert record["splits"]["val"] == {
        "root": str((data / "val").resolve()),
        "classes": 3,
        "images": 3,
        "state": "current: a resume takes it as it is",
    }

    from PIL import Image

    Image.new("RGB", (12, 10)).save(data / "train" / "bee" / "new.jpg")
    os.utime(data / "train" / "bee", ns=(1, 1))  # the folder changed (even where mtime resolution is coarse)
    splits = json.loads(run("info", str(index), "--json").output)["splits"]
    assert (
        splits["train"]["state"] == "stale: a folder changed since it was listed; the next run lists the folder again"
    )
    assert splits["train"]["images"] == 6 and splits["val"]["state"].startswith("current")
    assert len(index_imagefolder(data, "train", index)) == 7  # listed again, as info said
    splits = json.loads(run("info", str(index), "--json").output)["splits"]
    assert splits["train"]["state"].startswith("current") and splits["train"]["images"] == 7

    shutil.rmtree(data / "val")
    val = json.loads(run("info", str(index), "--json").output)["splits"]["val"]
    assert val["state"] == (
        f"stale: {(tmp_path / 'data' / 'val').resolve()} or one of its class folders is gone; "
        "the next run lists the folder again"
    )


def test_a_linked_split_is_current_and_test_read_from_val_is_stale_once_test_exists(tmp_path: Path) -> None:
    """val/ a link to another folder (named by its target in the key): current, as the next run takes it (it was
    called stale, and so was test, read from it). The test split listed from val/ (no test/ then) is stale once a
    test/ is made beside it, and current once listed again."""
    from vitc._run_layout import RunLayout
    from vitc.data.folder_index import index_imagefolder

    data = _jpeg_folder(tmp_path / "data", {"train": 2})
    _jpeg_folder(tmp_path / "elsewhere", {"validation": 1})
    (data / "val").symlink_to(tmp_path / "elsewhere" / "validation")
    layout = RunLayout(tmp_path / "runs" / "r")
    layout.folder.mkdir(parents=True)
    layout.config.write_text('{"model": {"name": "deit_micro"}, "optim": {}}')
    for split in ("train", "val", "test"):
        index_imagefolder(data, split, layout.index)
    splits = json.loads(run("info", str(layout.index), "--json").output)["splits"]
    assert {split: entry["state"].split(":")[0] for split, entry in splits.items()} == dict.fromkeys(
        ("train", "val", "test"), "current"
    )
    _jpeg_folder(data, {"test": 1})
    splits = json.loads(run("info", str(layout.index), "--json").output)["splits"]
    assert [entry["state"].split(":")[0] for entry in splits.values()] == ["current", "current", "stale"]
    assert len(index_imagefolder(data, "test", layout.index)) == 3  # listed again, test/ now, as info said
    splits = json.loads(run("info", str(layout.index), "--json").output)["splits"]
    assert splits["test"]["state"].startswith("current") and splits["test"]["root"] == str((data / "test").resolve())


def test_a_damaged_index_json_is_one_line(tmp_path: Path) -> None:
    """Cut short, not a listing, or a split's entry not as vitc train writes it: one line, exit 2, no traceback."""
    _, index = _listed_run(tmp_path)
    whole = index.read_text()
    cases = [
        (whole[: len(whole) // 2], f"error: {index} is not valid JSON ("),
        ("[1, 2]", f"error: {index} is not an image folder's listing as vitc train writes it (its splits)"),
        ('{"version": 2, "splits": {"train": {"key": 1}}}', f"error: {index}: the listing of 'train' is damaged"),
    ]
    for text, said in cases:
        index.write_text(text)
        result = run("info", str(index))
        assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
        assert result.output.startswith(said), result.output
        assert result.output.strip().endswith("the next run lists the folder again"), result.output
    index.write_text('{"version": 1, "splits": {}}')  # an older vitc's: described, stale
    record = json.loads(run("info", str(index), "--json").output)
    assert record["state"].startswith("stale: another vitc's listing (version 1, this one reads 2)")


def test_info_names_the_held_out_set_and_index_json_it_reads(tmp_path: Path) -> None:
    """`vitc info --help` and the line for a file it does not know name both (an index.json outside a run folder,
    whose config.json says whose listing it is, is not one)."""
    help_text = " ".join(run("info", "--help").output.split())
    assert "held-out set (.npz)" in help_text and "index.json" in help_text
    (tmp_path / "index.json").write_text('{"version": 2, "splits": {}}')
    result = run("info", str(tmp_path / "index.json"))
    assert result.exit_code == 2 and "unknown artifact" in result.output, result.output
    said = " ".join(result.output.split())
    assert "its held-out set (.npz)" in said and "metrics.jsonl or index.json)" in said
