"""DeiT: the official layout and logits, against an independent transcription of the reference code.

facebookresearch/deit `models.py` builds DeiT as timm's `VisionTransformer` (patch 16, mlp_ratio 4,
qkv_bias=True, LayerNorm eps 1e-6) and releases checkpoints wrapped as {"model": state_dict}. The
reference below is that VisionTransformer written out from timm's code (the explicit attention, not
a fused kernel); a file in its layout goes through `vitc import` and must give the same logits.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from tests.models.test_convit import RefMHSA, RefMlp, RefPatchEmbed
from vitc.checkpoint import read_checkpoint
from vitc.cli.main import app
from vitc.models import create_model
from vitc.models._stats import count_params

# ---- independent reference: timm's VisionTransformer as facebookresearch/deit instantiates it ----
# (the MLP, patch embedding and attention maths are the ConViT test's transcription of the same timm code)


class RefAttention(RefMHSA):
    """timm's Attention: ConViT's MHSA blocks are the same code with qkv_bias=False; DeiT has the bias."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__(dim, num_heads)
        self.qkv = nn.Linear(dim, dim * 3, bias=True)


class RefBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = RefAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = RefMlp(dim, 4 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class RefVisionTransformer(nn.Module):
    def __init__(self, img: int, patch: int, dim: int, depth: int, heads: int, classes: int) -> None:
        super().__init__()
        self.patch_embed = RefPatchEmbed(patch, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, (img // patch) ** 2 + 1, dim))
        self.blocks = nn.ModuleList(RefBlock(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        x = x + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.norm(x)[:, 0])


def official_layout(
    dim: int, depth: int = 12, grid: int = 14, classes: int = 1000, patch: int = 16
) -> list[tuple[str, tuple[int, ...]]]:
    """(key, shape) in the order of the official state_dict (timm VisionTransformer registration order)."""
    keys = [("cls_token", (1, 1, dim)), ("pos_embed", (1, grid * grid + 1, dim))]
    keys += [("patch_embed.proj.weight", (dim, 3, patch, patch)), ("patch_embed.proj.bias", (dim,))]
    for i in range(depth):
        p = f"blocks.{i}."
        keys += [(p + "norm1.weight", (dim,)), (p + "norm1.bias", (dim,))]
        keys += [(p + "attn.qkv.weight", (3 * dim, dim)), (p + "attn.qkv.bias", (3 * dim,))]
        keys += [(p + "attn.proj.weight", (dim, dim)), (p + "attn.proj.bias", (dim,))]
        keys += [(p + "norm2.weight", (dim,)), (p + "norm2.bias", (dim,))]
        keys += [(p + "mlp.fc1.weight", (4 * dim, dim)), (p + "mlp.fc1.bias", (4 * dim,))]
        keys += [(p + "mlp.fc2.weight", (dim, 4 * dim)), (p + "mlp.fc2.bias", (dim,))]
    keys += [("norm.weight", (dim,)), ("norm.bias", (dim,)), ("head.weight", (classes, dim)), ("head.bias", (classes,))]
    return keys


def _randomised(model: nn.Module) -> nn.Module:
    """Every parameter random (LayerNorm scales around 1): a zero bias or unit scale cannot hide a wrong key."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(
                1.0 + 0.1 * torch.randn_like(p)
                if "norm" in name and name.endswith("weight")
                else torch.randn_like(p) * 0.1
            )
    return model.eval()


# ---- tests ----


def test_state_dict_layout_is_official() -> None:
    expected = official_layout(192)
    assert len(expected) == 152
    with torch.device("meta"):
        model = create_model("deit_tiny")
        ref = RefVisionTransformer(224, 16, 192, 12, 3, 1000)
    assert [(k, tuple(v.shape)) for k, v in ref.state_dict().items()] == expected
    assert [(k, tuple(v.shape)) for k, v in model.state_dict().items()] == expected
    assert count_params(model) == 5_717_416  # DeiT-Ti, deit_tiny_patch16_224


def test_official_file_imports_to_the_reference_logits(tmp_path: Path) -> None:
    torch.manual_seed(0)
    ref = _randomised(RefVisionTransformer(img=64, patch=16, dim=192, depth=2, heads=3, classes=1000))
    source = tmp_path / "deit_tiny_patch16_224-a1311bcf.pth"
    torch.save({"model": ref.state_dict(), "epoch": 299}, source)  # the official release wraps under "model"
    out = tmp_path / "out"
    args = ["import", str(source), "-m", "deit_tiny", "-o", str(out), "--set", "depth=2", "--set", "img_size=64"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    model, _meta = read_checkpoint(out / "model.safetensors")
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        want, got = ref(x), model.eval()(x)
    assert want.abs().max() > 1.0  # logits with something in them
    assert (got - want).abs().max().item() <= 1e-5


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """The filter of the models this module registers: their files nest everything under `backbone.`."""
    return {k.removeprefix("backbone."): v for k, v in state_dict.items()}


def test_the_filter_comes_from_the_module_that_registered_the_model(monkeypatch) -> None:
    """A family living outside vitc.models (a plugin, a fork) brings its own checkpoint_filter_fn."""
    from vitc.importers import convert_state_dict
    from vitc.models import _registry
    from vitc.models.deit import DeiT

    def deit_outside(**kwargs: object) -> DeiT:
        defaults = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2, "num_classes": 3}
        return _registry.build_model(DeiT, defaults, kwargs)

    entry = _registry._Entry("deit_outside", deit_outside, _registry.ModelCfg(family="outside"))
    monkeypatch.setitem(_registry._ENTRIES, "deit_outside", entry)
    model = create_model("deit_outside")
    state = {f"backbone.{k}": v for k, v in model.state_dict().items()}
    assert list(convert_state_dict(state, model)) == list(model.state_dict())


def test_a_distilled_file_imports_without_its_distillation_slot(tmp_path: Path) -> None:
    """deit_*_distilled files carry dist_token, head_dist and a pos_embed of [cls, dist, grid]: the
    distillation parts are dropped and the cls and grid positions kept exactly (the slot broke the grid)."""
    torch.manual_seed(0)
    ref = _randomised(RefVisionTransformer(img=64, patch=16, dim=192, depth=2, heads=3, classes=1000))
    state = ref.state_dict()
    dist_slot = torch.randn(1, 1, 192)
    state["pos_embed"] = torch.cat([state["pos_embed"][:, :1], dist_slot, state["pos_embed"][:, 1:]], dim=1)
    state["dist_token"] = torch.randn(1, 1, 192)
    state["head_dist.weight"], state["head_dist.bias"] = torch.randn(1000, 192), torch.randn(1000)
    source = tmp_path / "deit_tiny_distilled_patch16_224.pth"
    torch.save({"model": state}, source)
    out = tmp_path / "out"
    args = ["import", str(source), "-m", "deit_tiny", "-o", str(out), "--set", "depth=2", "--set", "img_size=64"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    model, _meta = read_checkpoint(out / "model.safetensors")
    assert torch.equal(model.pos_embed, ref.state_dict()["pos_embed"])


def test_the_final_norm_must_sit_where_the_weights_have_it(tmp_path: Path) -> None:
    """timm's ViT built with global_pool='avg' keeps its final LayerNorm after the pooling (fc_norm.*): such
    weights import with global_pool='avg', and weights normed before the pooling (norm.*) into that model
    are told fc_norm=False, in one line each rather than a key table."""
    from vitc.errors import VitcError
    from vitc.importers import convert_file

    torch.manual_seed(0)
    averaged = create_model("deit_micro", depth=1, global_pool="avg").eval()
    token = create_model("deit_micro", depth=1).eval()
    timm_avg, timm_token = tmp_path / "avg.pth", tmp_path / "token.pth"
    torch.save(averaged.state_dict(), timm_avg)
    torch.save(token.state_dict(), timm_token)
    x = torch.randn(2, 3, 32, 32)
    model = convert_file(timm_avg, "deit_micro", depth=1, global_pool="avg")[0].eval()
    assert torch.equal(model(x), averaged(x))
    pooled_normed = convert_file(timm_token, "deit_micro", depth=1, global_pool="avg", fc_norm=False)[0].eval()
    with torch.no_grad():
        assert torch.equal(pooled_normed(x), token.head(token.forward_features(x)[:, 1:].mean(dim=1)))
    refusals = [
        (timm_avg, {}, r"fc_norm, after an average pooling, .*: pass global_pool='avg'\)$"),
        (timm_token, {"global_pool": "avg"}, r"norm, before the pooling, .*: pass fc_norm=False to average"),
    ]
    for source, args, message in refusals:
        with pytest.raises(VitcError, match=message):
            convert_file(source, "deit_micro", depth=1, **args)
