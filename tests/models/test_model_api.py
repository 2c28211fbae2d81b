"""The model surface every family shares with timm's models (vitc.models.layers.ZooModel)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import vitc
from vitc.checkpoint import read_meta, save_checkpoint
from vitc.models import create_model

FAMILIES = ["deit_micro", "convit_micro", "cvt_micro", "spvit_micro"]


SMALL = {"cvt_micro": {}, "deit_micro": {"depth": 2}}  # ConViT, SP-ViT: one block of each kind


def _micro(name: str, **overrides: object) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(name, **SMALL.get(name, {"depth": 2, "local_up_to_layer": 1}), **overrides)


@pytest.mark.parametrize("classes", [5, 0])
@pytest.mark.parametrize("name", FAMILIES)
def test_a_checkpoint_saved_after_reset_classifier_loads_with_its_head(name: str, classes: int, tmp_path: Path) -> None:
    model = _micro(name)
    model.reset_classifier(classes)
    path = save_checkpoint(tmp_path / "model.safetensors", model)
    assert read_meta(path).args["num_classes"] == read_meta(path).cfg.num_classes == classes
    loaded = vitc.load_model(path)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model.eval()(x))
    assert loaded.num_classes == loaded.vitc_cfg.num_classes == classes


def test_reset_classifier_forgets_the_class_names_of_the_old_head(tmp_path: Path) -> None:
    from vitc.checkpoint import meta_for

    model = _micro("deit_micro")
    names = [f"digit {i}" for i in range(10)]
    path = save_checkpoint(tmp_path / "model.safetensors", model, meta_for(model, class_names=names))
    loaded = vitc.load_model(path)
    assert loaded.vitc_class_names == names
    loaded.reset_classifier(10)  # ten new classes: the digits' names would label them wrongly
    assert loaded.vitc_class_names is None
    assert vitc.predict(loaded, torch.zeros(1, 3, 32, 32), top_k=1)[0][0][0] in {str(i) for i in range(10)}
