"""vitc.predict / vitc.preprocess take an image's path (issue 24 item 10), read by the loader training and
`vitc eval` use: EXIF orientation applied, a missing or bad file is a one-line VitcError."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vitc
from vitc.checkpoint import meta_for, save_checkpoint
from vitc.data.images import center_crop, open_image
from vitc.errors import VitcError
from vitc.models import create_model, get_model_cfg


def test_predict_takes_a_path_turned_upright(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_model("deit_micro", depth=1, embed_dim=32, num_heads=2).eval()
    names = [str(i) for i in range(10)]
    model = vitc.load_model(save_checkpoint(tmp_path / "best.safetensors", model, meta_for(model, class_names=names)))
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
    upright = torch.from_numpy(center_crop(open_image(path, short), short, 32)[None].copy()).float() / 255
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
