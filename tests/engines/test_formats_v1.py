"""Files written by vitc 0.1.0 (tests/engines/data: an fp16 export manifest, a plan's sidecar) read
the same through the typed records, and the records write them back byte for byte."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from vitc._io import write_json
from vitc.artifacts import BatchRange, load_manifest, load_sidecar
from vitc.engines import trt_plan as P
from vitc.errors import VitcError

DATA = Path(__file__).parent / "data"


def test_manifest_of_vitc_0_1_0(tmp_path: Path):
    manifest = load_manifest(DATA / "manifest.fp16.json")
    assert (manifest.model, manifest.precision, manifest.io_dtype) == ("convit_micro", "fp16", "float32")
    assert manifest.input_size == (3, 32, 32) and manifest.batch == BatchRange(1, 1, 1)
    assert manifest.precision_report["fp16_nodes"] == 37 and manifest.calibration is None
    assert manifest.preprocess is not None and manifest.preprocess["resize_shorter_side"] == 32
    assert manifest.drift is not None and manifest.drift["labels"] is False and manifest.drift["agreement"] == 100.0
    assert manifest.heldout == "heldout.c0fae78d5dd4cd30.npz" and manifest.onnx_sha256 is not None
    assert manifest.compiled is True and (manifest.passes or [{}])[0].get("name") == "static_gpsa"
    assert manifest.mean == manifest.std == (0.5, 0.5, 0.5)
    # written back as new manifests are: byte for byte but for the top-level copy of mean/std (issue 23)
    write_json(tmp_path / "manifest.fp16.json", manifest.to_record())
    original = json.loads((DATA / "manifest.fp16.json").read_text())
    for key in ("mean", "std"):
        assert original["preprocess"][key] == original.pop(key)
    write_json(tmp_path / "expected.json", original)
    assert (tmp_path / "manifest.fp16.json").read_bytes() == (tmp_path / "expected.json").read_bytes()
    again = load_manifest(tmp_path / "manifest.fp16.json")
    assert (again.mean, again.std, again.preprocess) == (manifest.mean, manifest.std, manifest.preprocess)


def test_new_manifests_write_mean_and_std_once(tmp_path: Path):
    """In the preprocess record only; a manifest without one (hand-made) keeps them at the top level."""
    manifest = load_manifest(DATA / "manifest.fp16.json")
    record = manifest.to_record()
    assert "mean" not in record and "std" not in record
    assert (record["preprocess"]["mean"], record["preprocess"]["std"]) == ([0.5] * 3, [0.5] * 3)
    bare = dataclasses.replace(manifest, preprocess=None, raw={}).to_record()
    assert (bare["mean"], bare["std"], bare["preprocess"]) == ([0.5] * 3, [0.5] * 3, None)
    write_json(tmp_path / "manifest.fp16.json", bare)
    assert load_manifest(tmp_path / "manifest.fp16.json").mean == (0.5, 0.5, 0.5)


def test_sidecar_of_vitc_0_1_0(tmp_path: Path):
    plan = tmp_path / "tiny.fp32.plan"
    (tmp_path / "tiny.fp32.plan.json").write_bytes((DATA / "tiny.fp32.plan.json").read_bytes())
    side = load_sidecar(plan)
    assert side is not None and (side.tensorrt, side.precision, side.strongly_typed) == ("10.3.0.26", "fp32", False)
    assert side.gpu == {"name": "Fake Orin", "compute_capability": "8.7"} and side.jetson is None
    assert side.dla_core is None and not side.version_compatible and side.hardware_compat == "none"
    assert side.onnx_sha256 == "68fd0f256c48a401bd1cfd6ab923c7b4ff19d354e9b6655a373ee5ac4122dc8a"
    assert side.engine_drift is not None and side.engine_drift["agreement"] == 100.0
    assert side.plan == {"sha256": "b3a60c960fb12335af3ccde283b345c29127cdd5b0418e572881801ace2d55f0", "bytes": 10910}
    header = P.parse_plan_header(b"ftrt" + bytes(20) + bytes([10, 3, 0, 26]) + bytes(8))
    assert P.check_plan_compat(header, "10.3.0.26", side, {"name": "Fake Orin", "compute_capability": "8.7"}) == []
    with pytest.raises(VitcError, match=r"compute capability 8\.7"):
        P.check_plan_compat(header, "10.3.0.26", side, {"name": "RTX 4090", "compute_capability": "8.9"})
    write_json(tmp_path / "again.json", side.to_record())
    assert (tmp_path / "again.json").read_bytes() == (DATA / "tiny.fp32.plan.json").read_bytes()


def test_records_keep_keys_of_a_later_release(tmp_path: Path):
    """A newer vitc may add keys to a version-1 file: this one keeps them when it writes the record back."""
    record = json.loads((DATA / "tiny.fp32.plan.json").read_text())
    record["added_later"] = {"x": 1}
    (tmp_path / "m.plan.json").write_text(json.dumps(record))
    side = load_sidecar(tmp_path / "m.plan")
    assert side is not None and side.to_record() == record
    (tmp_path / "m.plan.json").write_text(json.dumps({**record, "options": "fast"}))
    with pytest.raises(VitcError, match="options must be a JSON object"):
        load_sidecar(tmp_path / "m.plan")


def test_the_sidecar_keeps_mean_and_std_of_a_manifest_that_writes_them_once(fake, export_dir: Path, tmp_path: Path):
    """vitc build copies the normalisation into the plan's sidecar from the preprocess record."""
    from typer.testing import CliRunner

    from vitc.cli.main import app

    manifest = json.loads((export_dir / "manifest.fp32.json").read_text())
    assert "mean" not in manifest and manifest["preprocess"]["mean"] == [0.5] * 3
    fake("10.3")
    plan = tmp_path / "m.plan"
    result = CliRunner().invoke(app, ["build", str(export_dir / "model.fp32.onnx"), "--out", str(plan)])
    assert result.exit_code == 0, result.output
    side = load_sidecar(plan)
    assert side is not None and side.mean == [0.5] * 3 and side.std == [0.5] * 3


def test_a_new_manifest_is_version_2_which_a_reader_of_version_1_refuses_in_one_line() -> None:
    """Version 2 names a held-out set of uint8 pixels. A device's older vitc (it reads version 1) must say
    "upgrade vitc", not fail on the held-out file (it said "the held-out set lacks images")."""
    from tests.engines.conftest import manifest_record
    from vitc._io import check_format
    from vitc.artifacts import FORMAT_VERSION

    record = manifest_record()
    assert record["version"] == FORMAT_VERSION == 2
    with pytest.raises(VitcError, match=r"written by a newer vitc \(vitc export manifest version 2\); upgrade vitc"):
        check_format(record, "vitc.export", 1, "manifest.fp32.json", "vitc export manifest")
    assert load_manifest(DATA / "manifest.fp16.json").to_record()["version"] == 1  # 0.1.0's stays version 1


def test_a_squashing_record_is_a_version_older_readers_refuse_while_a_centre_crop_keeps_its_own() -> None:
    """A vitc older than crop_mode would centre-crop what the record squashes (CvT at 384): the manifest (3),
    sidecar (2) and checkpoint (2) that squash make it say "upgrade vitc"; centre-cropping ones keep the
    version every vitc reads, and this one reads both."""
    from tests.engines.conftest import manifest_record
    from vitc._io import check_format
    from vitc.artifacts import EngineSidecar, parse_manifest, parse_sidecar
    from vitc.artifacts.model_cfg import ModelCfg
    from vitc.artifacts.preprocess import Preprocess
    from vitc.checkpoint import CheckpointMeta

    squash, centre = (Preprocess((3, 8, 8), 1.0, mean=(0.5,) * 3, std=(0.5,) * 3, crop_mode=mode).to_record()
                      for mode in ("squash", "center"))  # fmt: skip

    def checkpoint(mode: str) -> dict:
        return json.loads(CheckpointMeta("cvt_micro", {}, ModelCfg("cvt", crop_mode=mode)).to_json())

    cases = [
        ("vitc export manifest", "vitc.export", manifest_record("squash"), manifest_record(), 2),
        ("vitc engine sidecar", "vitc.engine", *(EngineSidecar(preprocess=r).to_record() for r in (squash, centre)), 1),
        ("vitc checkpoint", "vitc.checkpoint", checkpoint("squash"), checkpoint("center"), 1),
    ]
    for what, fmt, squashing, centred, older in cases:
        assert (squashing["version"], centred["version"]) == (older + 1, older), what
        with pytest.raises(VitcError, match=rf"written by a newer vitc \({what} version {older + 1}\); upgrade vitc"):
            check_format(squashing, fmt, older, "file", what)
        check_format(centred, fmt, older, "file", what)
    assert "crop_mode" not in centre and "crop_mode" not in checkpoint("center")["cfg"]  # as every vitc wrote them
    assert parse_manifest(cases[0][2], Path("manifest.fp32.json")).preprocess == squash
    assert parse_sidecar(cases[1][2]).preprocess == squash
    assert CheckpointMeta.from_json(json.dumps(cases[2][2])).cfg.preprocess.crop_mode == "squash"
