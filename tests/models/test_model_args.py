"""Constructor arguments that build no working model are one line naming the argument and what it may be, from
create_model (a VitcError), the class itself (a ValueError, as a wrong image size is) and `vitc train`, before
any data is read. Before, torch built most of them silently (depth 0: no block; a dropout of 1; a drop-path
rate of 1: NaN logits; a class token no block attends to: the same logits for every image) and failed on the
others in the first forward."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from vitc.cli.main import app
from vitc.errors import VitcError
from vitc.models import create_model
from vitc.models.convit import ConViT
from vitc.models.cvt import CvT
from vitc.models.deit import DeiT

REFUSED = [
    ("deit_micro", {"depth": 0}, "depth must be at least 1 (the number of blocks), got 0"),
    ("deit_micro", {"embed_dim": 90}, "embed_dim=90 does not split into num_heads=4 heads: the width must be a "
     "multiple of the heads (e.g. 88 or 92)"),
    ("deit_micro", {"drop_rate": 1.0}, "drop_rate must be in [0, 1)"),
    ("deit_micro", {"attn_drop_rate": 1.0}, "attn_drop_rate must be in [0, 1)"),
    ("deit_micro", {"drop_path_rate": 1.0}, "drop_path_rate must be in [0, 1)"),
    ("deit_micro", {"mlp_ratio": 0.0}, "mlp_ratio must be positive"),
    ("deit_micro", {"mlp_ratio": 0.001}, "mlp_ratio=0.001 leaves the embed_dim=96 blocks' MLPs no hidden unit"),
    ("deit_micro", {"img_size": 30}, "image size 30x30 is not a multiple of the patch size 4: pass img_size "
     "(data.image_size in training) as a multiple of 4, e.g. 28 or 32"),
    ("convit_micro", {"depth": 0}, "depth must be at least 1"),
    ("convit_micro", {"local_up_to_layer": 7}, "local_up_to_layer must be in 0..depth=6, got 7"),
    ("convit_micro", {"local_up_to_layer": 6}, "local_up_to_layer=6 (= depth) inserts the class token after the "
     "last block, where no block attends to it: global_pool='token' would classify a constant"),
    ("convit_micro", {"drop_rate": 1.0}, "drop_rate must be in [0, 1)"),
    ("spvit_micro", {"skip_lam": 0.0}, "skip_lam must be positive"),
    ("spvit_micro", {"stem_chans": 0}, "stem_chans='0': must be between 1 and"),
    ("spvit_micro", {"local_up_to_layer": 6, "aux_head": False}, "would classify a constant"),
    ("spvit_micro", {"mlp_ratio": 0.0}, "mlp_ratio must be positive"),
    ("cvt_micro", {"depths": (1, 1, 0)}, "depths[2] must be at least 1 (the number of blocks), got 0"),
    ("cvt_micro", {"embed_dims": (32, 64, 95)}, "embed_dims[2]=95 does not split into num_heads[2]=3 heads"),
    ("cvt_micro", {"drop_path_rate": 1.0}, "drop_path_rate[2] must be in [0, 1)"),
    ("cvt_micro", {"patch_strides": (0, 2, 2)}, "patch_strides='0': must be between 1 and"),
    ("cvt_micro", {"patch_sizes": (0, 3, 3)}, "patch_sizes='0': must be between 1 and"),
    ("cvt_micro", {"patch_sizes": (3, 3, 30)}, "img_size 32x32 is too small for CvT's stage 2: its 8x8 map, padded "
     "by patch_paddings[2]=1, is smaller than patch_sizes[2]=30; the smallest img_size these stages take is 109"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "args", "message"), REFUSED, ids=[f"{n}-{'-'.join(a)}" for n, a, _ in REFUSED])
def test_create_model_refuses_what_builds_no_working_model(name: str, args: dict[str, Any], message: str) -> None:
    with pytest.raises(VitcError) as caught:
        create_model(name, **args)
    assert message in str(caught.value) and "\n" not in str(caught.value), str(caught.value)


def test_the_classes_refuse_them_as_a_wrong_size_is_refused() -> None:
    """A ValueError from the class itself, as PatchEmbed's for an image size off the patch grid."""
    with pytest.raises(ValueError, match="depth must be at least 1"):
        DeiT(depth=0)
    with pytest.raises(ValueError, match="drop_path_rate must be in"):
        ConViT(drop_path_rate=1.0)
    with pytest.raises(ValueError, match=r"depths\[2\] must be at least 1"):
        CvT(depths=(1, 2, 0))


ACCEPTED = [
    ("convit_micro", {"local_up_to_layer": 0}),  # no GPSA: a plain ViT, as in the references
    ("convit_micro", {"local_up_to_layer": 6, "global_pool": "avg"}),  # the patch tokens are read, not the class token
    ("spvit_micro", {"local_up_to_layer": 6}),  # its aux_head reads the patch tokens
    ("cvt_micro", {"depths": (0, 1, 1)}),  # a stage before the last may be its convolutional embedding alone
    ("cvt_micro", {"img_size": 1}),  # CvT takes any size its stages can shrink
    ("deit_micro", {"drop_path_rate": 0.99, "mlp_ratio": 0.02}),  # 1 hidden unit
]


@pytest.mark.parametrize(("name", "args"), ACCEPTED, ids=[f"{n}-{'-'.join(a)}" for n, a in ACCEPTED])
def test_what_the_references_build_and_works_is_accepted(name: str, args: dict[str, Any]) -> None:
    model = create_model(name, **args).eval()
    images = torch.randn(2, *model.vitc_cfg.input_size)
    with torch.no_grad():
        logits = model(images)
    assert torch.isfinite(logits).all() and not torch.equal(logits[0], logits[1])  # the images are told apart


def test_train_refuses_them_in_one_line_before_the_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`vitc train --set model.args.depth=0` trained a model of no block without a word."""
    from vitc.train import setup

    def no_data(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the data was opened")

    monkeypatch.setattr(setup, "open_feed", no_data)
    runs = ["--set", f"run.out_dir={tmp_path}", "--model", "deit_micro", "--epochs", "1", "-q"]
    for setting, message in (
        ("model.args.depth=0", "error: cannot build DeiT: depth must be at least 1 (the number of blocks), got 0"),
        ("model.args.drop_rate=1", "error: cannot build DeiT: drop_rate must be in [0, 1)"),
        ("model.args.drop_path_rate=0.5", "error: model.args.drop_path_rate=0.5 is not read: training sets the "
         "model's stochastic depth from model.drop_path_rate (--set model.drop_path_rate=RATE)"),
    ):  # fmt: skip
        result = CliRunner().invoke(app, ["train", *runs, "--set", setting])
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
        assert result.output.strip().startswith(message) and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "deit_micro").exists()  # no half-made run folder
