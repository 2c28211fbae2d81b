"""Recipes and overrides: defaults, strict keys and types, ranges, resolved config round trip."""

from __future__ import annotations

from pathlib import Path

import pytest

from vitc.cli._options import parse_assignments
from vitc.errors import VitcError
from vitc.train.config import from_dict, load_config
from vitc.train.defaults import resolve_defaults

RECIPES = sorted(Path(__file__).parents[2].joinpath("train").glob("*.toml"))


def test_defaults_train_convit_micro_on_digits() -> None:
    cfg = load_config()
    resolve_defaults(cfg)  # no data.dir: the bundled digits
    assert (cfg.model.name, cfg.data.name, cfg.run_name) == ("convit_micro", "digits", "convit_micro")


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_shipped_recipes_load(recipe: Path) -> None:
    folder = {"data.dir": "photos"} if recipe.stem.startswith("finetune_") else {}  # they leave it to --data-dir
    cfg = load_config(recipe, folder)
    assert cfg.run.name == recipe.stem


def test_recipe_then_overrides(tmp_path: Path) -> None:
    recipe = tmp_path / "r.toml"
    recipe.write_text('[model]\nname = "deit_micro"\nargs = { depth = 2 }\n[optim]\nlr = 0.002\n')
    cfg = load_config(recipe, {"optim.lr": 0.003, "model.args.embed_dim": 64})
    assert cfg.model.name == "deit_micro" and cfg.optim.lr == 0.003
    assert cfg.model.args == {"depth": 2, "embed_dim": 64}
    assert from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"optim.lrr": 1.0}, "unknown config key 'optim.lrr'"),
        ({"nosection.x": 1}, "unknown config key"),
        ({"optim.lr": "fast"}, "expects float"),
        ({"optim.epochs": 2.5}, "expects int"),
        ({"aug.flip": 1}, "expects bool"),
        ({"optim.epochs": 0}, "must be positive"),
        ({"optim.batch_size": -4}, "must be positive"),
        ({"optim.weight_decay": -0.1}, "must not be negative"),
        ({"optim.label_smoothing": 1.5}, "must be in"),
        ({"data.fraction": 0.0}, "data.fraction"),
        ({"aug.crop_scale": [0.9, 0.1]}, "crop_scale"),
        ({"run.device": "tpu"}, r"unknown device .tpu. for --device \(run.device\) \(auto, cpu, cuda\)$"),
        ({"data.name": "imagefolder"}, "needs a folder"),
        ({"aug.repeats": -1}, r"^config key aug.repeats must not be negative, got -1$"),
        ({"aug.repeats": 1.5}, r"^config key aug.repeats expects int, got 1.5$"),
        ({"aug.repeats": True}, r"^config key aug.repeats expects int, got True$"),
        ({"aug.repeats": "3"}, r"^config key aug.repeats expects int, got '3'$"),
        (
            {"aug.train_interpolation": "nearest"},
            r"^config key aug.train_interpolation must be one of random, bilinear, bicubic, got 'nearest'$",
        ),
    ],
)
def test_bad_values_are_clear_errors(overrides: dict, message: str) -> None:
    with pytest.raises(VitcError, match=message):
        load_config(None, overrides)


def test_bad_recipe_files(tmp_path: Path) -> None:
    with pytest.raises(VitcError, match="not found"):
        load_config(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[optim\nlr = ")
    with pytest.raises(VitcError, match="not valid TOML"):
        load_config(broken)
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("[optim]\nlearning_rate = 0.1\n")
    with pytest.raises(VitcError, match="learning_rate"):
        load_config(unknown)


def test_set_parsing() -> None:
    assert parse_assignments(["a.b=1", "c.d=0.5", "e.f=true", "g.h=[1, 2]", "i.j=word"]) == {
        "a.b": 1,
        "c.d": 0.5,
        "e.f": True,
        "g.h": [1, 2],
        "i.j": "word",
    }
    with pytest.raises(VitcError, match="key=value"):
        parse_assignments(["novalue"])


def test_path_keys_start_at_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--set 'run.out_dir=~/my runs'` trained into a literal `./~/my runs/` (the shell leaves `~` after `=`), and
    `--set data.dir=~/photos` or `model.pretrained=~/w.safetensors` said "no such file" of what exists."""
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = load_config(
        None,
        parse_assignments(["run.out_dir=~/my runs", "data.dir=~/photos", "model.pretrained=~/w.safetensors"]),
    )
    assert (cfg.run.out_dir, cfg.data.dir, cfg.model.pretrained) == (
        str(tmp_path / "my runs"),
        str(tmp_path / "photos"),
        str(tmp_path / "w.safetensors"),
    )
    assert load_config(None, {"run.out_dir": "runs/~x"}).run.out_dir == "runs/~x"  # only a leading `~`
