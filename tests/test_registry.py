"""Registry behaviour: lookup, overrides checked against the class, metadata attached to models."""

from __future__ import annotations

import pytest
import torch

from vitc.errors import VitcError
from vitc.models import create_model, get_model_cfg, list_models, model_cfg


def test_every_family_registered() -> None:
    families = {get_model_cfg(create_model(n, num_classes=0)).family for n in list_models("*micro")}
    assert families == {"deit", "convit", "cvt", "spvit"}


def test_unknown_model_suggests_close_names() -> None:
    with pytest.raises(VitcError, match=r"did you mean.*convit_tiny"):
        create_model("convit_tiyn")


def test_unknown_override_names_the_accepted_ones() -> None:
    with pytest.raises(VitcError, match=r"takes no argument widht.*embed_dim"):
        create_model("deit_micro", widht=64)


def test_impossible_shape_is_a_vitc_error() -> None:
    with pytest.raises(VitcError, match="not a multiple of the patch size"):
        create_model("deit_micro", img_size=30)


def test_overrides_recorded_and_reflected_in_cfg() -> None:
    model = create_model("deit_tiny", img_size=32, patch_size=4, num_classes=7, depth=2)
    assert model.vitc_name == "deit_tiny"
    assert model.vitc_args == {"img_size": 32, "patch_size": 4, "num_classes": 7, "depth": 2}
    cfg = get_model_cfg(model)
    assert cfg.input_size == (3, 32, 32) and cfg.num_classes == 7
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)
    assert model_cfg("deit_tiny").input_size == (3, 224, 224)


@pytest.mark.parametrize(
    ("name", "params"),
    [("deit_tiny", 5_717_416), ("deit_small", 22_050_664), ("deit_base", 86_567_656)],
)
def test_deit_parameter_counts(name: str, params: int) -> None:
    from vitc.models._stats import model_stats

    assert model_stats(name)["params"] == params


def test_list_models_takes_timms_pretrained() -> None:
    """vitc.list_models(pretrained=True) raised TypeError (timm's list_models takes it): it lists the models with
    official weights vitc imports, those registered with ImageNet-1k's head, and none of the `_micro` ones."""
    import vitc

    official = vitc.list_models(pretrained=True)
    assert official == [n for n in list_models() if not n.endswith("_micro")]  # in registration order
    assert {"deit_tiny", "convit_tiny", "cvt_13", "spvit_s"} <= set(official)
    assert vitc.list_models("convit*", pretrained=True) == [n for n in official if n.startswith("convit")]
    assert list_models(pretrained=False) == list_models()
