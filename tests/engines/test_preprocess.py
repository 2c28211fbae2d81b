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
    with pytest.raises(VitcError, match=r"^--set: crop_pct 0.0001 resizes images to 320,000 pixels for a 32 crop"):
        resolve_preprocess({"crop_pct": 0.0001}, MICRO, source="--set")  # a reader would allocate 320,000² images


def test_the_manifest_record_is_the_one_vitc_0_1_0_wrote():
    written = json.loads((DATA / "manifest.fp16.json").read_text())["preprocess"]
    assert resolve_preprocess(checkpoint=MICRO).to_record() == written


def test_squash_is_a_plain_resize_of_the_whole_image_and_centre_keeps_its_crop() -> None:
    """crop_mode "squash" at crop_pct 1 is Pillow's resize of the whole image to size × size (bicubic); below 1
    it squashes to size / crop_pct and crops the centre (timm's). "center" is the shorter side resized and the
    centre cropped, as before."""
    image = pytest.importorskip("PIL.Image")
    import numpy as np

    from vitc.data.images import center_crop

    rng = np.random.default_rng(0)
    photo = image.fromarray(rng.integers(0, 256, (27, 40, 3), dtype=np.uint8))  # 40 wide, 27 high
    bicubic = image.Resampling.BICUBIC
    squashed = np.asarray(photo.resize((16, 16), bicubic)).transpose(2, 0, 1)
    assert np.array_equal(center_crop(photo, 16, 16, "squash"), squashed)
    margin = np.asarray(photo.resize((18, 18), bicubic).crop((1, 1, 17, 17))).transpose(2, 0, 1)
    assert np.array_equal(center_crop(photo, eval_resize(16, 0.9), 16, "squash"), margin)
    centred = np.asarray(photo.resize((23, 16), bicubic).crop((4, 0, 20, 16))).transpose(2, 0, 1)  # 40×27 → 23×16
    assert np.array_equal(center_crop(photo, 16, 16), centred)
    assert np.array_equal(center_crop(photo, 16, 16, "center"), centred)
    assert not np.array_equal(centred, squashed)


@pytest.mark.parametrize("width, height", [(640, 427), (427, 640), (500, 375), (300, 300), (257, 700)])
def test_the_centre_crop_is_timms_eval_transform(width: int, height: int) -> None:
    """timm's eval transform is torchvision's Resize(size / crop_pct) then CenterCrop(size): the longer side
    is `int(short * long / short_side)` (floored: 640×427 → 383×256; vitc rounded it to 384) and the crop's
    offset `int(round(margin / 2))` (torchvision/transforms/functional.py). Written out here with Pillow."""
    image = pytest.importorskip("PIL.Image")
    import numpy as np

    from vitc.data.images import center_crop

    photo = image.fromarray(np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8))
    short, size = eval_resize(224, 0.875), 224
    long = int(short * max(width, height) / min(width, height))
    new_w, new_h = (short, long) if width <= height else (long, short)
    left, top = round((new_w - size) / 2.0), round((new_h - size) / 2.0)  # torchvision: int(round(...))
    resized = photo.resize((new_w, new_h), image.Resampling.BICUBIC)
    expected = np.asarray(resized.crop((left, top, left + size, top + size))).transpose(2, 0, 1)
    assert np.array_equal(center_crop(photo, short, size), expected)


def test_crop_mode_is_resolved_recorded_and_read_back() -> None:
    """Resolved as the other settings (a record without it centre-crops); written in the record only when it
    squashes; a mode vitc does not have is refused in one line."""
    squash = resolve_preprocess({"crop_mode": "squash"}, MICRO)
    assert squash.crop_mode == "squash" and resolve_preprocess(checkpoint=MICRO).crop_mode == "center"
    record = squash.to_record()
    assert record["crop_mode"] == "squash" and record["resize_shorter_side"] == 32
    centred = resolve_preprocess(checkpoint=MICRO).to_record()
    assert Preprocess.from_record(record) == squash and Preprocess.from_record(centred).crop_mode == "center"
    for bad in ("border", "", None, 1):
        with pytest.raises(VitcError, match="crop_mode must be one of center, squash"):
            Preprocess.from_record({**record, "crop_mode": bad})
    with pytest.raises(VitcError, match="crop_mode must be one of center, squash, got 'Squash'"):
        resolve_preprocess({"crop_mode": "Squash"}, MICRO)
