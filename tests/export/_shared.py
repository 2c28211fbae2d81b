"""Shared by tests/export and tests/quant (loaded once by path from both conftests).

A briefly trained convit_micro checkpoint and its three exports (built once).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

MICRO = {
    "convit_micro": {"depth": 2, "local_up_to_layer": 1},
    "deit_micro": {"depth": 2},
    "cvt_micro": {},
    "spvit_micro": {"depth": 2, "local_up_to_layer": 1},
}


def train_micro(path: Path, name: str = "convit_micro", steps: int = 80) -> Path:
    """A few AdamW steps on digits so accuracy (and hence drift) means something."""
    import torch
    import torch.nn.functional as F

    from vitc.checkpoint import meta_for, save_checkpoint
    from vitc.data.datasets import load_dataset
    from vitc.data.transforms import eval_transform
    from vitc.models import create_model, get_model_cfg

    torch.manual_seed(0)
    model = create_model(name, **MICRO[name])
    cfg = get_model_cfg(model)
    data = load_dataset("digits", "train", image_size=32, in_chans=3)
    x, y = eval_transform(data.images, cfg.mean, cfg.std), data.labels
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(y), (64,), generator=g)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    meta = meta_for(model, class_names=data.class_names, extra={"train_config": {"data": {"name": "digits"}}})
    return save_checkpoint(path, model, meta)


_CACHE: dict[str, object] = {}


def get_trained_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if "ckpt" not in _CACHE:
        _CACHE["ckpt"] = train_micro(tmp_path_factory.mktemp("ckpt") / "convit" / "model.safetensors")
    return _CACHE["ckpt"]  # type: ignore[return-value]


def get_exports(trained_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """fp32 (dynamic batch), fp16 and int8 (static batch 8, 128 calibration images) of the trained model."""
    from vitc.export import ExportOptions, export_checkpoint

    if "exports" in _CACHE:
        return _CACHE["exports"]  # type: ignore[return-value]
    out = tmp_path_factory.mktemp("export")
    results = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results["fp32"] = export_checkpoint(
            trained_ckpt, ExportOptions("fp32", out=out, run="r", dynamic_batch="1:4:8"), say=lambda _m: None
        )
        results["fp16"] = export_checkpoint(trained_ckpt, ExportOptions("fp16", out=out, run="r"), say=lambda _m: None)
        results["int8"] = export_checkpoint(
            trained_ckpt,
            ExportOptions("int8", out=out, run="r", batch=8, calib_images=128, explain=True),
            say=lambda _m: None,
        )
    _CACHE["exports"] = results
    return results
