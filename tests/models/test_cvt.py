"""CvT: exact sizes, structure, and logits equal to Hugging Face transformers' CvT for the same weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from vitc.checkpoint import read_meta
from vitc.cli.main import app
from vitc.models import create_model
from vitc.models._stats import count_params, model_stats
from vitc.models.cvt import CvT, checkpoint_filter_fn
from vitc.models.loading import KeyMismatchError, load_strict
from vitc.pretrained import read_pretrained

transformers = pytest.importorskip("transformers")

# Reference: official = HF parameter counts; GMACs measured with FlopCounterMode at 224.
SIZES = {"cvt_13": (19_997_480, 4.57), "cvt_21": (31_622_696, 7.18), "cvt_w24": (277_196_392, 60.92)}
HF_CONFIGS = {
    "cvt_13": {"depth": [1, 2, 10], "embed_dim": [64, 192, 384], "num_heads": [1, 3, 6]},
    "cvt_21": {"depth": [1, 4, 16], "embed_dim": [64, 192, 384], "num_heads": [1, 3, 6]},
}


def _hf_model(name: str) -> torch.nn.Module:
    """A random HF CvtForImageClassification with every float tensor perturbed (BN stats, LN/BN affine too)."""
    torch.manual_seed(0)
    cfg = transformers.CvtConfig(**HF_CONFIGS[name], num_labels=1000)
    model = transformers.CvtForImageClassification(cfg).eval()
    with torch.no_grad():
        for key, value in model.state_dict().items():
            if not value.is_floating_point():
                continue
            if key.endswith("running_var"):
                value.uniform_(0.5, 1.5)
            elif "norm" in key and key.endswith("weight"):
                value.copy_(1 + 0.1 * torch.randn_like(value))
            else:
                value.add_(0.05 * torch.randn_like(value))
    return model


@pytest.fixture(scope="module")
def hf13() -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """HF CvT-13 weights, one 224 input and HF's logits for it (computed once: CPU time is scarce)."""
    model = _hf_model("cvt_13")
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return model.state_dict(), x, model(pixel_values=x).logits


def _ours(name: str, hf_state: dict[str, torch.Tensor], act: str) -> CvT:
    """Our model with HF's weights; built on meta and materialised empty, since every tensor is overwritten."""
    with torch.device("meta"):
        model = create_model(name, act=act)
    model = model.to_empty(device="cpu").eval()
    load_strict(model, checkpoint_filter_fn(hf_state, model), source="HF weights")
    return model


@pytest.mark.parametrize("name", list(SIZES))
def test_params_and_macs(name: str) -> None:
    params, gmacs = SIZES[name]
    with torch.device("meta"):
        assert count_params(create_model(name)) == params
    stats = model_stats(name, img_size=224)
    assert stats["params"] == params
    assert abs(stats["gmacs"] - gmacs) / gmacs < 0.02


def test_w24_default_cfg() -> None:
    stats = model_stats("cvt_w24")
    assert stats["input_size"] == (3, 384, 384)


def test_matches_hf_cvt13(hf13: tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]) -> None:
    state, x, ref = hf13
    assert len(state) == 459
    with torch.device("meta"):
        meta = create_model("cvt_13")
    mapped = checkpoint_filter_fn(state, meta)
    bare = checkpoint_filter_fn({k.removeprefix("cvt."): v for k, v in state.items()}, meta)
    assert mapped.keys() == bare.keys() == meta.state_dict().keys()
    assert all(mapped[k] is bare[k] for k in mapped)  # with or without `cvt.`: the same mapping
    model = _ours("cvt_13", state, act="gelu")
    with torch.no_grad():
        out = model(x)
    assert out.shape == (1, 1000)
    assert (out - ref).abs().max().item() <= 1e-5


def test_matches_hf_cvt21() -> None:
    hf = _hf_model("cvt_21")
    model = _ours("cvt_21", hf.state_dict(), act="gelu")
    x = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        diff = (model(x) - hf(pixel_values=x).logits).abs().max().item()
    assert diff <= 1e-5


def test_quick_gelu_differs_from_hf(hf13: tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]) -> None:
    """The official activation is QuickGELU; HF's erf GELU moves logits by ~1e-2 on the same weights."""
    state, x, ref = hf13
    model = _ours("cvt_13", state, act="quick_gelu")
    with torch.no_grad():
        gap = (model(x) - ref).abs().max().item()
    assert gap > 1e-3


def test_structure_and_grids() -> None:
    with torch.device("meta"):
        model = create_model("cvt_13").eval()
        assert model.no_weight_decay() == {"stage2.cls_token"}
        keys = model.state_dict().keys()
        assert [k for k in keys if k.endswith("cls_token")] == ["stage2.cls_token"]
        for i, dim in enumerate((64, 192, 384)):
            attn = model.stages[i].blocks[0].attn
            assert attn.scale == dim**-0.5
            assert attn.num_heads == 1 or attn.scale != (dim // attn.num_heads) ** -0.5
        shapes: dict[str, tuple[int, ...]] = {}

        def record(name: str):
            return lambda _m, _i, out: shapes.__setitem__(name, tuple(out.shape))

        for i in range(3):
            attn = model.stages[i].blocks[0].attn
            attn.proj_q.register_forward_hook(record(f"q{i}"))
            attn.proj_k.register_forward_hook(record(f"k{i}"))
        out = model(torch.zeros(1, 3, 224, 224))
    assert out.shape == (1, 1000)
    # query grids 56/28/14, key/value grids 28/14/7; +1 for the class token in the last stage only
    assert [shapes[f"q{i}"][1] for i in range(3)] == [56 * 56, 28 * 28, 14 * 14 + 1]
    assert [shapes[f"k{i}"][1] for i in range(3)] == [28 * 28, 14 * 14, 7 * 7 + 1]


def test_drop_path_ramp_and_any_size() -> None:
    with torch.device("meta"):
        model = create_model("cvt_13", drop_path_rate=0.1, img_size=(96, 160))
        rates = [b.drop_path.drop_prob for b in model.stage2.blocks]
        assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.1) and len(set(rates)) == 10
        assert all(b.drop_path.drop_prob == 0.0 for b in model.stage0.blocks)
        assert model(torch.zeros(2, 3, 96, 160)).shape == (2, 1000)


def test_micro_forward() -> None:
    model = create_model("cvt_micro").eval()
    assert 300_000 <= count_params(model) <= 1_000_000
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
        assert model.forward_features(torch.randn(2, 3, 32, 32)).shape == (2, 1 + 4 * 4, 96)
    model.reset_classifier(5)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 5)


def test_official_keys_pass_through_and_missing_key_is_reported(
    hf13: tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor],
) -> None:
    with torch.device("meta"):
        model = create_model("cvt_13")
    official = model.state_dict()
    assert checkpoint_filter_fn(official, model).keys() == official.keys()
    state = dict(hf13[0])
    del state["cvt.encoder.stages.1.layers.0.attention.attention.projection_key.bias"]
    with pytest.raises(KeyMismatchError) as err:
        load_strict(model, checkpoint_filter_fn(state, model))
    assert err.value.report.missing == ["stage1.blocks.0.attn.proj_k.bias"]
    assert not err.value.report.unexpected


# A Hugging Face CvT shaped like cvt_micro (stage 1 with 2 blocks: HF indexes drop-path rates by stage)
HF_MICRO = {"embed_dim": [32, 64, 96], "depth": [1, 2, 3], "num_heads": [1, 2, 3], "patch_sizes": [3, 3, 3]}
HF_MICRO |= {"patch_stride": [2, 2, 2], "patch_padding": [1, 1, 1], "image_size": 32}
LABELS = {i: name for i, name in enumerate(["ant", "bee", "cat", "dog", "eel", "fox", "gnu", "hen", "ibex", "jay"])}


@pytest.mark.parametrize("safe", [True, False], ids=["model.safetensors", "pytorch_model.bin"])
def test_import_of_a_hugging_face_folder_gives_its_logits(tmp_path: Path, safe: bool) -> None:
    """No flags beyond the model: the HF layout is recognised and erf-GELU chosen, and said so."""
    import vitc
    from vitc.checkpoint import read_checkpoint

    torch.manual_seed(0)
    cfg = transformers.CvtConfig(**HF_MICRO, num_labels=10, id2label=LABELS)
    hf = transformers.CvtForImageClassification(cfg).eval()
    hf.save_pretrained(tmp_path / "hf", safe_serialization=safe)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["import", str(tmp_path / "hf"), "-m", "cvt_micro", "-o", str(out), "--set", "depths=[1,2,3]"]
    )
    assert result.exit_code == 0, result.output
    assert "Hugging Face layout, so act='gelu'" in result.output
    model, meta = read_checkpoint(out / "model.safetensors")
    assert meta.args["act"] == "gelu" and meta.provenance["source_format"] == "huggingface"
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), hf(pixel_values=x).logits, atol=1e-5)
    named = vitc.load_model(tmp_path / "hf", "cvt_micro", depths=[1, 2, 3])  # the API takes the folder too
    assert named.vitc_class_names == list(LABELS.values())
    start = read_pretrained(tmp_path / "hf", "cvt_micro")  # and so does `vitc train --pretrained`
    assert start.source_format == "huggingface" and start.args == {
        "act": "gelu", "depths": [1, 2, 3], "embed_dims": [32, 64, 96], "num_heads": [1, 2, 3],
        "patch_sizes": [3, 3, 3], "patch_strides": [2, 2, 2], "patch_paddings": [1, 1, 1], "mlp_ratio": 4.0,
        "qkv_bias": True,
    }  # fmt: skip  # its config.json's shape (no registered CvT's): a run builds it without --set depths=...


def test_official_layout_keeps_quick_gelu(tmp_path: Path) -> None:
    source = tmp_path / "cvt_micro_official.pth"
    torch.save({"model": create_model("cvt_micro").state_dict()}, source)
    result = CliRunner().invoke(app, ["import", str(source), "-m", "cvt_micro", "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "Hugging Face" not in result.output
    meta = read_meta(tmp_path / "out" / "model.safetensors")
    assert "act" not in meta.args and meta.provenance["source_format"] == "official/timm"
    empty = tmp_path / "empty"
    empty.mkdir()
    refused = CliRunner().invoke(app, ["import", str(empty), "-m", "cvt_micro", "-o", str(tmp_path / "o2")])
    assert refused.exit_code == 2
    assert "without model.safetensors, pytorch_model.bin or best.safetensors" in refused.output


def _hf_processor_folder(folder: Path, size: object) -> Path:
    """A Hugging Face CvT-micro folder (random weights) with the processor config microsoft/cvt-13-384 has
    (ConvNextImageProcessor, bicubic, crop_pct 0.875) at `size`; mean and std cvt_micro's."""
    import json

    torch.manual_seed(0)
    transformers.CvtForImageClassification(transformers.CvtConfig(**HF_MICRO, num_labels=10)).save_pretrained(folder)
    processor = {"image_processor_type": "ConvNextImageProcessor", "size": size, "crop_pct": 0.875, "resample": 3}
    processor |= {"do_resize": True, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True}
    processor |= {"image_mean": [0.5] * 3, "image_std": [0.5] * 3}
    (folder / "preprocessor_config.json").write_text(json.dumps(processor))
    return folder


def test_a_hugging_face_folders_class_names_are_imported(tmp_path: Path) -> None:
    """`vitc import` of a Hugging Face folder dropped its id2label (vitc.load_model of the folder kept it), so
    `vitc eval` and `vitc predict` of the import said "names no classes" or gave class numbers."""
    from vitc.checkpoint import read_meta

    folder = tmp_path / "cvt-micro"
    names = [f"class {i}" for i in range(10)]
    config = transformers.CvtConfig(**HF_MICRO, num_labels=10, id2label=dict(enumerate(names)))
    transformers.CvtForImageClassification(config).save_pretrained(folder)
    args = ["import", str(folder), "-m", "cvt_micro", "-o", str(tmp_path / "out"), "--set", "depths=[1,2,3]"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert read_meta(tmp_path / "out" / "model.safetensors").class_names == names


def test_a_hugging_face_folder_at_384_is_evaluated_squashed_as_its_processor_does(tmp_path: Path) -> None:
    """Hugging Face's CvT processor squashes the image to 384×384 from 384 up, uncropped, as the official 384
    configs do (CENTER_CROP: False): `vitc import` records crop_mode 'squash' at crop_pct 1 and says so, and
    `vitc.preprocess` then gives the processor's own pixels for a non-square photo (its PIL path: max |Δ| 0.0).
    --set crop_mode=center overrides; a folder below 384 keeps the centre crop."""
    import json

    import numpy as np
    from PIL import Image

    import vitc
    from vitc._io import read_safetensors_header

    hf = _hf_processor_folder(tmp_path / "cvt-micro-384", {"shortest_edge": 384})
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:427, 0:640]  # a 640×427 photo: gradients, a pattern and noise, as JPEG
    pixels = np.stack([x * 255 / 639, y * 255 / 426, 128 + 60 * np.sin(x / 17) * np.cos(y / 23)], -1)
    Image.fromarray(np.clip(pixels + rng.normal(0, 12, pixels.shape), 0, 255).astype(np.uint8)).save(
        tmp_path / "photo.jpg", quality=90
    )
    runner = CliRunner()

    def imported(source: Path, name: str, *more: str) -> tuple[dict, str]:
        args = ["import", str(source), "-m", "cvt_micro", "-o", str(tmp_path / name), "--set", "depths=[1,2,3]", *more]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        header = read_safetensors_header(tmp_path / name / "model.safetensors")["__metadata__"]["vitc"]
        return json.loads(header), " ".join(result.output.split())

    record, said = imported(hf, "squash")
    assert "img_size=384" in said
    assert (
        "crop_mode='squash', crop_pct=1 (Hugging Face's CvT processor squashes the image to 384×384 from 384 up, "
        "uncropped; --set crop_mode=center overrides)"
    ) in said
    assert record["version"] == 2 and record["cfg"]["crop_mode"] == "squash" and record["cfg"]["crop_pct"] == 1.0
    model = vitc.load_model(tmp_path / "squash" / "model.safetensors")
    taken = {k: model.pretrained_cfg[k] for k in ("input_size", "crop_pct", "crop_mode")}
    assert taken == {"input_size": (3, 384, 384), "crop_pct": 1.0, "crop_mode": "squash"}
    assert vitc.load_model(hf, "cvt_micro", depths=[1, 2, 3]).pretrained_cfg["crop_mode"] == "squash"  # the API too

    processor_class = getattr(transformers, "ConvNextImageProcessorPil", None) or transformers.ConvNextImageProcessor
    with Image.open(tmp_path / "photo.jpg") as photo:
        theirs = processor_class.from_pretrained(hf)(photo.convert("RGB"), return_tensors="np")["pixel_values"]
        ours = vitc.preprocess(photo, model).numpy()
        resized = np.asarray(photo.convert("RGB").resize((384, 384), Image.Resampling.BICUBIC), dtype=np.float32)
    assert ours.shape == theirs.shape == (1, 3, 384, 384)
    assert np.abs(ours - theirs).max() < 1e-6
    assert np.array_equal(ours[0], (resized.transpose(2, 0, 1) / np.float32(255) - np.float32(0.5)) / np.float32(0.5))

    record, said = imported(hf, "center", "--set", "crop_mode=center")
    assert record["version"] == 1 and "crop_mode" not in record["cfg"] and "squash" not in said
    assert vitc.load_model(tmp_path / "center" / "model.safetensors").pretrained_cfg["crop_mode"] == "center"
    squashed = tmp_path / "squash" / "model.safetensors"  # a checkpoint's transform is set as a folder's is
    switched = vitc.load_model(squashed, crop_mode="center", crop_pct=0.9).pretrained_cfg
    assert (switched["crop_mode"], switched["crop_pct"]) == ("center", 0.9)
    legacy = _hf_processor_folder(tmp_path / "cvt-micro-384-legacy", 384)  # "size": 384, as older folders write it
    assert imported(legacy, "legacy")[0]["cfg"]["crop_mode"] == "squash"
    record, said = imported(_hf_processor_folder(tmp_path / "cvt-micro-224", {"shortest_edge": 224}), "at224")
    assert record["cfg"]["input_size"] == [3, 224, 224] and "crop_mode" not in record["cfg"] and "squash" not in said
    refused = runner.invoke(app, ["import", str(hf), "-m", "cvt_micro", "-o", str(tmp_path / "x"), "--set=crop_mode=x"])
    assert refused.exit_code == 2 and "--set: crop_mode must be one of center, squash, got 'x'" in refused.output


def test_a_hugging_face_cvt_of_its_own_shape_is_built_as_its_config_says(tmp_path: Path) -> None:
    """A Hugging Face CvT of a shape no registered CvT has (depth 1/2/3, widths 16/32/64): `vitc train
    --pretrained` said it "does not say which model it holds" and trained convit_micro, and with --model cvt_13
    printed a 440-row mismatch table. Its config.json (model_type cvt) gives the architecture, as
    `from_pretrained` builds it: the model's logits are Hugging Face's, and training starts from it."""
    import json

    from PIL import Image

    import vitc

    shape = {"depth": [1, 2, 3], "embed_dim": [16, 32, 64], "num_heads": [1, 2, 4]}
    torch.manual_seed(0)
    hf = transformers.CvtForImageClassification(transformers.CvtConfig(**shape, num_labels=3)).eval()
    folder = tmp_path / "cvt-tiny"
    hf.save_pretrained(folder)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    ours = vitc.load_model(folder)
    with torch.no_grad():
        assert ours.vitc_name == "cvt_13" and torch.allclose(ours(x), hf(pixel_values=x).logits, atol=1e-5)

    photos = tmp_path / "photos"
    for split, count in (("train", 4), ("val", 2)):
        for c, colour in enumerate(((200, 30, 30), (30, 200, 30), (30, 30, 200))):
            (photos / split / f"c{c}").mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", (24 + i, 20), colour).save(photos / split / f"c{c}" / f"{i}.png")
    runner = CliRunner()
    base = ["train", "--pretrained", str(folder), "--data-dir", str(photos), "--epochs", "1"]
    base += ["--set", f"run.out_dir={tmp_path / 'runs'}", "--set", "data.image_size=32"]
    named = runner.invoke(app, base)
    assert named.exit_code == 0, named.output
    assert (
        "model.name = cvt_13 with depths=[1, 2, 3], embed_dims=[16, 32, 64], num_heads=[1, 2, 4] "
        f"(what {folder}'s config.json says; --model names another)"
    ) in " ".join(named.output.split())  # wrapped at the runner's width
    given = runner.invoke(app, [*base, "--model", "cvt_13", "--name", "given"])
    assert given.exit_code == 0 and "mismatch" not in given.output, given.output
    recorded = json.loads((tmp_path / "runs" / "given" / "config.json").read_text())["model"]["args"]
    assert {k: recorded[k] for k in ("depths", "embed_dims", "num_heads", "act")} == {
        "depths": [1, 2, 3], "embed_dims": [16, 32, 64], "num_heads": [1, 2, 4], "act": "gelu"
    }  # fmt: skip

    from vitc.downloads import cvt_args_named_by

    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "cls_token": [True, False, True]}))
    assert cvt_args_named_by(folder) is None  # a class token vitc's CvT does not build: not read as one
