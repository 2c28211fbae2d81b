"""vitc.load_model / preprocess / predict: checkpoints and foreign files, the checkpoint's own transform."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vitc
from vitc.checkpoint import meta_for, write_checkpoint
from vitc.errors import VitcError
from vitc.models import create_model

NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    model = create_model("deit_micro", depth=1).eval()
    path = tmp_path_factory.mktemp("api") / "best.safetensors"
    return write_checkpoint(path, model, meta_for(model, class_names=NAMES)), model


def test_predict_names_the_classes_of_a_checkpoint(checkpoint: tuple[Path, torch.nn.Module]) -> None:
    path, reference = checkpoint
    model = vitc.load_model(path)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    top = vitc.predict(model, image, top_k=3)
    with torch.no_grad():
        probs = reference(vitc.preprocess(image, model)).softmax(-1)[0]
    expected = probs.topk(3)
    assert [name for name, _ in top] == [NAMES[i] for i in expected.indices.tolist()]
    assert [p for _, p in top] == pytest.approx(expected.values.tolist(), abs=1e-6)
    batch = vitc.predict(model, [image, np.asarray(image)], top_k=10)  # a list gives one list per image
    assert len(batch) == 2 and batch[0] == batch[1] and sum(p for _, p in batch[0]) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_predict_feeds_a_model_in_half_precision(checkpoint: tuple[Path, torch.nn.Module], dtype: torch.dtype):
    """`model.cuda().half()` then predict: the float32 input met half weights ("Input type (float) and bias
    type (c10::Half) should be the same"). The input now takes the model's float type, as its device."""
    path, _ = checkpoint
    image = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    full = vitc.predict(vitc.load_model(path), image, top_k=10)
    half = vitc.predict(vitc.load_model(path).to(dtype), image, top_k=10)
    assert dict(half) == pytest.approx(dict(full), abs=2e-3)


def test_preprocess_uses_the_models_size_crop_and_normalisation() -> None:
    with torch.device("meta"):
        model = create_model("deit_tiny")  # 224, crop_pct 0.875, ImageNet mean/std
    grey = np.full((300, 400, 3), 100, dtype=np.uint8)
    x = vitc.preprocess(grey, model)
    assert x.shape == (1, 3, 224, 224) and x.dtype == torch.float32
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    assert torch.allclose(x[0, :, 112, 112], (100 / 255 - mean) / std, atol=1e-6)
    ramp = np.tile(np.arange(256, dtype=np.uint8), (256, 1))  # (H, W) grey, already 224 / 0.875 = 256 wide
    values = (vitc.preprocess(ramp, model)[0, 0] * 0.229 + 0.485) * 255
    assert values[:, 0].mean().item() == pytest.approx(16, abs=1) and values[:, -1].mean().item() == pytest.approx(
        239, abs=1
    )  # the centre 224 of 256 columns: 16..239


def test_a_foreign_file_needs_its_model_name(checkpoint: tuple[Path, torch.nn.Module], tmp_path: Path) -> None:
    _, reference = checkpoint
    source = tmp_path / "weights.pth"
    torch.save({"model": reference.state_dict()}, source)
    with pytest.raises(VitcError, match="names a vitc model: name it"):
        vitc.load_model(source)
    model = vitc.load_model(source, "deit_micro", depth=1)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(model(x), reference(x))
    top = vitc.predict(model, x, top_k=10)[0]
    assert sorted(name for name, _ in top) == [str(i) for i in range(10)]  # no names in a .pth: the index


def test_a_model_name_given_with_a_checkpoint_is_checked(checkpoint: tuple[Path, torch.nn.Module]) -> None:
    """It was ignored: load_model(ckpt, "deit_mikro") loaded the checkpoint's own model unsaid."""
    path, _ = checkpoint
    with pytest.raises(VitcError, match=r"unknown model 'deit_mikro'; did you mean deit_micro"):
        vitc.load_model(path, "deit_mikro")
    with pytest.raises(VitcError, match="is a vitc checkpoint of deit_micro, not convit_micro: leave the name out"):
        vitc.load_model(path, "convit_micro")
    with pytest.raises(VitcError, match="of deit_micro, not convit_micro"):
        vitc.load_model(path.parent, "convit_micro")  # its folder, as a run folder
    assert vitc.load_model(path, "deit_micro").vitc_name == "deit_micro"


@pytest.mark.parametrize("bad", [np.zeros((8, 8, 2), np.uint8), np.zeros((8, 8), np.float32), "digit.png"])
def test_bad_images_are_one_line_errors(checkpoint: tuple[Path, torch.nn.Module], bad: object) -> None:
    with pytest.raises(VitcError):
        vitc.preprocess(bad, vitc.load_model(checkpoint[0]))


def test_predict_takes_what_a_classifier_takes(checkpoint: tuple[Path, torch.nn.Module]) -> None:
    """One rule for one image or a batch (`vitc.data.images`), shared with the engines' Classifier: a uint8
    (N, H, W, C) array is a batch; what is neither is one line naming both, not a frame's float array read
    as a batch of float images or a number as "a PIL image"."""
    model = vitc.load_model(checkpoint[0])
    frames = np.random.default_rng(1).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    batch = vitc.predict(model, frames, top_k=3)
    assert batch == vitc.predict(model, list(frames), top_k=3) and len(batch) == 2
    one = vitc.predict(model, frames[1], top_k=3)  # one frame: one prediction (batch of 1: float noise aside)
    assert [c for c, _ in one] == [c for c, _ in batch[1]] and [p for _, p in one] == pytest.approx(
        [p for _, p in batch[1]]
    )
    for bad, got in [(3, "int"), (frames.astype(np.float32), "a float32 array of shape (2, 32, 32, 3)")]:
        with pytest.raises(VitcError) as raised:
            vitc.predict(model, bad)
        assert str(raised.value) == (
            "expected an image (a path, a PIL image, or a uint8 (H, W) or (H, W, C) array), a list, tuple or "
            f"iterator of them, or a uint8 (N, H, W, C) array; got {got}"
        )


def test_a_one_channel_model_predicts_a_grey_image_and_round_trips(tmp_path: Path) -> None:
    """create_model(in_chans=1) kept the registry's three-value mean/std: preprocess and predict stopped,
    and its checkpoint was refused on load. One channel gets their average, as timm's loader does."""
    torch.manual_seed(0)
    model = create_model("deit_micro", depth=1, in_chans=1).eval()
    assert model.vitc_cfg.input_size == (1, 32, 32) and model.vitc_cfg.mean == model.vitc_cfg.std == (0.5,)
    with torch.device("meta"):
        imagenet = create_model("deit_tiny", in_chans=1).vitc_cfg
    assert imagenet.mean == pytest.approx((0.449,)) and imagenet.std == pytest.approx((0.226,))
    grey = np.random.default_rng(0).integers(0, 256, (32, 32), dtype=np.uint8)
    x = vitc.preprocess(grey, model)
    expected = torch.from_numpy((grey / 255 - 0.5) / 0.5).float()
    assert x.shape == (1, 1, 32, 32) and torch.allclose(x[0, 0], expected, atol=1e-6)
    top = vitc.predict(model, grey, top_k=10)
    loaded = vitc.load_model(write_checkpoint(tmp_path / "grey.safetensors", model))
    assert loaded.vitc_cfg == model.vitc_cfg and vitc.predict(loaded, grey, top_k=10) == top


def test_predict_gives_back_the_callers_training_flags() -> None:
    """A sanity check on one image in the middle of a training loop left the model in eval mode: the next steps
    ran without dropout or drop-path and with BatchNorm's running statistics frozen. A submodule the caller
    froze (eval) stays frozen."""
    model = create_model("cvt_micro", drop_path_rate=0.1).train()
    frozen = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)).eval()
    image = np.random.default_rng(2).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    eval_top = vitc.predict(model, image, top_k=3)
    assert model.training and not frozen.training
    assert all(m.training for m in model.modules() if m is not frozen)
    assert vitc.predict(model.eval(), image, top_k=3) == eval_top  # it ran in eval mode all the same


def test_a_model_fine_tuned_in_ones_own_loop_is_saved_with_its_class_names(tmp_path: Path) -> None:
    """vitc.save_checkpoint did not exist: saving from Python meant vitc.checkpoint.save_checkpoint and meta_for,
    and class names for a reset head had no documented way in."""
    model = vitc.create_model("deit_micro", depth=1)
    model.reset_classifier(3)
    path = vitc.save_checkpoint(tmp_path / "pets.safetensors", model, class_names=["cat", "dog", "fox"])
    loaded = vitc.load_model(path)
    assert loaded.vitc_class_names == ["cat", "dog", "fox"] and loaded.get_classifier().out_features == 3
    assert vitc.predict(loaded, np.zeros((32, 32, 3), np.uint8), top_k=1)[0][0] in ("cat", "dog", "fox")
    with pytest.raises(VitcError, match=r"bad.safetensors: not saved: 2 class names for a head of 3 outputs$"):
        vitc.save_checkpoint(tmp_path / "bad.safetensors", model, class_names=["cat", "dog"])
    assert not (tmp_path / "bad.safetensors").exists()
