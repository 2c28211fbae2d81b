"""The model surface every family shares with timm's models (vitc.models.layers.ZooModel)."""

from __future__ import annotations

import warnings
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


@pytest.mark.parametrize("side", [35, 48])  # 35: ran on its top-left 32x32 before; 48: a raw size mismatch
@pytest.mark.parametrize("name", ["deit_micro", "convit_micro", "spvit_micro"])
def test_an_input_of_another_size_is_refused_naming_the_models(name: str, side: int) -> None:
    model = _micro(name).eval()
    with pytest.raises(ValueError, match=rf"input {side}x{side} does not match the model's 32x32: .*img_size=") as err:
        model(torch.randn(1, 3, side, side))
    assert "\n" not in str(err.value)


def test_cvt_takes_any_input_size() -> None:
    model = _micro("cvt_micro").eval()
    assert model(torch.randn(1, 3, 35, 48)).shape == (1, 10)


def test_the_size_check_adds_no_tracer_warning() -> None:
    """The ONNX export traces the model: its input size is static, the check a constant there."""
    model, x = _micro("deit_micro").eval(), torch.randn(2, 3, 32, 32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        traced = torch.jit.trace(model, x)
    assert not [w for w in caught if issubclass(w.category, torch.jit.TracerWarning)]
    assert torch.equal(traced(x), model(x))
