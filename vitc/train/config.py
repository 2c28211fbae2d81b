"""Training configuration: a TOML recipe, `--set key=value` overrides, strict validation.

A recipe is a TOML file with the sections below; every key has a default, so an empty recipe
trains convit_micro on digits. Unknown keys and wrong types are errors, never silently ignored.
The resolved configuration is saved with the run, so a run can always be repeated exactly.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vitc.errors import VitcError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass
class ModelSection:
    name: str = "convit_micro"
    args: dict[str, Any] = field(default_factory=dict)  # constructor overrides, e.g. {depth = 4}
    drop_path_rate: float = 0.1
    pretrained: str | None = None  # weights to start from: a vitc checkpoint or any file `vitc import` reads


@dataclass
class DataSection:
    name: str = "digits"  # digits | cifar10 | imagefolder
    dir: str | None = None
    fraction: float = 1.0  # stratified share of the training split to use
    image_size: int | None = None  # default: the model's input size
    stream: str = "auto"  # auto (stream above 512 MB of decoded train+val images) | memory | stream
    on_bad_image: str = "skip"  # an unreadable image met while streaming: skip it (logged, counted) | stop


@dataclass
class OptimSection:
    epochs: int = 40
    batch_size: int = 64  # global batch, split across processes
    lr: float = 1e-3
    min_lr: float = 1e-5
    warmup_epochs: int | None = None  # None: WARMUP_EPOCHS, at most WARMUP_SHARE of the run (resolve_defaults)
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    clip_grad: float = 1.0  # max global grad norm; 0 disables
    ema_decay: float = 0.0  # 0 disables EMA; e.g. 0.999
    layer_decay: float = 1.0  # layer-wise lr decay: block i of depth d trains at lr * layer_decay**(d - i); 1 = off
    freeze: str = "none"  # none | backbone (train the classifier only: a linear probe)


@dataclass
class AugSection:
    crop_scale: list[float] = field(default_factory=lambda: [0.5, 1.0])
    flip: bool | None = None  # None: on for photos, off for digits (resolve_defaults)
    mixup: float = 0.0
    cutmix: float = 0.0
    erasing: float = 0.0


@dataclass
class RunSection:
    name: str = ""  # default: the model name
    out_dir: str = "train/runs"
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    amp: str = "auto"  # auto (bf16 on CUDA and on CPUs with native bf16) | off | bf16 | fp16
    workers: int = 0  # DataLoader worker processes when the data streams (0: decode in the training process)


@dataclass
class LogSection:
    tensorboard: bool = False  # event files in <run>/tensorboard/ (pip install 'vitc[tensorboard]')


@dataclass
class TrainConfig:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    aug: AugSection = field(default_factory=AugSection)
    run: RunSection = field(default_factory=RunSection)
    log: LogSection = field(default_factory=LogSection)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def run_name(self) -> str:
        return self.run.name or self.model.name


_CHOICES = {
    "data.name": ("digits", "cifar10", "imagefolder"),
    "data.stream": ("auto", "memory", "stream"),
    "data.on_bad_image": ("skip", "stop"),
    "run.device": ("auto", "cpu", "cuda"),
    "run.amp": ("auto", "off", "bf16", "fp16"),
    "optim.freeze": ("none", "backbone"),
}
_POSITIVE = ("optim.epochs", "optim.batch_size", "optim.lr", "data.image_size")
_NON_NEGATIVE = (
    "optim.min_lr", "optim.warmup_epochs", "optim.weight_decay", "optim.clip_grad",
    "model.drop_path_rate", "aug.mixup", "aug.cutmix", "aug.erasing", "run.workers",
)  # fmt: skip
_UNIT = ("optim.label_smoothing", "optim.ema_decay", "aug.erasing", "model.drop_path_rate")


def _check_type(key: str, value: Any, annotation: str) -> Any:
    """Coerce ints to floats where a float is expected; reject everything else that does not match."""
    if "dict" in annotation:
        ok = isinstance(value, dict)
    elif "list" in annotation:
        ok = isinstance(value, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    elif annotation == "bool":
        ok = isinstance(value, bool)
    elif annotation == "bool | None":
        ok = value is None or isinstance(value, bool)
    elif annotation == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif annotation == "float":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif "int | None" in annotation:
        ok = value is None or (isinstance(value, int) and not isinstance(value, bool))
    else:  # str or str | None
        ok = isinstance(value, str) or (value is None and "None" in annotation)
    if not ok:
        raise VitcError(f"config key {key} expects {annotation}, got {value!r}")
    return value


def apply(cfg: TrainConfig, values: dict[str, Any]) -> TrainConfig:
    """Set dotted keys ("optim.lr", "model.args.depth") on `cfg`, checking names and types."""
    for dotted, value in values.items():
        section_name, _, key = dotted.partition(".")
        section = getattr(cfg, section_name, None)
        if section is None or not dataclasses.is_dataclass(section) or not key:
            sections = ", ".join(f.name for f in dataclasses.fields(cfg))
            raise VitcError(f"unknown config key {dotted!r} (sections: {sections})")
        if section_name == "model" and key.startswith("args."):
            section.args[key[len("args.") :]] = value
            continue
        fields_ = {f.name: f for f in dataclasses.fields(section)}
        if key not in fields_:
            raise VitcError(f"unknown config key {dotted!r} ({section_name} has: {', '.join(fields_)})")
        setattr(section, key, _check_type(dotted, value, str(fields_[key].type)))
    validate(cfg)
    return cfg


def validate(cfg: TrainConfig) -> None:
    flat = {f"{s}.{k}": v for s, sec in cfg.to_dict().items() for k, v in sec.items()}
    for key, value in flat.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise VitcError(f"config key {key} must be a finite number, got {value}")
    if not 0 <= cfg.run.seed < 2**63:
        raise VitcError(f"config key run.seed must be in 0..2**63-1, got {cfg.run.seed}")
    if any(not math.isfinite(v) for v in cfg.aug.crop_scale):
        raise VitcError(f"config key aug.crop_scale must be finite, got {cfg.aug.crop_scale}")
    for key, choices in _CHOICES.items():
        if flat[key] not in choices:
            raise VitcError(f"config key {key} must be one of {', '.join(choices)}, got {flat[key]!r}")
    for key in _POSITIVE:
        if flat[key] is not None and flat[key] <= 0:
            raise VitcError(f"config key {key} must be positive, got {flat[key]}")
    for key in _NON_NEGATIVE:
        if flat[key] is not None and flat[key] < 0:
            raise VitcError(f"config key {key} must not be negative, got {flat[key]}")
    for key in _UNIT:
        if not 0 <= flat[key] < 1:
            raise VitcError(f"config key {key} must be in [0, 1), got {flat[key]}")
    if not 0 < cfg.optim.layer_decay <= 1:
        raise VitcError(f"config key optim.layer_decay must be in (0, 1], got {cfg.optim.layer_decay}")
    if not 0 < cfg.data.fraction <= 1:
        raise VitcError(f"config key data.fraction must be in (0, 1], got {cfg.data.fraction}")
    scale = cfg.aug.crop_scale
    if len(scale) != 2 or not 0 < scale[0] <= scale[1] <= 1:
        raise VitcError(f"config key aug.crop_scale must be [low, high] with 0 < low <= high <= 1, got {scale}")
    if cfg.run.name:
        from vitc.train.run_folder import check_run_name

        check_run_name(cfg.run.name)
    if cfg.data.name != "digits" and not cfg.data.dir:
        raise VitcError(f"data set {cfg.data.name} needs a folder: --data-dir or data.dir")


WARMUP_EPOCHS = 3
WARMUP_SHARE = 0.2  # a default warm-up takes at most this share of the epochs
FLIP_DEFAULTS = {  # is a mirrored image still an image of its class?
    "digits": (False, "mirrored digits are other glyphs"),
    "cifar10": (True, "a mirrored photo shows the same class"),
    "imagefolder": (True, "a mirrored photo shows the same class; set aug.flip=false if not"),
}


def resolve_defaults(cfg: TrainConfig) -> list[str]:
    """Fill in the defaults that depend on the data and the run length; one line per choice, to print.

    The resolved values are what the run folder's config.json records, so a resumed or repeated
    run uses them explicitly.
    """
    notes = []
    if cfg.aug.flip is None:
        cfg.aug.flip, why = FLIP_DEFAULTS[cfg.data.name]
        notes.append(f"aug.flip = {str(cfg.aug.flip).lower()} (default for {cfg.data.name}: {why})")
    if cfg.optim.warmup_epochs is None:
        cfg.optim.warmup_epochs = min(WARMUP_EPOCHS, int(cfg.optim.epochs * WARMUP_SHARE))
        notes.append(
            f"optim.warmup_epochs = {cfg.optim.warmup_epochs} (default {WARMUP_EPOCHS}, "
            f"at most {WARMUP_SHARE:.0%} of {cfg.optim.epochs} epochs)"
        )
    return notes


def _flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in table.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and dotted != "model.args":
            flat.update(_flatten(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def load_config(recipe: str | Path | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Defaults, then the recipe file, then `overrides` (dotted keys), validated together: a fine-tuning
    recipe names data.name = "imagefolder" and leaves the folder to --data-dir."""
    cfg = TrainConfig()
    values: dict[str, Any] = {}
    if recipe is not None:
        path = Path(recipe)
        if not path.is_file():
            raise VitcError(f"recipe {path} not found")
        try:
            table = tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise VitcError(f"recipe {path} is not valid TOML: {exc}") from exc
        except RecursionError:
            raise VitcError(f"recipe {path} is nested too deeply to be a recipe") from None
        values = _flatten(table)
        if isinstance(values.get("model.args"), dict):
            cfg.model.args.update(values.pop("model.args"))
    return apply(cfg, values | (overrides or {}))


def from_dict(record: dict[str, Any]) -> TrainConfig:
    """Rebuild a saved (resolved) configuration."""
    cfg = TrainConfig()
    args = (record.get("model") or {}).get("args") or {}
    if not isinstance(args, dict):
        raise VitcError(f"the saved model.args must be a table, got {str(args)[:40]}")
    cfg.model.args.update(args)
    values = {k: v for k, v in _flatten(record).items() if k != "model.args"}
    return apply(cfg, values)


def resume_config(cfg: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
    """The configuration a run was started with, plus only what the user set explicitly now.

    `vitc train --resume --name X` needs no recipe: the run folder holds the resolved config.
    Explicit overrides (e.g. more epochs) still apply; a different model is caught when resuming.
    """
    from vitc._io import parse_json

    saved = Path(cfg.run.out_dir) / cfg.run_name / "config.json"
    if not saved.is_file():
        raise VitcError(f"nothing to resume: {saved} does not exist")
    try:
        text = saved.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise VitcError(f"{saved} is unreadable ({exc})") from exc
    record = parse_json(text, str(saved))
    if not isinstance(record, dict) or not all(isinstance(v, dict) for v in record.values()):
        raise VitcError(f"{saved} is not a configuration written by vitc train")
    return apply(from_dict(record), overrides)
