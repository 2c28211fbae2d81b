"""Fine-tuning: pretrained weights load strictly with a fresh head, layer-wise lr decay, a frozen backbone,
provenance in the checkpoints and `vitc info`, summary.json, and the proof that the weights transfer."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from typer.testing import CliRunner

from vitc._io import sha256_file
from vitc.checkpoint import read_meta, write_checkpoint
from vitc.cli.main import app
from vitc.data import datasets
from vitc.data.datasets import ImageSet
from vitc.errors import VitcError
from vitc.models import create_model
from vitc.models.loading import KeyMismatchError
from vitc.pretrained import load_pretrained, read_pretrained
from vitc.train import loop
from vitc.train.config import load_config, resume_config
from vitc.train.defaults import resolve_defaults
from vitc.train.optim import freeze_backbone, layer_ids, param_groups

# 2 blocks of width 48 on 16x16 digits: learns digits 0-4 to ~98% in seconds on a CPU
SMALL: dict[str, Any] = {
    "model.name": "deit_micro",
    "model.args": {"depth": 2, "embed_dim": 48, "num_heads": 2},
    "model.drop_path_rate": 0.0,
    "data.image_size": 16,
    "aug.crop_scale": [0.8, 1.0],
    "optim.warmup_epochs": 1,
    "run.amp": "off",
}
# 10 per class; every knob set, so that both runs train alike (--pretrained would pick layer decay 0.75)
FEW_SHOT = {"data.fraction": 0.08, "optim.epochs": 10, "optim.batch_size": 10, "optim.lr": 1e-3}
FEW_SHOT["optim.layer_decay"] = 1.0
LOWER, UPPER = (0, 1, 2, 3, 4), (5, 6, 7, 8, 9)
_LOAD_DIGITS = datasets._load_digits


def _digits(classes: tuple[int, ...]) -> Callable[[str, int], ImageSet]:
    """The digits loader restricted to `classes`, relabelled 0..len-1: two tasks from one data set."""

    def only(split: str, size: int) -> ImageSet:
        full = _LOAD_DIGITS(split, size)
        keep = full.subset(np.flatnonzero(np.isin(full.labels.numpy(), classes)))
        relabel = torch.full((10,), -1, dtype=torch.int64)
        relabel[list(classes)] = torch.arange(len(classes))
        return ImageSet(keep.images, relabel[keep.labels], [str(c) for c in classes])

    return only


def _train(
    patch: pytest.MonkeyPatch, classes: tuple[int, ...], out: Path, name: str, **overrides: Any
) -> loop.RunResult:
    patch.setattr(datasets, "_load_digits", _digits(classes))
    patch.setattr(loop.report, "plot_curves", lambda *args, **kwargs: None)  # matplotlib per epoch: CPU time
    settings = {**SMALL, "model.args": dict(SMALL["model.args"]), "run.out_dir": str(out), "run.name": name}
    return loop.train(load_config(None, settings | overrides), show_progress=False)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """deit_micro trained on digits 0-4 (380 steps, ~98% test top-1): the weights every test here starts from."""
    out = tmp_path_factory.mktemp("pretrain")
    with pytest.MonkeyPatch.context() as patch:
        run = _train(patch, LOWER, out, "lower", **{"optim.epochs": 20, "optim.batch_size": 32, "optim.lr": 2e-3})
    assert run.test["top1"] > 80.0, run.test  # the task was learnt: there is something to transfer
    return run.run_dir / "best.safetensors"


@pytest.fixture
def patch() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as context:
        yield context


def test_pretrained_weights_transfer_to_other_classes(pretrained: Path, tmp_path: Path, patch: pytest.MonkeyPatch):
    """Digits 5-9 from 10 images per class, 50 steps: from the 0-4 weights vs from scratch, same budget."""
    scratch = _train(patch, UPPER, tmp_path, "scratch", **FEW_SHOT)
    tuned = _train(patch, UPPER, tmp_path, "tuned", **FEW_SHOT, **{"model.pretrained": str(pretrained)})
    margin = tuned.test["top1"] - scratch.test["top1"]
    # measured (180 test images; chance 20%): 50.6% vs 36.7% with 1 thread, 56.1% vs 36.7% with 2 (the sums differ
    # by thread count) under timm's random train interpolation; bilinear crops: 50.6% / 55.0% vs 33.3%
    assert margin >= 10.0, (tuned.test["top1"], scratch.test["top1"])

    meta = read_meta(tuned.run_dir / "best.safetensors")
    assert meta.provenance["pretrained"] == str(pretrained.resolve())
    assert meta.provenance["pretrained_sha256"] == sha256_file(pretrained)
    assert meta.provenance["pretrained_format"] == "vitc checkpoint"
    assert meta.class_names == ["5", "6", "7", "8", "9"]
    assert "pretrained" not in read_meta(scratch.run_dir / "best.safetensors").provenance

    summary = json.loads((tuned.run_dir / "summary.json").read_text())
    assert summary["test_top1"] == pytest.approx(tuned.test["top1"]) and summary["test_split"] == "test"
    assert summary["test_top5"] is None and "top5" not in tuned.test  # 5 classes: top-5 is 100% by construction
    assert summary["best_val_top1"] == pytest.approx(max(row["val_top1"] for row in tuned.history))
    assert summary["epochs"] == 10 and summary["checkpoint"] == str(tuned.run_dir / "best.safetensors")
    assert summary["train_images_per_s"] > 0 and summary["seconds"] > 0
    assert summary["pretrained"] == str(pretrained)

    shown = CliRunner(env={"COLUMNS": "300"}).invoke(app, ["info", str(tuned.run_dir / "best.safetensors")])
    assert shown.exit_code == 0, shown.output
    row = next(line for line in shown.output.splitlines() if "provenance.pretrained_sha256" in line)
    assert sha256_file(pretrained) in row


def test_frozen_backbone_trains_the_head_only(pretrained: Path, tmp_path: Path, patch: pytest.MonkeyPatch):
    probe = FEW_SHOT | {"optim.epochs": 1, "optim.freeze": "backbone", "model.pretrained": str(pretrained)}
    run = _train(patch, UPPER, tmp_path, "probe", **probe)
    before, after = load_file(pretrained), load_file(run.run_dir / "last.safetensors")
    assert before.keys() == after.keys()
    for key in before:
        if not key.startswith("head."):
            assert torch.equal(before[key], after[key]), key
    assert not torch.equal(before["head.weight"], after["head.weight"])


def test_head_is_reinitialised_for_another_class_count(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = create_model("deit_micro", depth=2, num_classes=10)
    path = write_checkpoint(tmp_path / "ten.safetensors", source)
    torch.manual_seed(1)
    model = create_model("deit_micro", depth=2, num_classes=5)
    fresh = model.head.weight.detach().clone()
    note = load_pretrained(model, read_pretrained(path, "deit_micro"), [str(i) for i in range(5)])
    assert "head re-initialised (the file's classifier has 10 classes, this run 5)" in note
    assert torch.equal(model.head.weight, fresh)
    for key, value in source.state_dict().items():
        if not key.startswith("head."):
            assert torch.equal(model.state_dict()[key], value), key


def test_same_classes_keep_the_head_and_positions_follow_the_input_size(tmp_path: Path) -> None:
    source = create_model("deit_micro", depth=2, num_classes=10)
    path = write_checkpoint(tmp_path / "ten.safetensors", source)
    pre = read_pretrained(path, "deit_micro")
    assert pre.args["depth"] == 2 and "num_classes" not in pre.args  # the architecture is inherited
    model = create_model("deit_micro", depth=2, num_classes=10, img_size=48)
    note = load_pretrained(model, pre)
    assert "and its classifier" in note and torch.equal(model.head.weight, source.head.weight)
    assert model.pos_embed.shape == (1, 1 + 12 * 12, 96)  # resampled from 8x8 patches to 12x12


def test_the_size_the_weights_were_trained_at_is_kept(tmp_path: Path) -> None:
    """A fine-tuning run takes the input size its weights were trained at unless data.image_size names one:
    a vitc checkpoint's own, or a foreign file's position-embedding grid (a 48×48 file was fine-tuned at 32,
    the model's default, its positions resampled unsaid)."""
    torch.manual_seed(0)
    source = create_model("deit_micro", depth=2, num_classes=10, img_size=48)
    ours = write_checkpoint(tmp_path / "48.safetensors", source)
    assert read_pretrained(ours, "deit_micro").args["img_size"] == 48
    foreign = tmp_path / "48.pth"
    torch.save({"model": source.state_dict()}, foreign)
    pre = read_pretrained(foreign, "deit_micro")
    assert pre.args["img_size"] == 48 and pre.source_format == "official/timm"
    torch.save({"model": create_model("deit_micro", depth=2).state_dict()}, foreign)  # the default 32: no note
    assert "img_size" not in read_pretrained(foreign, "deit_micro").args


def test_weights_of_another_model_of_the_family_name_it(tmp_path: Path) -> None:
    """`vitc train --pretrained` left at its default model (convit_micro) with convit_tiny weights: the key
    table ended in "does not fit convit_micro" and did not say which model the file holds."""
    tiny = create_model("deit_tiny", depth=1)
    vitc_file = write_checkpoint(tmp_path / "tiny.safetensors", tiny)
    hub = tmp_path / "deit_tiny_patch16_224.fb_in1k"  # a timm hub folder: its config.json names the model
    hub.mkdir()
    torch.save(tiny.state_dict(), hub / "pytorch_model.bin")
    (hub / "config.json").write_text(json.dumps({"architecture": "deit_tiny_patch16_224"}))
    named = r"deit_micro.*; the file holds deit_tiny weights: use --model deit_tiny$"
    for source in (vitc_file, hub):
        with pytest.raises(KeyMismatchError, match=named):
            load_pretrained(create_model("deit_micro"), read_pretrained(source, "deit_micro"))
    foreign = tmp_path / "bare.pth"  # nothing names the model: the message stays as it was
    torch.save(tiny.state_dict(), foreign)
    with pytest.raises(KeyMismatchError) as raised:
        load_pretrained(create_model("deit_micro"), read_pretrained(foreign, "deit_micro"))
    assert "the file holds" not in str(raised.value)


def test_a_run_that_names_no_model_trains_the_one_its_weights_hold(
    pretrained: Path, tmp_path: Path, patch: pytest.MonkeyPatch
) -> None:
    """`vitc train --pretrained FILE` without --model trained convit_micro (and failed on the key table):
    the model the file names is trained, as `yolo train model=yolov8n.pt` does, and the run says so. A run
    folder starts from its best checkpoint (it was refused: "a folder without model.safetensors")."""
    hub = tmp_path / "deit_tiny_patch16_224.fb_in1k"  # a timm hub folder: config.json names the model
    hub.mkdir()
    (hub / "model.safetensors").write_bytes(b"")  # only the name is read here, not the weights
    (hub / "config.json").write_text(json.dumps({"architecture": "deit_tiny_patch16_224.fb_in1k"}))
    bare = tmp_path / "bare.pth"
    bare.write_bytes(b"")
    named = tmp_path / "named.toml"
    named.write_text('[model]\nname = "cvt_micro"\n')
    cases = [  # (recipe, overrides) → the model trained, the first "default:" line
        (None, {"model.pretrained": str(pretrained)}, "deit_micro", "model.name = deit_micro (what"),
        (None, {"model.pretrained": str(pretrained.parent)}, "deit_micro", "model.name = deit_micro (what"),
        (None, {"model.pretrained": str(hub)}, "deit_tiny", "model.name = deit_tiny (what"),
        (None, {"model.pretrained": str(bare)}, "convit_micro", f"model.name = convit_micro ({bare} does not say"),
        (None, {}, "convit_micro", "aug.flip"),  # no weights: the default, not worth a line
        (None, {"model.pretrained": str(hub), "model.name": "deit_micro"}, "deit_micro", "aug.flip"),
        (named, {"model.pretrained": str(hub)}, "cvt_micro", "aug.flip"),  # the recipe names it
    ]
    for recipe, overrides, model, note in cases:
        cfg = load_config(recipe, overrides)
        notes = resolve_defaults(cfg)
        assert (cfg.model.name, cfg.run_name) == (model, model) and notes[0].startswith(note), (overrides, notes)

    patch.setattr(datasets, "_load_digits", _digits(UPPER))
    patch.setattr(loop.report, "plot_curves", lambda *args, **kwargs: None)
    settings = {k: v for k, v in SMALL.items() if not k.startswith("model.")}  # the weights say it all
    run_folder = str(pretrained.parent)  # a run folder starts a run from its best checkpoint, as export reads it
    cfg = load_config(None, {**settings, **FEW_SHOT, "optim.epochs": 1, "model.pretrained": run_folder})
    cfg.run.out_dir = str(tmp_path)
    run = loop.train(cfg, show_progress=False)
    meta = read_meta(run.run_dir / "best.safetensors")
    assert run.run_dir.name == "deit_micro" and meta.model == "deit_micro"
    assert meta.args["depth"] == 2 and meta.args["embed_dim"] == 48  # the architecture the weights have
    assert meta.provenance["pretrained"] == str(pretrained.resolve())


def test_weights_of_another_family_are_refused(tmp_path: Path) -> None:
    cvt = write_checkpoint(tmp_path / "cvt.safetensors", create_model("cvt_micro"))
    with pytest.raises(VitcError, match=r"cvt_micro weights \(cvt family\), not deit_micro \(deit family\)"):
        read_pretrained(cvt, "deit_micro")
    foreign = tmp_path / "cvt.pth"  # no metadata: its tensor names say the family (as vitc import says it)
    torch.save({"model": create_model("cvt_micro").state_dict()}, foreign)
    with pytest.raises(VitcError, match=r"holds cvt weights \(by their tensor names\), not deit_micro"):
        load_pretrained(create_model("deit_micro"), read_pretrained(foreign, "deit_micro"))
    result = CliRunner().invoke(
        app, ["train", "--pretrained", str(cvt), "--model", "deit_micro", "--set", f"run.out_dir={tmp_path}", "-q"]
    )
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "use --model cvt_micro" in result.output


def test_a_missing_tensor_stops_the_run_with_the_table(tmp_path: Path) -> None:
    state = create_model("deit_micro").state_dict()
    del state["blocks.0.attn.qkv.bias"]
    source = tmp_path / "partial.pth"
    torch.save(state, source)
    result = CliRunner().invoke(
        app, ["train", "--pretrained", str(source), "--model", "deit_micro", "--set", f"run.out_dir={tmp_path}", "-q"]
    )
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "missing" in result.output and "blocks.0.attn.qkv.bias" in result.output


def test_layer_decay_scales_each_block() -> None:
    model = create_model("deit_micro", depth=3)
    groups = param_groups(model, 0.05, layer_decay=0.5)
    scale = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    for i in range(3):  # block i of 3 trains at 0.5 ** (3 - i)
        assert scale[id(named[f"blocks.{i}.mlp.fc1.weight"])] == 0.5 ** (3 - i)
    assert scale[id(named["head.weight"])] == scale[id(named["norm.weight"])] == 1.0
    assert scale[id(named["patch_embed.proj.weight"])] == scale[id(named["pos_embed"])] == 0.5**4
    decay = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    assert decay[id(named["pos_embed"])] == decay[id(named["blocks.0.norm1.weight"])] == 0.0
    assert decay[id(named["blocks.0.mlp.fc1.weight"])] == 0.05
    assert sum(len(g["params"]) for g in groups) == len(named)
    off = param_groups(model, 0.05)  # layer_decay 1: the two groups as before, at full rate
    assert [(g["weight_decay"], g["lr_scale"]) for g in off] == [(0.05, 1.0), (0.0, 1.0)]


def test_cvt_layers_number_on_across_stages() -> None:
    ids, depth = layer_ids(create_model("cvt_micro"))  # depths 1, 1, 3
    assert depth == 5
    assert ids["stage0.patch_embed.proj.weight"] == 0 and ids["stage0.blocks.0.attn.proj_q.weight"] == 1
    assert ids["stage1.patch_embed.proj.weight"] == 1 and ids["stage1.blocks.0.attn.proj_q.weight"] == 2
    assert ids["stage2.cls_token"] == 2 and ids["stage2.blocks.2.mlp.fc2.bias"] == 5
    assert ids["head.weight"] == ids["norm.weight"] == 6


def test_freeze_backbone_leaves_only_the_classifier_to_train() -> None:
    model = create_model("deit_micro", depth=1)
    freeze_backbone(model)
    groups = param_groups(model, 0.05)
    trained = {id(p) for g in groups for p in g["params"]}
    assert trained == {id(model.head.weight), id(model.head.bias)}


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("optim.layer_decay", 0.0, "in \\(0, 1\\]"),
        ("optim.layer_decay", 1.5, "in \\(0, 1\\]"),
        ("optim.freeze", "all", "one of"),
    ],
)
def test_fine_tuning_keys_are_checked(key: str, value: Any, message: str) -> None:
    defaults = load_config(None, {})
    assert (defaults.optim.layer_decay, defaults.optim.freeze, defaults.model.pretrained) == (None, "none", None)
    with pytest.raises(VitcError, match=message):
        load_config(None, {key: value})


@pytest.mark.parametrize(
    "recipe", sorted(Path(__file__).parents[2].glob("train/finetune_*.toml")), ids=lambda p: p.stem
)
def test_fine_tuning_recipes_set_every_knob(recipe: Path) -> None:
    text = recipe.read_text()
    for key in ("lr =", "warmup_epochs =", "layer_decay =", "freeze =", "ema_decay =", "pretrained ="):
        assert key in text, key  # each knob is in the recipe, with its default in the comment
    cfg = load_config(recipe, {"data.dir": "photos", "model.pretrained": "weights.safetensors"})
    assert cfg.data.name == "imagefolder" and cfg.optim.layer_decay < 1.0
    assert cfg.optim.batch_size is cfg.optim.lr is cfg.optim.warmup_epochs is None  # fitted to the data's size
    with pytest.raises(VitcError, match="needs a folder"):
        load_config(recipe)


def test_one_class_is_a_one_line_error(tmp_path: Path) -> None:
    for split, count in (("train", 4), ("val", 2)):
        folder = tmp_path / "photos" / split / "cat"
        folder.mkdir(parents=True)
        for i in range(count):
            Image.fromarray(np.full((20, 20, 3), 40 * i, np.uint8)).save(folder / f"{i}.png")
    args = ["train", "--data", "imagefolder", "--data-dir", str(tmp_path / "photos"), "--model", "deit_micro"]
    result = CliRunner().invoke(app, [*args, "--set", f"run.out_dir={tmp_path / 'runs'}", "-q"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "1 class; a classifier needs at least 2" in result.output


def test_a_resumed_fine_tuning_run_keeps_its_provenance(pretrained: Path, tmp_path: Path, patch: pytest.MonkeyPatch):
    """The resume state holds the weights: the pretrained file is not read again (it may be gone)."""
    start = tmp_path / "start.safetensors"
    start.write_bytes(pretrained.read_bytes())
    tuned = FEW_SHOT | {"optim.epochs": 1, "model.pretrained": str(start), "optim.layer_decay": 0.7}
    first = _train(patch, UPPER, tmp_path, "tuned", **tuned)
    before = read_meta(first.run_dir / "last.safetensors").provenance
    start.unlink()
    config = resume_config(load_config(None, {"run.out_dir": str(tmp_path), "run.name": "tuned"}), {"optim.epochs": 2})
    inherited = {**SMALL["model.args"], "img_size": 16}  # the architecture and the size the weights were trained at
    assert config.optim.layer_decay == 0.7 and config.model.args == inherited  # from config.json
    resumed = loop.train(config, resume=True, show_progress=False)
    assert [row["epoch"] for row in resumed.history] == [1, 2]
    after = read_meta(resumed.run_dir / "last.safetensors").provenance
    assert after["pretrained_sha256"] == before["pretrained_sha256"] == sha256_file(pretrained)


def test_a_head_size_other_than_the_data_s_is_refused(tmp_path: Path) -> None:
    """config.json recorded num_classes=5 while the model was built with digits' 10; a resume may not bring it in."""
    runs = ["--set", f"run.out_dir={tmp_path / 'runs'}", "--set", "optim.epochs=1", "-q"]
    for value, said in (("5", "=5,"), ('"10"', "='10',")):
        result = CliRunner().invoke(
            app, ["train", "--model", "deit_micro", *runs, "--set", f"model.args.num_classes={value}"]
        )
        assert result.exit_code == 2 and "Traceback" not in result.output
        assert f"model.args.num_classes{said} but digits has 10 classes" in result.output
    assert not (tmp_path / "runs" / "deit_micro" / "best.safetensors").exists()
    assert CliRunner().invoke(app, ["train", "--model", "deit_micro", *runs]).exit_code == 0
    more = ["--set", "optim.epochs=2", "--set", "model.args.num_classes=5"]
    resumed = CliRunner().invoke(app, ["train", "--resume", "--name", "deit_micro", *runs, *more])
    assert resumed.exit_code == 2 and "model.args.num_classes=5, but digits has 10 classes" in resumed.output
