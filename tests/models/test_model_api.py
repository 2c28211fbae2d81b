"""The model surface every family shares with timm's models (vitc.models.zoo_model.ZooModel)."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import pytest
import torch

import vitc
from vitc.checkpoint import read_meta, write_checkpoint
from vitc.errors import VitcError
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
    path = write_checkpoint(tmp_path / "model.safetensors", model)
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
    path = write_checkpoint(tmp_path / "model.safetensors", model, meta_for(model, class_names=names))
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


@pytest.mark.parametrize("name", FAMILIES)
def test_the_size_checks_add_no_tracer_warning(name: str) -> None:
    """The ONNX export and timm's TorchScript route trace the model: its input size is static, the checks
    constants there (the image size's, and ConViT's and SP-ViT's attention's of its token count)."""
    model, x = _micro(name).eval(), torch.randn(2, 3, 32, 32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        traced = torch.jit.trace(model, x)
    assert not [w for w in caught if issubclass(w.category, torch.jit.TracerWarning)]
    assert torch.equal(traced(x), model(x))


@pytest.mark.parametrize(
    ("name", "layer", "said"), [("convit_micro", "GPSA", "GPSA"), ("spvit_micro", "SPSA", "SP-SA")]
)
def test_an_attention_layer_alone_refuses_another_token_count(name: str, layer: str, said: str) -> None:
    """Its positional tables are the built grid's (a model checks the image size before its layers do)."""
    attention = next(m for m in _micro(name).modules() if type(m).__name__ == layer).eval()
    tokens, dim = attention.rel_indices.shape[1], attention.qk.in_features
    for impl in ("fused", "reference"):
        attention.attn_impl = impl
        with pytest.raises(ValueError, match=rf"^{said} was built for {tokens} tokens, got {tokens + 1}$"):
            attention(torch.randn(1, tokens + 1, dim))


@pytest.mark.parametrize("name", FAMILIES)
def test_a_model_traced_with_grad_on_saves_and_loads_as_torchscript(name: str) -> None:
    """timm's TorchScript route (trace, save, load) failed for ConViT and SP-ViT: traced with grad on (trace's
    default) they recorded their custom autograd Functions, which torch.jit.save cannot write."""
    import io

    model, x = _micro(name).eval(), torch.randn(2, 3, 32, 32)
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.trace(model, x, check_trace=False), buffer)
    buffer.seek(0)
    with torch.no_grad():
        assert torch.equal(torch.jit.load(buffer)(x), model(x))


@pytest.mark.parametrize("name", FAMILIES)
def test_create_model_takes_timms_pretrained_false_and_explains_true(name: str) -> None:
    torch.manual_seed(0)
    plain = create_model(name, num_classes=5)
    torch.manual_seed(0)
    model = create_model(name, pretrained=False, num_classes=5)
    assert model.vitc_args == {"num_classes": 5}
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), model.state_dict().values(), strict=True))
    with pytest.raises(VitcError, match=r"downloads no weights .*vitc\.load_model\(path, .*`vitc import`"):
        create_model(name, True)


@pytest.mark.parametrize("name", FAMILIES)
def test_timms_head_api(name: str) -> None:
    model = _micro(name, num_classes=5).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        tokens = model.forward_features(x)
        pooled = model.forward_head(tokens, pre_logits=True)
        assert torch.equal(model.forward_head(tokens), model(x))
    assert model.num_features == 96 and pooled.shape == (2, 96) and torch.equal(pooled, tokens[:, 0])
    assert model.get_classifier() is model.head and model.head.out_features == 5
    model.reset_classifier(3, "token")  # timm's second argument
    assert model.get_classifier().out_features == 3 and model(x).shape == (2, 3)
    refused = ("avg", "", "map") if name == "cvt_micro" else ("map", "max")  # timm's ConViT has '', 'avg', 'token'
    for pool in refused:
        with pytest.raises(VitcError, match=rf"global_pool={pool!r}"):
            model.reset_classifier(4, pool)
    assert model.num_classes == 3 and model.global_pool == "token"  # a refused pooling changes nothing


POOLED = ["deit_micro", "convit_micro", "spvit_micro"]


@pytest.mark.parametrize("name", POOLED)
def test_average_pooling_is_timms(name: str) -> None:
    """global_pool='avg' averages the patch tokens after the final norm (timm's ConViT; its ViT after
    reset_classifier(n, 'avg') or with fc_norm=False); '' leaves every token, the head on each."""
    built = _micro(name, global_pool="avg", **({"fc_norm": False} if name == "deit_micro" else {})).eval()
    reset = _micro(name).eval()
    reset.reset_classifier(10, "avg")
    reset.load_state_dict(built.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        tokens = built.forward_features(x)
        for model in (built, reset):
            assert torch.equal(model.forward_head(tokens, pre_logits=True), tokens[:, 1:].mean(dim=1))
            assert torch.equal(model(x), model.forward_head(tokens))
        logits = built.head(tokens[:, 1:].mean(dim=1))
        if name == "spvit_micro":  # token labelling's term as with the class token
            logits = logits + 0.5 * built.aux_head(tokens[:, 1:]).max(dim=1)[0]
        torch.testing.assert_close(built(x), logits, rtol=0, atol=0)
        built.reset_classifier(5, "")
        assert torch.equal(built.forward_head(tokens, pre_logits=True), tokens)
        assert built(x).shape == (2, 1 + 64, 5)


def test_deit_built_for_average_pooling_normalises_after_it_as_timms_vit() -> None:
    """timm's VisionTransformer(global_pool='avg') has fc_norm by default: `norm` an Identity, the same
    LayerNorm after the pooling (fc_norm.*, so timm weights trained that way load as they are)."""
    token = _micro("deit_micro").eval()
    avg = _micro("deit_micro", global_pool="avg").eval()
    state = {k.replace("norm.", "fc_norm.") if k.startswith("norm.") else k: v for k, v in token.state_dict().items()}
    avg.load_state_dict(state)
    assert isinstance(avg.norm, torch.nn.Identity) and "norm.weight" not in avg.state_dict()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        unnormed = avg.forward_features(x)
        assert torch.equal(avg.forward_head(unnormed, pre_logits=True), token.norm(unnormed[:, 1:].mean(dim=1)))
        assert torch.equal(avg(x), token.head(token.norm(unnormed[:, 1:].mean(dim=1))))


@pytest.mark.parametrize(
    ("name", "args", "pool", "recorded"),
    [
        ("deit_micro", {"global_pool": "avg"}, None, {"global_pool": "avg"}),
        ("deit_micro", {}, "avg", {"global_pool": "avg", "fc_norm": False}),  # the norm stays before the pool
        ("deit_micro", {"global_pool": "avg"}, "token", {"fc_norm": True}),
        ("convit_micro", {}, "avg", {"global_pool": "avg"}),
        ("spvit_micro", {"global_pool": "avg"}, "token", {}),
    ],
)
def test_a_checkpoint_reloads_with_its_pooling(name: str, args: dict, pool: str | None, recorded: dict, tmp_path: Path):
    model = _micro(name, **args)
    if pool is not None:
        model.reset_classifier(4, pool)
    path = write_checkpoint(tmp_path / "model.safetensors", model)
    kept = {k: v for k, v in read_meta(path).args.items() if k in ("global_pool", "fc_norm")}
    assert kept == recorded
    loaded = vitc.load_model(path)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model.eval()(x))
    assert loaded.global_pool == model.global_pool


def test_the_class_token_spelt_out_stays_readable_by_any_vitc(tmp_path: Path) -> None:
    """create_model(name, global_pool="token"), as timm users write it, recorded the argument, so a plain
    class-token checkpoint was refused by a vitc without pooling ("takes no argument global_pool"); another
    pooling writes checkpoint version 2, which such a vitc refuses with "upgrade vitc"."""
    import json

    from vitc._io import read_safetensors_header

    def version(model: torch.nn.Module, name: str) -> int:
        header = read_safetensors_header(write_checkpoint(tmp_path / f"{name}.safetensors", model))
        return json.loads(header["__metadata__"]["vitc"])["version"]

    spelt = _micro("deit_micro", global_pool="token", fc_norm=None)
    assert "global_pool" not in spelt.vitc_args and "fc_norm" not in spelt.vitc_args
    assert version(spelt, "token") == 1
    assert version(_micro("convit_micro", global_pool="avg"), "avg") == 2


def test_pooling_refusals_are_one_line(tmp_path: Path) -> None:
    """CvT classifies its last stage's class token only; a model that pools nothing gives each token's logits,
    which no checkpoint (read by eval, export, predict) can hold; DeiT's own fc_norm must be a bool."""
    with pytest.raises(VitcError, match=r"CvT pools its class token only: global_pool='avg'"):
        create_model("cvt_micro", global_pool="avg")
    assert create_model("cvt_micro", global_pool="token").global_pool == "token"
    with pytest.raises(VitcError, match=r"DeiT has no global_pool='max': pass 'token' .*'avg' .*''"):
        create_model("deit_micro", global_pool="max")
    with pytest.raises(VitcError, match=r"fc_norm must be true, false or left out"):
        create_model("deit_micro", fc_norm=1)
    unpooled = _micro("convit_micro")
    unpooled.reset_classifier(0, "")
    with pytest.raises(VitcError, match=r"global_pool='' gives every token's logits, not one row per image"):
        write_checkpoint(tmp_path / "model.safetensors", unpooled)


@pytest.mark.parametrize("name", FAMILIES)
def test_pretrained_cfg_is_timms_view_of_the_models_cfg(name: str) -> None:
    model = _micro(name)
    cfg = model.vitc_cfg
    expected = {
        "input_size": cfg.input_size,
        "mean": cfg.mean,
        "std": cfg.std,
        "crop_pct": cfg.crop_pct,
        "interpolation": cfg.interpolation,
        "crop_mode": "center",
        "num_classes": 10,
        "architecture": name,
        "classifier": "head",
        "fixed_input_size": name != "cvt_micro",
    }
    assert model.pretrained_cfg.items() >= expected.items() and model.default_cfg == model.pretrained_cfg
    assert isinstance(model.get_submodule(model.pretrained_cfg["first_conv"]), torch.nn.Conv2d)
    model.reset_classifier(4)
    assert model.pretrained_cfg["num_classes"] == 4


@pytest.mark.parametrize("name", FAMILIES)
def test_grad_checkpointing_recomputes_the_blocks_to_the_same_bits(name: str) -> None:
    """Outputs, gradients and the state after a step (CvT's BatchNorm statistics) equal without it."""
    reference = _micro(name, drop_path_rate=0.3).train()  # drop-path's masks must replay in the recomputation
    checkpointed = copy.deepcopy(reference)
    checkpointed.set_grad_checkpointing()
    x = torch.randn(3, 3, 32, 32)
    results = []
    for model in (reference, checkpointed):
        block = model.stage2.blocks[0] if name == "cvt_micro" else model.blocks[0]
        calls: list[int] = []
        block.register_forward_pre_hook(lambda *_, calls=calls: calls.append(1))
        torch.manual_seed(1)
        out = model(x)
        out.square().sum().backward()
        grads = [p.grad for p in model.parameters()]
        results.append((out.detach(), grads, list(model.state_dict().values()), len(calls)))
    (out0, grads0, state0, calls0), (out1, grads1, state1, calls1) = results
    assert (calls0, calls1) == (1, 2)  # the backward ran the block again
    assert torch.equal(out0, out1)
    assert all(torch.equal(a, b) for a, b in zip(grads0, grads1, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(state0, state1, strict=True))
    checkpointed.set_grad_checkpointing(False)
    assert not any(getattr(m, "grad_checkpointing", False) for m in checkpointed.modules())


@pytest.mark.parametrize("autocast", [False, True])
@pytest.mark.parametrize("name", FAMILIES)
def test_every_gradient_has_its_parameters_strides(name: str, autocast: bool) -> None:
    """DDP's reducer warns on every rank where a gradient's strides differ from its parameter's; CvT's and
    SP-ViT's depthwise convs over token grids (channels-last) differed before."""
    model = _micro(name, num_classes=3)
    with torch.autocast("cpu", torch.bfloat16, enabled=autocast):
        loss = model(torch.randn(2, 3, 32, 32)).float().sum()
    loss.backward()
    strided = {n: (p.stride(), p.grad.stride()) for n, p in model.named_parameters() if p.grad is not None}
    assert len(strided) == len(list(model.parameters()))
    assert {n: s for n, s in strided.items() if s[0] != s[1]} == {}
