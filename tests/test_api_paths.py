"""vitc.predict / vitc.preprocess take an image's path (issue 24 item 10), read by the loader training and
`vitc eval` use: EXIF orientation applied, a missing or bad file is a one-line VitcError."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vitc
from vitc.checkpoint import meta_for, write_checkpoint
from vitc.data.images import center_crop, open_image
from vitc.errors import VitcError
from vitc.models import create_model, get_model_cfg


def test_predict_takes_a_path_turned_upright(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_model("deit_micro", depth=1, embed_dim=32, num_heads=2).eval()
    names = [str(i) for i in range(10)]
    model = vitc.load_model(write_checkpoint(tmp_path / "best.safetensors", model, meta_for(model, class_names=names)))
    pixels = np.random.default_rng(0).integers(0, 256, (24, 48, 3), dtype=np.uint8)  # landscape as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: shown rotated 90° clockwise (a phone held upright)
    path = tmp_path / "photo.jpg"
    Image.fromarray(pixels).save(path, exif=exif, quality=95)

    by_str, by_path = vitc.predict(model, str(path), top_k=3), vitc.predict(model, path, top_k=3)
    assert by_str == by_path and len(by_str) == 3
    x = vitc.preprocess(str(path), model)
    cfg = get_model_cfg(model)
    short = max(32, round(32 / cfg.crop_pct))
    upright = torch.from_numpy(center_crop(open_image(path), short, 32)[None].copy()).float() / 255
    expected = (upright - torch.tensor(cfg.mean)[:, None, None]) / torch.tensor(cfg.std)[:, None, None]
    assert torch.allclose(x, expected, atol=1e-6)  # the training/eval loader, EXIF applied
    with Image.open(path) as stored:
        turned = np.asarray(stored.convert("RGB").transpose(Image.Transpose.ROTATE_270))  # an array: no EXIF
    assert turned.shape == (48, 24, 3)  # portrait once upright
    assert torch.allclose(x, vitc.preprocess(turned, model), atol=1e-6)  # the photo turned upright by hand

    with pytest.raises(VitcError, match="no such image file"):
        vitc.predict(model, str(tmp_path / "missing.jpg"))
    (tmp_path / "notes.jpg").write_text("not a JPEG")
    with pytest.raises(VitcError, match="cannot read image"):
        vitc.predict(model, tmp_path / "notes.jpg")


def test_a_large_photo_is_prepared_as_timm_evaluates_it(tmp_path: Path) -> None:
    """A JPEG at least twice the resize: vitc.preprocess read its path at 1/2 to 1/8 scale (Pillow's draft
    mode), a few levels off timm's whole decode and off the same photo given as a PIL image or an array."""
    model = create_model("deit_micro", depth=1, embed_dim=32, num_heads=2).eval()
    cfg = get_model_cfg(model)
    rng = np.random.default_rng(1)
    ramp = np.linspace(0, 255, 400)[None, :, None] * np.ones((300, 1, 3)) + rng.normal(0, 30, (300, 400, 3))
    path = tmp_path / "photo.jpg"
    Image.fromarray(ramp.clip(0, 255).astype(np.uint8)).save(path, quality=90)
    short = round(32 / cfg.crop_pct)  # timm's eval transform spelled out: decode, Resize(short) bicubic, CenterCrop(32)
    with Image.open(path) as im:
        pil = im.convert("RGB")
    long = int(short * 400 / 300)
    resized = np.asarray(pil.resize((long, short), Image.Resampling.BICUBIC), dtype=np.float32)
    left, top = round((long - 32) / 2), round((short - 32) / 2)  # timm: int(round(margin / 2))
    crop = torch.from_numpy(resized[top : top + 32, left : left + 32].transpose(2, 0, 1).copy()) / 255
    expected = (crop - torch.tensor(cfg.mean)[:, None, None]) / torch.tensor(cfg.std)[:, None, None]
    x = vitc.preprocess(path, model)
    assert torch.allclose(x[0], expected, atol=1e-6)
    assert torch.equal(x, vitc.preprocess(pil, model)) and torch.equal(x, vitc.preprocess(np.asarray(pil), model))
