"""The evaluation preprocessing, resolved once (options, then checkpoint, then model) and the one resize rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vitc.artifacts.preprocess import Preprocess, eval_resize, resolve_preprocess
from vitc.errors import VitcError

DATA = Path(__file__).parent / "data"
MICRO = {"input_size": [3, 32, 32], "mean": [0.5] * 3, "std": [0.5] * 3, "crop_pct": 1.0, "interpolation": "bicubic"}


def test_each_setting_comes_from_the_first_that_has_it():
    model = {"input_size": [3, 224, 224], "mean": [0.1] * 3, "std": [0.2] * 3, "crop_pct": 0.9}
    checkpoint = {"input_size": [3, 64, 64], "crop_pct": None, "interpolation": "bilinear"}
    prep = resolve_preprocess({"crop_pct": 0.8, "mean": None}, checkpoint, model)
    assert prep.input_size == (3, 64, 64) and prep.crop_pct == 0.8 and prep.interpolation == "bilinear"
    assert prep.mean == (0.1,) * 3 and prep.std == (0.2,) * 3
    assert resolve_preprocess(model={k: v for k, v in model.items() if k != "crop_pct"}).crop_pct == 0.875  # timm's
    with pytest.raises(VitcError, match="no mean, std"):
        resolve_preprocess(checkpoint={"input_size": [3, 8, 8]})


def test_one_resize_rule():
    assert eval_resize(224, 0.875) == 256 and eval_resize(32, 1.0) == 32 and eval_resize(384, 0.9) == 427
    assert Preprocess((3, 224, 224), crop_pct=0.875).resize_shorter_side == 256
    for bad in (1.2, 0.0, -1, "1"):  # a crop larger than the resized image would need padding: refused
        with pytest.raises(VitcError, match=r"crop_pct must be in \(0, 1\]"):
            resolve_preprocess({"crop_pct": bad}, MICRO)
    with pytest.raises(VitcError, match="crop_pct"):
        eval_resize(32, 1.5)


def test_the_manifest_record_is_the_one_vitc_0_1_0_wrote():
    written = json.loads((DATA / "manifest.fp16.json").read_text())["preprocess"]
    assert resolve_preprocess(checkpoint=MICRO).to_record() == written
