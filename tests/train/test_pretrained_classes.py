"""A classifier's rows follow the classes its file names: a timm hub folder's label_names, a Hugging Face
folder's id2label, a vitc checkpoint's class_names. `vitc train --pretrained` reorders the rows to the run's
classes or re-initialises them for other classes; `vitc import` takes the folder's class count and names."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

import vitc
from vitc.checkpoint import meta_for, read_meta, write_checkpoint
from vitc.cli.main import app
from vitc.errors import VitcError
from vitc.models import create_model
from vitc.pretrained import load_pretrained, read_pretrained

MICRO: dict[str, Any] = {"depth": 1, "embed_dim": 32, "num_heads": 2}
RUN = ["2", "10", "café", "Zebra"]  # the run's rows: timm's order of its folders
FILE = ["café", "2", "Zebra", "10"]  # the fine-tuned file's rows (a timm --class-map, an id2label)
SET_MICRO = ["--set", "depth=1", "--set", "embed_dim=32", "--set", "num_heads=2"]
runner = CliRunner()


def _source(classes: int = 4) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("deit_micro", num_classes=classes, **MICRO).eval()


def _timm_hub(folder: Path, model: torch.nn.Module, names: list[str] | None, where: str = "top") -> Path:
    """The folder timm's push_to_hub writes: model.safetensors and a config.json with label_names."""
    folder.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "model.safetensors")
    classes = model.head.weight.shape[0]
    config: dict[str, Any] = {"architecture": "deit_micro", "num_classes": classes, "num_features": 32}
    config["pretrained_cfg"] = {"num_classes": classes, "classifier": "head"}
    if names is not None:
        (config if where == "top" else config["pretrained_cfg"])["label_names"] = names
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def _run_model(classes: int = 4, **args: Any) -> torch.nn.Module:
    torch.manual_seed(1)
    return create_model("deit_micro", num_classes=classes, **MICRO, **args).eval()


def _permuted(model: torch.nn.Module, source: torch.nn.Module, named: list[str], x: torch.Tensor) -> None:
    """`model` computes `source`'s logits, columns in the run's order."""
    with torch.no_grad():
        expected = source(x)[:, [named.index(name) for name in RUN]]
        assert torch.allclose(model(x), expected, atol=1e-6)


@pytest.mark.parametrize("where", ["top", "pretrained_cfg"])
def test_a_timm_hub_folders_head_rows_follow_the_runs_classes(tmp_path: Path, where: str) -> None:
    source = _source()
    folder = _timm_hub(tmp_path / "hub", source, FILE, where)
    pretrained = read_pretrained(folder, "deit_micro")
    assert pretrained.class_names == FILE
    model = _run_model()
    note = load_pretrained(model, pretrained, RUN)
    assert "and its classifier, rows reordered to this run's classes (the file's: café, 2, Zebra, 10)" in note
    _permuted(model, source, FILE, torch.randn(3, 3, 32, 32))


def test_a_hugging_face_folders_head_rows_follow_the_runs_classes(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    micro = {"embed_dim": [32, 64, 96], "depth": [1, 2, 3], "num_heads": [1, 2, 3], "patch_sizes": [3, 3, 3]}
    micro |= {"patch_stride": [2, 2, 2], "patch_padding": [1, 1, 1], "image_size": 32}
    torch.manual_seed(0)
    config = transformers.CvtConfig(**micro, num_labels=4, id2label=dict(enumerate(FILE)))
    hf = transformers.CvtForImageClassification(config).eval()
    hf.save_pretrained(tmp_path / "hf")
    pretrained = read_pretrained(tmp_path / "hf", "cvt_micro")
    assert pretrained.class_names == FILE
    assert pretrained.args["depths"] == [1, 2, 3]  # the folder's shape, from its config.json
    model = create_model("cvt_micro", num_classes=4, **pretrained.args).eval()
    note = load_pretrained(model, pretrained, RUN)
    assert "rows reordered" in note
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = hf(pixel_values=x).logits[:, [FILE.index(name) for name in RUN]]
        assert torch.allclose(model(x), expected, atol=1e-5)


def test_a_vitc_run_from_before_timms_order_fine_tunes_with_its_rows_reordered(tmp_path: Path) -> None:
    """Its checkpoint names plainly sorted classes (10, 2, Zebra, café): the head is kept, reordered."""
    source = _source()
    old = sorted(RUN)
    path = write_checkpoint(tmp_path / "old.safetensors", source, meta_for(source, class_names=old))
    model = _run_model()
    assert "rows reordered" in load_pretrained(model, read_pretrained(path, "deit_micro"), RUN)
    _permuted(model, source, old, torch.randn(2, 3, 32, 32))


def test_other_classes_re_initialise_the_head_and_say_why(tmp_path: Path) -> None:
    source = _source()
    folder = _timm_hub(tmp_path / "hub", source, ["2", "10", "café", "owl"])
    model = _run_model()
    fresh = model.head.weight.detach().clone()
    note = load_pretrained(model, read_pretrained(folder, "deit_micro"), RUN)
    assert "head re-initialised (the file's classes are 2, 10, café, owl, this run's 2, 10, café, Zebra)" in note
    assert torch.equal(model.head.weight, fresh)
    assert torch.equal(model.blocks[0].attn.qkv.weight, source.blocks[0].attn.qkv.weight)


def test_a_file_naming_no_classes_gives_its_rows_in_order_and_says_so(tmp_path: Path) -> None:
    source = _source()
    unnamed = _timm_hub(tmp_path / "hub", source, None)
    model = _run_model()
    note = load_pretrained(model, read_pretrained(unnamed, "deit_micro"), RUN)
    assert "the file names no classes: its rows are taken in this run's order" in note
    assert torch.equal(model.head.weight, source.head.weight)
    # transformers' LABEL_0, LABEL_1, ... name no classes either
    (unnamed / "config.json").write_text(json.dumps({"id2label": {str(i): f"LABEL_{i}" for i in range(4)}}))
    assert read_pretrained(unnamed, "deit_micro").class_names is None


def test_import_of_a_fine_tuned_timm_folder_takes_its_class_count_and_names(tmp_path: Path) -> None:
    """It failed on the head's shape (a table, no hint) and, given --set num_classes, named no classes."""
    source = _source()
    folder = _timm_hub(tmp_path / "hub", source, RUN)
    result = runner.invoke(app, ["import", str(folder), "-o", str(tmp_path / "out"), *SET_MICRO])
    assert result.exit_code == 0, result.output
    assert "num_classes=4 (its folder's config.json says" in result.output
    meta = read_meta(tmp_path / "out" / "model.safetensors")
    assert meta.class_names == RUN and meta.cfg.num_classes == 4
    loaded = vitc.load_model(folder, **MICRO)  # the API takes the count too
    assert loaded.vitc_class_names == RUN


def test_a_head_of_another_count_names_the_setting(tmp_path: Path) -> None:
    torch.save(_source().state_dict(), tmp_path / "four.pth")
    said = (
        r"its classifier has 4 classes, deit_micro 10: load it with num_classes=4 \(vitc import: --set num_classes=4\)$"
    )
    with pytest.raises(VitcError, match=said):  # in the Python call's words too (only --set before)
        vitc.load_model(tmp_path / "four.pth", "deit_micro", **MICRO)
    result = runner.invoke(app, ["import", str(tmp_path / "four.pth"), "-m", "deit_micro", "-o", str(tmp_path / "o")])
    assert result.exit_code == 2 and "(vitc import: --set num_classes=4)" in result.output


@pytest.mark.parametrize("spvit", [False, True])
def test_num_classes_gives_a_fresh_head_as_timm_does(tmp_path: Path, spvit: bool) -> None:
    """timm's create_model(name, pretrained=True, num_classes=N) keeps the weights but the classifier, which
    it initialises afresh: vitc.load_model refused a file or checkpoint of another class count (the count hint,
    "load it as it is, then model.reset_classifier(N)"). SP-ViT's token-labelling head is re-initialised too."""
    name, args = ("spvit_micro", {"aux_head": True}) if spvit else ("deit_micro", MICRO)
    torch.manual_seed(0)
    source = create_model(name, num_classes=4, **args).eval()
    torch.save(source.state_dict(), tmp_path / "four.pth")
    checkpoint = write_checkpoint(tmp_path / "four.safetensors", source, meta_for(source, class_names=RUN))
    folder = _timm_hub(tmp_path / "hub", source, RUN) if not spvit else None
    loads = [lambda n: vitc.load_model(tmp_path / "four.pth", name, num_classes=n, **args)]
    loads.append(lambda n: vitc.load_model(checkpoint, num_classes=n))
    if folder is not None:
        loads.append(lambda n: vitc.load_model(folder, num_classes=n, **args))
    heads = ("head.", "aux_head.")
    for load in loads:
        fresh = load(7)
        kept = {k: v for k, v in source.state_dict().items() if not k.startswith(heads)}
        assert all(torch.equal(fresh.state_dict()[k], v) for k, v in kept.items())
        assert fresh.head.weight.shape == (7, source.embed_dim) and not fresh.training
        assert fresh.pretrained_cfg["num_classes"] == 7 and fresh.vitc_class_names is None
        if spvit:
            assert fresh.aux_head.weight.shape == (7, source.embed_dim)
        same = load(4)  # the weights' own count: their classifier, as before
        assert all(torch.equal(same.state_dict()[k], v) for k, v in source.state_dict().items())
    saved = vitc.save_checkpoint(tmp_path / "seven.safetensors", fresh)  # the new head is recorded: it round-trips
    assert read_meta(saved).cfg.num_classes == 7 and vitc.load_model(saved).head.weight.shape == (7, source.embed_dim)


def test_import_attaches_class_names_to_weights_that_have_none(tmp_path: Path) -> None:
    torch.save(_source().state_dict(), tmp_path / "four.pth")
    listed = tmp_path / "classes.txt"
    listed.write_text("2\n10\ncafé\nZebra\n\n")  # timm's --class-map .txt: row i on line i
    base = ["import", str(tmp_path / "four.pth"), "-m", "deit_micro", "--set", "num_classes=4", *SET_MICRO]
    for given, out in ((str(listed), "a"), ("2, 10,café,Zebra", "b")):
        result = runner.invoke(app, [*base, "-o", str(tmp_path / out), "--class-names", given])
        assert result.exit_code == 0, result.output
        assert read_meta(tmp_path / out / "model.safetensors").class_names == RUN
    refused = runner.invoke(app, [*base, "-o", str(tmp_path / "c"), "--class-names", "a,b,c"])
    assert refused.exit_code == 2 and "--class-names: 3 names for a classifier of 4 classes" in refused.output


@pytest.mark.parametrize(
    ("given", "message"),
    [("a,,b", "name 2 is empty"), ("a,b,a", "'a' is named twice"), ("nothing.txt", "no such file")],
)
def test_bad_class_names_are_one_line(given: str, message: str) -> None:
    from vitc.cli.import_ import read_class_names

    with pytest.raises(VitcError, match=message):
        read_class_names(given)
