"""SP-ViT: counts, SP-SA maths, an independent transcription of the official forward, keys, loading."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

import vitc
from vitc.errors import VitcError
from vitc.models import create_model
from vitc.models._stats import count_params, model_stats
from vitc.models.layers import Attention
from vitc.models.loading import load_strict
from vitc.models.spvit import SPSA, SPViT, checkpoint_filter_fn

# --- An independent transcription of the official SP_SA + LV-ViT forward (ZhouYuxuanYX/SP-ViT) ---


def official_rel_indices(num_patches: int) -> torch.Tensor:
    size = int(num_patches**0.5)
    ind = torch.arange(size).view(1, -1) - torch.arange(size).view(-1, 1)
    indx = ind.repeat(size, size)
    indy = ind.repeat_interleave(size, dim=0).repeat_interleave(size, dim=1)
    rel = torch.zeros(1, num_patches, num_patches, 2)
    rel[:, :, :, 0], rel[:, :, :, 1] = indx, indy
    return rel


def official_sp_sa(sd: dict[str, torch.Tensor], p: str, x: torch.Tensor, heads: int) -> torch.Tensor:
    b, n, c = x.shape
    qk = (x @ sd[p + "qk.weight"].T).reshape(b, n, 2, heads, c // heads).permute(2, 0, 3, 1, 4)
    q, k = qk[0], qk[1]
    hid = torch.relu(official_rel_indices(n) @ sd[p + "w1.weight"].T + sd[p + "w1.bias"])  # 1,N,N,C
    hid = hid.reshape(1, n, n, heads, c // heads)
    pos = (hid * sd[p + "w2"].view(heads, c // heads)).sum(-1) + sd[p + "b2"]  # 1,N,N,H
    attn = ((q @ k.transpose(-2, -1)) * (c // heads) ** -0.5 * pos.permute(0, 3, 1, 2)).softmax(-1)
    v = (x @ sd[p + "v.weight"].T).reshape(b, n, heads, c // heads).permute(0, 2, 1, 3)
    out = (attn @ v).transpose(1, 2).reshape(b, n, c)
    return out @ sd[p + "proj.weight"].T + sd[p + "proj.bias"]


def official_attention(sd: dict[str, torch.Tensor], p: str, x: torch.Tensor, heads: int) -> torch.Tensor:
    b, n, c = x.shape
    qkv = (x @ sd[p + "qkv.weight"].T).reshape(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0] * (c // heads) ** -0.5, qkv[1], qkv[2]
    out = ((q @ k.transpose(-2, -1)).softmax(-1) @ v).transpose(1, 2).reshape(b, n, c)
    return out @ sd[p + "proj.weight"].T + sd[p + "proj.bias"]


def official_pos_cnn(sd: dict[str, torch.Tensor], p: str, x: torch.Tensor) -> torch.Tensor:
    b, n, c = x.shape
    conv = lambda f: nn.functional.conv2d(f, sd[p + "proj.0.weight"], sd[p + "proj.0.bias"], padding=1, groups=c)  # noqa: E731
    if n % 2 == 1:  # the release's class-token test
        cls, feat = x[:, :1], x[:, 1:]
        s = int(math.sqrt(n - 1))
        f = feat.transpose(1, 2).reshape(b, c, s, s)
        return torch.cat((cls, (conv(f) + f).flatten(2).transpose(1, 2)), dim=1)
    s = int(math.sqrt(n))
    f = x.transpose(1, 2).reshape(b, c, s, s)
    return (conv(f) + f).flatten(2).transpose(1, 2)


def official_forward(sd: dict[str, torch.Tensor], x: torch.Tensor, heads: int, depth: int, lul: int, lam: float):
    ln = lambda t, p: nn.functional.layer_norm(t, t.shape[-1:], sd[p + ".weight"], sd[p + ".bias"], 1e-5)  # noqa: E731

    def bn(t: torch.Tensor, p: str) -> torch.Tensor:
        w, bias, mean, var = (sd[f"{p}.{k}"] for k in ("weight", "bias", "running_mean", "running_var"))
        return torch.relu(nn.functional.batch_norm(t, mean, var, w, bias, False, 0.1, 1e-5))

    pe = "patch_embed."
    x = bn(nn.functional.conv2d(x, sd[pe + "conv1.weight"], stride=2, padding=3), pe + "bn1")
    x = bn(nn.functional.conv2d(x, sd[pe + "conv2.weight"], padding=1), pe + "bn2")
    x = bn(nn.functional.conv2d(x, sd[pe + "conv3.weight"], padding=1), pe + "bn3")
    w = sd[pe + "proj.weight"]
    x = nn.functional.conv2d(x, w, sd[pe + "proj.bias"], stride=w.shape[-1]).flatten(2).transpose(1, 2)
    x = x + sd["pos_embed"]
    cls = sd["cls_token"].expand(x.shape[0], -1, -1)
    for u in range(depth):
        if u == lul:
            x = torch.cat((cls, x), dim=1)
        p = f"blocks.{u}."
        attn = official_sp_sa if u < lul else official_attention
        x = x + attn(sd, p + "attn.", ln(x, p + "norm1"), heads) / lam
        h = nn.functional.gelu(ln(x, p + "norm2") @ sd[p + "mlp.fc1.weight"].T + sd[p + "mlp.fc1.bias"])
        x = x + (h @ sd[p + "mlp.fc2.weight"].T + sd[p + "mlp.fc2.bias"]) / lam
        x = official_pos_cnn(sd, p + "pos_block.", x)
    x = ln(x, "norm")
    x_cls = x[:, 0] @ sd["head.weight"].T + sd["head.bias"]
    x_aux = x[:, 1:] @ sd["aux_head.weight"].T + sd["aux_head.bias"]
    return x_cls + 0.5 * x_aux.max(1)[0]


def official_resize_pos_embed(posemb: torch.Tensor, tokens_new: int) -> torch.Tensor:
    """tlt/utils/utils.py `load_state_dict`'s resize (LV-ViT's TokenLabeling, which SP-ViT's main.py imports):
    resize_pos_embed_without_cls for a square token count, else resize_pos_embed (the first token kept)."""
    with_cls = int(math.sqrt(posemb.shape[1])) ** 2 != posemb.shape[1]
    posemb_tok, posemb_grid = (posemb[:, :1], posemb[0, 1:]) if with_cls else (None, posemb[0])
    gs_old, gs_new = int(math.sqrt(len(posemb_grid))), int(math.sqrt(tokens_new - with_cls))
    posemb_grid = posemb_grid.reshape(1, gs_old, gs_old, -1).permute(0, 3, 1, 2)
    posemb_grid = nn.functional.interpolate(posemb_grid, size=(gs_new, gs_new), mode="bicubic")
    posemb_grid = posemb_grid.permute(0, 2, 3, 1).reshape(1, gs_new * gs_new, -1)
    return posemb_grid if posemb_tok is None else torch.cat([posemb_tok, posemb_grid], dim=1)


# --- helpers ---


def small_model(img_size: int = 32, **kw: object) -> SPViT:
    args = dict(img_size=img_size, patch_size=4, num_classes=10, embed_dim=64, depth=4, num_heads=4)
    args.update(local_up_to_layer=2, stem_chans=16, skip_lam=2.0)
    return SPViT(**{**args, **kw})  # type: ignore[arg-type]


def randomise(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial prior (w2 ≠ 0), BN statistics and conv biases, so that every path matters."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith(("w2", "b2", "w1.weight", "w1.bias", "running_mean", "bn1.bias", "pos_block.proj.0.bias")):
                t.copy_(torch.randn(t.shape, generator=gen) * 0.5)
            elif name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5)


# --- counts ---


def test_param_counts_and_macs() -> None:
    s, m, large = model_stats("spvit_s"), model_stats("spvit_m"), model_stats("spvit_l")
    assert s["params"] == 26_234_468
    assert m["params"] == 55_952_992
    dim, heads = 768, 12
    assert large["params"] == 150_205_520 + 22 * (4 * dim + heads) == 150_273_368
    # The release's formulation evaluates the prior MLP on all N² offset pairs (7.16 / 13.26 GMACs,
    # counted on the official SP-ViT code); the default fused SP-SA on the (2S−1)² distinct offsets only.
    assert model_stats("spvit_s", attn_impl="reference")["gmacs"] == pytest.approx(7.16, rel=0.02)
    assert model_stats("spvit_m", attn_impl="reference")["gmacs"] == pytest.approx(13.26, rel=0.02)
    assert s["gmacs"] == pytest.approx(6.55, rel=0.01)
    assert m["gmacs"] == pytest.approx(12.65, rel=0.01)


def test_spsa_extra_params_per_layer() -> None:
    with torch.device("meta"):
        spsa, plain = SPSA(384, 6, grid=14), Attention(384, 6, qkv_bias=False)
    assert count_params(spsa) - count_params(plain) == 4 * 384 + 6 == 1542


# --- SP-SA maths ---


@pytest.mark.parametrize("scale_queries", [True, False])
def test_spsa_is_plain_attention_at_init(scale_queries: bool) -> None:
    torch.manual_seed(0)
    spsa = SPSA(64, 4, grid=5)
    nn.init.trunc_normal_(spsa.w1.weight, std=0.02)
    assert torch.equal(spsa.spatial_prior(), torch.ones(4, 25, 25))
    plain = Attention(64, 4, qkv_bias=False, scale_queries=scale_queries)
    with torch.no_grad():
        plain.qkv.weight.copy_(torch.cat((spsa.qk.weight, spsa.v.weight)))
        plain.proj.load_state_dict(spsa.proj.state_dict())
    x = torch.randn(2, 25, 64)
    assert (spsa(x) - plain(x)).abs().max() <= 1e-6
    assert (spsa.attention_map(x) - plain.attention_map(x)).abs().max() <= 1e-6


def test_spsa_attention_matches_formula() -> None:
    torch.manual_seed(1)
    dim, heads, grid = 48, 3, 4
    spsa = SPSA(dim, heads, grid=grid)
    randomise(spsa)
    x = torch.randn(2, grid * grid, dim)
    # The prior from its definition, one (query, key) pair at a time for a few pairs.
    n = grid * grid
    q_pos = torch.tensor([(i % grid, i // grid) for i in range(n)], dtype=torch.float32)  # (col, row)
    rel = q_pos[None, :, :] - q_pos[:, None, :]  # r_ij = pos_j − pos_i
    w1, b1 = spsa.w1.weight.view(heads, dim // heads, 2), spsa.w1.bias.view(heads, dim // heads)
    w2 = spsa.w2.view(heads, dim // heads)
    sp = torch.stack([(torch.relu(rel @ w1[h].T + b1[h]) @ w2[h]) + spsa.b2[h] for h in range(heads)])
    assert (spsa.spatial_prior() - sp).abs().max() <= 1e-6
    q, k = spsa.qk(x).view(2, n, 2, heads, dim // heads).unbind(2)
    logits = torch.einsum("bihd,bjhd->bhij", q, k) * (dim // heads) ** -0.5
    expected = (logits * sp).softmax(-1)
    assert (spsa.attention_map(x) - expected).abs().max() <= 1e-6
    assert spsa.rel_indices.shape == (1, n, n, 2)
    assert "rel_indices" not in spsa.state_dict()


# --- whole model against the transcription ---


@pytest.mark.parametrize("img_size", [32, 64])
def test_matches_official_forward(img_size: int) -> None:
    torch.manual_seed(2)
    model = small_model(img_size).eval()
    randomise(model, seed=img_size)
    x = torch.randn(2, 3, img_size, img_size)
    with torch.no_grad():
        ours = model(x)
        ref = official_forward(model.state_dict(), x, heads=4, depth=4, lul=2, lam=2.0)
    assert ours.shape == (2, 10)
    assert (ours - ref).abs().max() <= 1e-5


def test_output_is_head_plus_half_max_aux() -> None:
    torch.manual_seed(3)
    model = small_model()
    x = torch.randn(2, 3, 32, 32)
    for train in (False, True):  # training returns the same single-tensor formula (no MixToken)
        model.train(train)
        with torch.no_grad():
            feats = model.forward_features(x)
            manual = model.head(feats[:, 0]) + 0.5 * model.aux_head(feats[:, 1:]).max(dim=1).values
            assert torch.allclose(model(x), manual, atol=0, rtol=0)
    assert feats.shape == (2, 1 + 64, 64)
    no_aux = small_model(aux_head=False).eval()
    with torch.no_grad():
        assert torch.equal(no_aux(x), no_aux.head(no_aux.forward_features(x)[:, 0]))


def test_odd_grid_keeps_class_token_out_of_poscnn() -> None:
    torch.manual_seed(4)
    model = small_model(28).eval()  # 7×7 = 49 tokens: the release's "N is odd" test would misfire
    block = model.blocks[1]
    x = torch.randn(2, 49, 64)
    assert not block.has_cls and model.blocks[2].has_cls
    assert block.pos_block(x, (7, 7), has_cls=False).shape == (2, 49, 64)
    with torch.no_grad():
        assert model(torch.randn(2, 3, 28, 28)).shape == (2, 10)


# --- keys, loading, registry ---


def test_official_key_layout_spvit_s() -> None:
    with torch.device("meta"):
        model = create_model("spvit_s")
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes["cls_token"] == (1, 1, 384) and shapes["pos_embed"] == (1, 196, 384)
    assert shapes["patch_embed.conv1.weight"] == (64, 3, 7, 7)
    assert shapes["patch_embed.proj.weight"] == (384, 64, 8, 8) and shapes["patch_embed.proj.bias"] == (384,)
    for i in (1, 2, 3):
        for k in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            assert f"patch_embed.bn{i}.{k}" in shapes
    for i in range(16):
        p = f"blocks.{i}."
        assert shapes[p + "pos_block.proj.0.weight"] == (384, 1, 3, 3) and shapes[p + "pos_block.proj.0.bias"] == (384,)
        assert shapes[p + "mlp.fc1.weight"] == (1152, 384) and shapes[p + "norm1.weight"] == (384,)
        if i < 14:
            assert shapes[p + "attn.qk.weight"] == (768, 384) and shapes[p + "attn.v.weight"] == (384, 384)
            assert shapes[p + "attn.w1.weight"] == (384, 2) and shapes[p + "attn.w1.bias"] == (384,)
            assert shapes[p + "attn.w2"] == (384, 1) and shapes[p + "attn.b2"] == (6,)
            assert p + "attn.qkv.weight" not in shapes and p + "attn.qk.bias" not in shapes
        else:
            assert shapes[p + "attn.qkv.weight"] == (1152, 384) and p + "attn.qk.weight" not in shapes
    assert {"norm.weight", "head.weight", "aux_head.weight", "aux_head.bias"} <= set(shapes)
    assert not any("rel_indices" in k for k in shapes)
    assert model.no_weight_decay() == {"pos_embed", "cls_token"}


def test_strict_load_and_filter() -> None:
    torch.manual_seed(5)
    src = small_model(56).eval()  # 14×14 grid
    randomise(src)
    sd = {**src.state_dict(), "blocks.0.attn.rel_indices": torch.zeros(1, 196, 196, 2)}
    dst = small_model(28).eval()  # 7×7 grid
    filtered = checkpoint_filter_fn(sd, dst)
    assert filtered["pos_embed"].shape == (1, 49, 64) and "blocks.0.attn.rel_indices" not in filtered
    load_strict(dst, filtered)
    same = small_model(56)
    load_strict(same, checkpoint_filter_fn(sd, same))
    with torch.no_grad():
        x = torch.randn(1, 3, 56, 56)
        assert torch.equal(same.eval()(x), src(x))


@pytest.mark.parametrize("img_size", [24, 48])
def test_another_input_size_resamples_pos_embed_as_the_release(tmp_path: Path, img_size: int) -> None:
    """load_model(img_size=...), --pretrained and import resampled as timm does (antialiased bicubic, another
    cubic kernel): at 160 SP-ViT-S's logits were 1.9e-3 off the release's own fine-tuning resize."""
    torch.manual_seed(7)
    args = {"patch_size": 4, "num_classes": 10, "embed_dim": 64, "depth": 4, "num_heads": 4, "stem_chans": 16}
    model = create_model("spvit_s", img_size=32, local_up_to_layer=2, **args).eval()  # small_model's, registered
    randomise(model, seed=7)  # 8×8 grid: 24 shrinks it to 6×6, 48 grows it to 12×12
    sd = model.state_dict()
    path = vitc.save_checkpoint(tmp_path / "spvit.safetensors", model)
    loaded = vitc.load_model(path, img_size=img_size)
    tokens = (img_size // 4) ** 2
    release = {**sd, "pos_embed": official_resize_pos_embed(sd["pos_embed"], tokens)}
    filtered = checkpoint_filter_fn(dict(sd), small_model(img_size))  # import and --pretrained
    assert (loaded.pos_embed - release["pos_embed"]).abs().max() <= 1e-7
    assert (filtered["pos_embed"] - release["pos_embed"]).abs().max() <= 1e-7
    x = torch.randn(2, 3, img_size, img_size)
    with torch.no_grad():
        want = official_forward(release, x, heads=4, depth=4, lul=2, lam=2.0)
        assert (loaded(x) - want).abs().max() <= 1e-6
    lv_vit = small_model(32, local_up_to_layer=0)  # LV-ViT's layout: the class token's position first, kept
    resampled = checkpoint_filter_fn(dict(lv_vit.state_dict()), small_model(img_size, local_up_to_layer=0))
    want_pos = official_resize_pos_embed(lv_vit.pos_embed.detach(), 1 + tokens)
    assert (resampled["pos_embed"] - want_pos).abs().max() <= 1e-7


def test_filter_converts_released_plain_blocks_to_spsa() -> None:
    torch.manual_seed(6)
    released = small_model()
    # The released SP-ViT-L: the same late class token but plain attention everywhere.
    for block in released.blocks[:2]:
        block.attn = Attention(64, 4, qkv_bias=False)
    released.eval()
    ours = small_model().eval()
    load_strict(ours, checkpoint_filter_fn(released.state_dict(), ours))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert (ours(x) - released(x)).abs().max() <= 1e-5
    # the converted prior can learn: its MLP's first layer is a fresh init, so a step reaches w2 (all-zero
    # w1 and w2 passed no gradient to either: the prior stayed 1 however long the run)
    ours.train()
    ours(x).sum().backward()
    attn = ours.blocks[0].attn
    assert attn.w1.weight.abs().sum() > 0 and attn.w2.grad is not None and attn.w2.grad.abs().sum() > 0
    again = small_model().eval()
    assert torch.equal(checkpoint_filter_fn(released.state_dict(), again)["blocks.0.attn.w1.weight"],
                       attn.w1.weight.detach())  # fmt: skip  # the same file imports to the same bytes


def test_micro_forward_and_registry() -> None:
    model = create_model("spvit_micro").eval()
    assert model.vitc_cfg.input_size == (3, 32, 32) and model.vitc_cfg.family == "spvit"
    assert model.vitc_cfg.mean == (0.5, 0.5, 0.5) and model.vitc_cfg.crop_pct == 1.0
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    with torch.device("meta"):
        assert create_model("spvit_s", img_size=64).vitc_cfg.crop_pct == 0.9


def test_non_square_grid_rejected() -> None:
    with pytest.raises(VitcError, match="square"):
        create_model("spvit_micro", img_size=(32, 48))
    with pytest.raises(VitcError, match="even patch size"):
        create_model("spvit_micro", patch_size=3)
