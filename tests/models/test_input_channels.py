"""RGB weights into a model of another channel count: the first convolution adapted as timm's
adapt_input_conv does, on every path that loads weights (import, the Python API, fine-tuning)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import vitc
from vitc.checkpoint import write_checkpoint
from vitc.errors import VitcError
from vitc.importers import convert_file
from vitc.models import create_model
from vitc.models.loading import adapt_input_conv
from vitc.pretrained import load_pretrained, read_pretrained

SMALL = {"deit_micro": {"depth": 2}, "convit_micro": {"depth": 2, "local_up_to_layer": 1}, "cvt_micro": {}}
SMALL["spvit_micro"] = {"depth": 2, "local_up_to_layer": 1}
FIRST_CONV = {
    "deit_micro": "patch_embed.proj",
    "convit_micro": "patch_embed.proj",
    "cvt_micro": "stage0.patch_embed.proj",
    "spvit_micro": "patch_embed.conv1",
}


def _rgb_weights(tmp_path: Path, name: str) -> tuple[Path, torch.nn.Module]:
    """A foreign .pth of `name` (timm's layout: a bare state dict) and the RGB model it came from."""
    torch.manual_seed(0)
    model = create_model(name, **SMALL[name]).eval()
    path = tmp_path / f"{name}.pth"
    torch.save(model.state_dict(), path)
    return path, model


def _timm_formula(in_chans: int, weight: torch.Tensor) -> torch.Tensor:
    """timm 1.0's adapt_input_conv for 3-channel weights, written out as its source has it."""
    conv_type = weight.dtype
    weight = weight.float()
    if in_chans == 1:
        weight = weight.sum(dim=1, keepdim=True)
    else:
        repeat = math.ceil(in_chans / 3)
        weight = weight.repeat(1, repeat, 1, 1)[:, :in_chans, :, :]
        weight *= 3 / float(in_chans)
    return weight.to(conv_type)


@pytest.mark.parametrize("in_chans", [1, 2, 4, 7])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_the_rule_is_timms(in_chans: int, dtype: torch.dtype) -> None:
    weight = torch.randn(8, 3, 4, 4).to(dtype)
    adapted = adapt_input_conv(in_chans, weight)
    assert adapted.shape == (8, in_chans, 4, 4) and adapted.dtype == dtype
    assert torch.equal(adapted, _timm_formula(in_chans, weight))


@pytest.mark.parametrize("name", list(SMALL))
def test_a_grey_image_gives_what_the_rgb_model_gives_it_replicated(tmp_path: Path, name: str) -> None:
    """The in_chans=1 model on a grey image equals the RGB model on that image in all three channels
    (summing the kernels over the channels is exactly that), through import and the Python API."""
    source, rgb = _rgb_weights(tmp_path, name)
    said: list[str] = []
    grey = convert_file(source, name, say=said.append, in_chans=1, **SMALL[name])[0].eval()
    assert said == [
        f"{name}.pth: {FIRST_CONV[name]}.weight: 3-channel (RGB) weights adapted to in_chans=1, summed over "
        "their channels (as timm's adapt_input_conv)"
    ]
    from_api = vitc.load_model(source, name, in_chans=1, **SMALL[name])
    ours = vitc.load_model(write_checkpoint(tmp_path / "rgb.safetensors", rgb), in_chans=1)  # a vitc checkpoint too
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        expected = rgb(x.expand(-1, 3, -1, -1))
        for model in (grey, from_api, ours):
            torch.testing.assert_close(model(x), expected, rtol=0, atol=1e-5)
            assert model.vitc_cfg.input_size == (1, 32, 32)
            assert model.vitc_cfg.mean == (0.5,) and model.vitc_cfg.std == (0.5,)  # the RGB values' average


def test_other_counts_follow_timms_rule_and_the_preprocessing_follows(tmp_path: Path) -> None:
    source, rgb = _rgb_weights(tmp_path, "deit_micro")
    for in_chans in (2, 4):
        model = vitc.load_model(source, "deit_micro", in_chans=in_chans, depth=2)
        expected = _timm_formula(in_chans, rgb.patch_embed.proj.weight.detach())
        assert torch.equal(model.patch_embed.proj.weight, expected)
        assert model.vitc_cfg.input_size[0] == len(model.vitc_cfg.mean) == len(model.vitc_cfg.std) == in_chans


def test_weights_of_another_count_than_three_are_refused(tmp_path: Path) -> None:
    """timm adapts RGB weights only: grey weights into an RGB model (or a 4-channel model's into a grey one)
    are refused in one line naming the count to build, not with the key table."""
    torch.manual_seed(0)
    grey = tmp_path / "grey.pth"
    torch.save(create_model("deit_micro", depth=2, in_chans=1).state_dict(), grey)
    four = write_checkpoint(tmp_path / "four.safetensors", create_model("deit_micro", depth=2, in_chans=4))
    refused = [
        (lambda: convert_file(grey, "deit_micro", depth=2), "is for 1 input channels, the model's for 3", 1),
        (lambda: vitc.load_model(four, in_chans=1), "is for 4 input channels, the model's for 1", 4),
        (lambda: load_pretrained(create_model("deit_micro", depth=2), read_pretrained(grey, "deit_micro")), "", 1),
    ]
    for load, message, chans in refused:
        with pytest.raises(VitcError, match=rf"proj\.weight {message}.*build the model with in_chans={chans}"):
            load()


def test_fine_tuning_adapts_and_says_so(tmp_path: Path) -> None:
    source, rgb = _rgb_weights(tmp_path, "spvit_micro")
    model = create_model("spvit_micro", in_chans=1, **SMALL["spvit_micro"])
    note = load_pretrained(model, read_pretrained(source, "spvit_micro"))
    assert note.endswith(
        "and its classifier; patch_embed.conv1.weight: 3-channel (RGB) weights adapted to in_chans=1, "
        "summed over their channels (as timm's adapt_input_conv)"
    )
    assert torch.equal(model.patch_embed.conv1.weight, rgb.patch_embed.conv1.weight.sum(dim=1, keepdim=True))


def test_the_commands_take_grey_or_rgb_only(tmp_path: Path) -> None:
    """`vitc import --set in_chans=4` wrote a checkpoint every command then refused ("mean has 4 values but the
    images have 1 channels" from predict: an RGB photo reduced to luma); the Python API keeps timm's any count."""
    import numpy as np
    from typer.testing import CliRunner

    from vitc.cli.main import app
    from vitc.data.images import to_channels

    source, _ = _rgb_weights(tmp_path, "deit_micro")
    args = ["import", str(source), "-m", "deit_micro", "-o", str(tmp_path / "four"), "--set", "depth=2"]
    result = CliRunner().invoke(app, [*args, "--set", "in_chans=4"])
    assert result.exit_code == 2
    assert "--set in_chans=4: vitc's commands read images as grey (1) or RGB (3)" in " ".join(result.output.split())
    assert not (tmp_path / "four").exists()
    with pytest.raises(VitcError, match=r"vitc reads images as grey .* this model takes 4 channels"):
        to_channels(np.zeros((1, 3, 4, 4), dtype=np.uint8), 4)
