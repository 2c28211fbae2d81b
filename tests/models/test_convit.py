"""ConViT: sizes, rel_indices, the key layout, and equality with an independent reference transcription."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vitc.errors import VitcError
from vitc.models import create_model, get_model_cfg
from vitc.models._stats import count_params, model_stats
from vitc.models.convit import GPSA, ConViT, checkpoint_filter_fn
from vitc.models.loading import load_strict

# (params exact, GMACs @224) counted on facebookresearch/convit and timm 1.0.31 (docs/models.md).
SIZES = {
    "convit_tiny": (5_710_512, 1.252),
    "convit_tiny_plus": (9_972_912, 2.131),
    "convit_small": (27_777_322, 5.747),
    "convit_small_plus": (48_979_882, 10.002),
    "convit_base": (86_540_040, 17.505),
    "convit_base_plus": (153_134_856, 30.740),
}


# ---- independent reference: a straight transcription of facebookresearch/convit `convit.py` ----


class RefGPSA(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qk = nn.Linear(dim, dim * 2, bias=False)
        self.v = nn.Linear(dim, dim, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.pos_proj = nn.Linear(3, num_heads)
        self.gating_param = nn.Parameter(torch.ones(num_heads))

    def get_rel_indices(self, num_patches: int) -> None:
        img_size = int(num_patches**0.5)
        rel_indices = torch.zeros(1, num_patches, num_patches, 3)
        ind = torch.arange(img_size).view(1, -1) - torch.arange(img_size).view(-1, 1)
        indx = ind.repeat(img_size, img_size)
        indy = ind.repeat_interleave(img_size, dim=0).repeat_interleave(img_size, dim=1)
        indd = indx**2 + indy**2
        rel_indices[:, :, :, 2] = indd.unsqueeze(0)
        rel_indices[:, :, :, 1] = indy.unsqueeze(0)
        rel_indices[:, :, :, 0] = indx.unsqueeze(0)
        self.rel_indices = rel_indices.to(self.qk.weight.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        if not hasattr(self, "rel_indices") or self.rel_indices.size(1) != N:
            self.get_rel_indices(N)
        qk = self.qk(x).reshape(B, N, 2, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k = qk[0], qk[1]
        pos_score = self.rel_indices.expand(B, -1, -1, -1)
        pos_score = self.pos_proj(pos_score).permute(0, 3, 1, 2)
        patch_score = (q @ k.transpose(-2, -1)) * self.scale
        patch_score = patch_score.softmax(dim=-1)
        pos_score = pos_score.softmax(dim=-1)
        gating = self.gating_param.view(1, -1, 1, 1)
        attn = (1.0 - torch.sigmoid(gating)) * patch_score + torch.sigmoid(gating) * pos_score
        attn /= attn.sum(dim=-1).unsqueeze(-1)
        v = self.v(x).reshape(B, N, self.num_heads, C // self.num_heads).permute(0, 2, 1, 3)
        x = (attn @ v).transpose(1, 2).reshape(B, N, C)
        return self.proj(x)


class RefMHSA(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(B, N, C))


class RefMlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class RefBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, use_gpsa: bool) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = RefGPSA(dim, num_heads) if use_gpsa else RefMHSA(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = RefMlp(dim, 4 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class RefPatchEmbed(nn.Module):
    def __init__(self, patch: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class RefVisionTransformer(nn.Module):
    def __init__(self, img: int, patch: int, dim: int, depth: int, heads: int, local_up_to_layer: int, classes: int):
        super().__init__()
        self.local_up_to_layer = local_up_to_layer
        self.patch_embed = RefPatchEmbed(patch, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, (img // patch) ** 2, dim))
        self.blocks = nn.ModuleList(RefBlock(dim, heads, i < local_up_to_layer) for i in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B = x.shape[0]
        x = self.patch_embed(x)
        cls_tokens = self.cls_token.expand(B, -1, -1)
        x = x + self.pos_embed
        for u, blk in enumerate(self.blocks):
            if u == self.local_up_to_layer:
                x = torch.cat((cls_tokens, x), dim=1)
            x = blk(x)
        return self.head(self.norm(x)[:, 0])


def official_layout(
    dim: int, heads: int, depth: int = 12, local: int = 10, grid: int = 14, classes: int = 1000, patch: int = 16
) -> list[tuple[str, tuple[int, ...]]]:
    """(key, shape) in the order of the official state_dict (facebookresearch/convit `convit.py`)."""
    keys = [("cls_token", (1, 1, dim)), ("pos_embed", (1, grid * grid, dim))]
    keys += [("patch_embed.proj.weight", (dim, 3, patch, patch)), ("patch_embed.proj.bias", (dim,))]
    for i in range(depth):
        p = f"blocks.{i}."
        keys += [(p + "norm1.weight", (dim,)), (p + "norm1.bias", (dim,))]
        if i < local:
            keys += [
                (p + "attn.gating_param", (heads,)),
                (p + "attn.qk.weight", (2 * dim, dim)),
                (p + "attn.v.weight", (dim, dim)),
                (p + "attn.proj.weight", (dim, dim)),
                (p + "attn.proj.bias", (dim,)),
                (p + "attn.pos_proj.weight", (heads, 3)),
                (p + "attn.pos_proj.bias", (heads,)),
            ]
        else:
            keys += [(p + "attn.qkv.weight", (3 * dim, dim)), (p + "attn.proj.weight", (dim, dim))]
            keys += [(p + "attn.proj.bias", (dim,))]
        keys += [(p + "norm2.weight", (dim,)), (p + "norm2.bias", (dim,))]
        keys += [(p + "mlp.fc1.weight", (4 * dim, dim)), (p + "mlp.fc1.bias", (4 * dim,))]
        keys += [(p + "mlp.fc2.weight", (dim, 4 * dim)), (p + "mlp.fc2.bias", (dim,))]
    keys += [("norm.weight", (dim,)), ("norm.bias", (dim,)), ("head.weight", (classes, dim)), ("head.bias", (classes,))]
    return keys


def _randomise_gates(model: nn.Module) -> None:
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gating_param"):
                p.copy_(torch.randn_like(p) * 2)


def _max_delta_vs_reference(model: ConViT, ref: RefVisionTransformer, img: int, batch: int) -> float:
    _randomise_gates(model)
    ref.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(batch, 3, img, img)
    with torch.no_grad():
        return (model.eval()(x) - ref.eval()(x)).abs().max().item()


# ---- tests ----


@pytest.mark.parametrize("name", list(SIZES))
def test_param_counts_and_gmacs(name: str) -> None:
    params, gmacs = SIZES[name]
    with torch.device("meta"):
        assert count_params(create_model(name)) == params
    stats = model_stats(name)
    assert stats["params"] == params
    assert stats["gmacs"] == pytest.approx(gmacs, rel=0.01)


def test_rel_indices_values_and_not_persistent() -> None:
    attn = GPSA(dim=8, num_heads=4, grid=14)
    rel = attn.rel_indices
    assert rel.shape == (1, 196, 196, 3) and rel.dtype == torch.float32

    def at(q: tuple[int, int], k: tuple[int, int]) -> list[float]:
        return rel[0, q[0] * 14 + q[1], k[0] * 14 + k[1]].tolist()

    # (row, col) pairs; channels are [dx, dy, d²] with dx = col(k) − col(q).
    assert at((0, 0), (0, 1)) == [1, 0, 1]
    assert at((0, 0), (1, 0)) == [0, 1, 1]
    assert at((1, 1), (0, 0)) == [-1, -1, 2]
    assert at((1, 6), (3, 8)) == [2, 2, 8]
    ref = RefGPSA(8, 4)
    ref.get_rel_indices(196)
    assert torch.equal(rel, ref.rel_indices)
    assert "rel_indices" not in attn.state_dict()
    assert attn.to(torch.float64).rel_indices.dtype == torch.float64  # follows .to()


def test_matches_reference_small() -> None:
    torch.manual_seed(0)
    model = ConViT(img_size=32, patch_size=4, embed_dim=48, depth=4, num_heads=4, local_up_to_layer=3, num_classes=7)
    ref = RefVisionTransformer(32, 4, 48, 4, 4, 3, 7)
    assert _max_delta_vs_reference(model, ref, img=32, batch=3) <= 1e-5


def test_matches_reference_convit_tiny() -> None:
    torch.manual_seed(0)
    model = create_model("convit_tiny")
    ref = RefVisionTransformer(224, 16, 192, 12, 4, 10, 1000)
    assert [k for k, _ in ref.state_dict().items()] == list(model.state_dict())
    assert _max_delta_vs_reference(model, ref, img=224, batch=1) <= 1e-5


def test_state_dict_layout_is_official() -> None:
    with torch.device("meta"):
        model = create_model("convit_tiny")
    expected = official_layout(192, 4)
    assert len(expected) == 180
    assert [(k, tuple(v.shape)) for k, v in model.state_dict().items()] == expected
    small = create_model("convit_micro")  # a file in the official layout loads strictly
    layout = official_layout(96, 4, depth=6, local=4, grid=8, classes=10, patch=4)
    state = {k: torch.randn(shape) for k, shape in layout}
    load_strict(small, state)
    assert torch.equal(small.blocks[0].attn.qk.weight, state["blocks.0.attn.qk.weight"])


def test_local_init_convit_small_is_a_3x3_kernel() -> None:
    torch.manual_seed(0)
    model = create_model("convit_small", img_size=112)  # 7×7 grid
    attn = model.blocks[0].attn
    assert torch.equal(attn.v.weight, torch.eye(432))
    assert torch.equal(attn.gating_param, torch.ones(9))
    pos = attn.positional_attention()  # (9, 49, 49)
    centre = 3 * 7 + 3
    peaks = pos[:, centre].argmax(-1)
    offsets = [(int(m % 7) - 3, int(m // 7) - 3) for m in peaks]  # (dx, dy)
    assert offsets == [(h // 3 - 1, h % 3 - 1) for h in range(9)]  # head p = h1 + 3·h2 → (h2−1, h1−1)
    assert set(offsets) == {(dx, dy) for dx in (-1, 0, 1) for dy in (-1, 0, 1)}
    peak = pos[:, centre].max(-1).values
    assert torch.allclose(peak, torch.full((9,), 0.318), atol=1e-3)
    x = torch.randn(2, 49, 432)
    amap = attn.attention_map(x)
    assert amap.shape == (2, 9, 49, 49)
    assert torch.allclose(amap.sum(-1), torch.ones(2, 9, 49))


def test_micro_forward_and_config() -> None:
    model = create_model("convit_micro")
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    cfg = get_model_cfg(model)
    assert cfg.input_size == (3, 32, 32) and cfg.num_classes == 10 and cfg.crop_pct == 1.0
    assert cfg.mean == (0.5, 0.5, 0.5)
    nwd = model.no_weight_decay()
    assert nwd == {"pos_embed", "cls_token"} | {f"blocks.{i}.attn.gating_param" for i in range(4)}
    assert nwd <= set(dict(model.named_parameters()))


def test_rejects_bad_shapes() -> None:
    with pytest.raises(VitcError, match="square token grid"):
        create_model("convit_micro", img_size=(32, 48))
    with pytest.raises(VitcError, match="local_up_to_layer"):
        create_model("convit_micro", local_up_to_layer=7)


def test_all_gpsa_still_gets_a_class_token() -> None:
    # pooling the class token that no block attends to is refused (tests/models/test_model_args.py)
    model = create_model("convit_micro", depth=2, local_up_to_layer=2, global_pool="avg")
    assert model.forward_features(torch.randn(1, 3, 32, 32)).shape == (1, 65, 96)


def test_checkpoint_filter_resamples_and_drops_rel_indices() -> None:
    torch.manual_seed(0)
    source = create_model("convit_tiny")  # 14×14 grid
    state = dict(source.state_dict())
    state["blocks.0.attn.rel_indices"] = source.blocks[0].attn.rel_indices  # as some caches saved it
    target = create_model("convit_tiny", img_size=112)  # 7×7 grid
    out = checkpoint_filter_fn(state, target)
    assert not any(k.endswith("rel_indices") for k in out)
    assert out["pos_embed"].shape == (1, 49, 192)
    load_strict(target, out)
    const = {**out, "pos_embed": torch.full((1, 196, 192), 0.25)}
    assert torch.allclose(checkpoint_filter_fn(const, target)["pos_embed"], torch.tensor(0.25), atol=1e-6)
    same = checkpoint_filter_fn(dict(source.state_dict()), source)
    assert torch.equal(same["pos_embed"], source.pos_embed)  # same grid: untouched
