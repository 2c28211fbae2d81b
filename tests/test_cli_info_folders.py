"""`vitc info` of what a user finds in vitc's folders: a folder of weights (the one `vitc import --out` writes, its
checkpoint; a Hugging Face or timm model folder: what it is, and how vitc takes it) and an export folder's held-out
set. Torch-free: these run in the Python 3.8 runtime suite too."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.engines.conftest import manifest_record
from vitc.cli.main import app


def run(*args: str):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "160"})


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
        f"error: {weights}: not a held-out set (an .npz of pixels, labels, reference_logits; it holds b, w)"
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
