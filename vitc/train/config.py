"""Training configuration: a TOML recipe, `--set key=value` overrides, strict validation.

A recipe is a TOML file with the sections below; every key has a default, so an empty recipe
trains convit_micro on digits. Unknown keys and wrong types are errors, never silently ignored.
The resolved configuration is saved with the run, so a run can always be repeated exactly; the defaults
that depend on the weights and the data are resolved in vitc.train.defaults.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vitc._run_layout import RunLayout
from vitc.data import TRAIN_INTERPOLATIONS
from vitc.errors import DEVICES, VitcError, unknown_device
from vitc.limits import MAX_IMG_SIZE

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


DEFAULT_MODEL = "convit_micro"
PREPROCESS_KEYS = ("mean", "std", "crop_pct", "crop_mode")  # model.*: the run's evaluation transform, where set


@dataclass
class ModelSection:
    name: str | None = None  # None: the model --pretrained holds when the file names it, else DEFAULT_MODEL
    args: dict[str, Any] = field(default_factory=dict)  # constructor overrides, e.g. {depth = 4}
    drop_path_rate: float = 0.1
    pretrained: str | None = None  # weights to start from: a vitc checkpoint or any file `vitc import` reads
    # the normalisation and evaluation crop the run trains and evaluates with, where not the model's registered ones
    # (timm's --mean, --std, --crop-pct): taken from --pretrained weights that record theirs, as timm's train.py
    # takes a hub model's pretrained_cfg (vitc.pretrained.inherited_preprocess), or set; None: the model's
    mean: list[float] | None = None
    std: list[float] | None = None
    crop_pct: float | None = None
    crop_mode: str | None = None


@dataclass
class DataSection:
    name: str | None = None  # digits | cifar10 | imagefolder; None: digits, or the kind data.dir holds
    dir: str | None = None
    fraction: float = 1.0  # stratified share of the training split to use
    image_size: int | None = None  # default: the model's input size
    stream: str = "auto"  # auto (stream above 512 MB of decoded train+val images) | memory | stream
    on_bad_image: str = "skip"  # an unreadable image (in memory or streamed): skip it (told, counted) | stop


@dataclass
class OptimSection:
    epochs: int = 40
    batch_size: int | None = None  # global batch, split across processes; None: 64, or fit to the data when fine-tuning
    lr: float | None = None  # None: 1e-3, or with --pretrained scaled to the batch (vitc.train.defaults)
    min_lr: float = 1e-5
    warmup_epochs: int | None = None  # None: WARMUP_EPOCHS, at most WARMUP_SHARE of the run (vitc.train.defaults)
    # timm's --warmup-lr: the warm-up's first step trains at this, rising linearly to lr; None: lr / warm-up steps
    warmup_lr: float | None = None
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    clip_grad: float = 1.0  # max global grad norm; 0 disables
    ema_decay: float = 0.0  # 0 disables EMA; e.g. 0.999
    layer_decay: float | None = None  # block i of d trains at lr * layer_decay**(d - i); None: 1 (off), tuning 0.75
    freeze: str = "none"  # none | backbone (train the classifier only: a linear probe)
    patience: int = 0  # stop when val top-1 has not improved for this many epochs; 0 = train every epoch


@dataclass
class AugSection:
    crop_scale: list[float] = field(default_factory=lambda: [0.5, 1.0])
    flip: bool | None = None  # None: on for photos, off for digits (vitc.train.defaults)
    mixup: float = 0.0
    cutmix: float = 0.0
    erasing: float = 0.0
    color_jitter: float = 0.0  # timm's --color-jitter: brightness, contrast, saturation each by U(1 - j, 1 + j)
    auto_augment: str = ""  # timm's --aa: "rand-m9-mstd0.5" (RandAugment: -m magnitude, -n ops, -mstd) or "trivial"
    # timm's --train-interpolation: the filter of the random-resized crop's resize and of RandAugment's warps,
    # Pillow's "bilinear" or "bicubic" (DeiT's and ConViT's recipes), or "random" (timm's default: one of the two
    # per image for the crop, per image and op for the warps)
    train_interpolation: str = "random"
    # timm's --aug-repeats (DeiT's --repeated-aug: 3): each image this many times an epoch, each copy augmented
    # apart, in timm's RepeatAugSampler's order and count (vitc.data.sampling.epoch_share); 0 = off
    repeats: int = 0


@dataclass
class RunSection:
    name: str = ""  # default: the model name
    out_dir: str = "train/runs"
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    amp: str = "auto"  # auto (bf16 on CUDA and on CPUs with native bf16) | off | bf16 | fp16
    # DataLoader worker processes when the data streams (0: decode in the training process); default: up to
    # 8 on a GPU, none on a CPU (vitc.train.device.pick_workers)
    workers: int | None = None
    compile: str = "off"  # torch.compile the training step (timm's --torchcompile): inductor | aot_eager | eager
    # inductor's mode (timm's --torchcompile-mode): reduce-overhead replays each step as CUDA graphs, for
    # models whose eager steps wait on kernel launches (docs/operator_counts.py)
    compile_mode: str = "default"
    # timm's --grad-checkpointing: each block's activations are recomputed in the backward instead of kept
    # (less activation memory for more time; the same steps: ZooModel.set_grad_checkpointing)
    grad_checkpointing: bool = False
    # timm's --sync-bn: under DDP on GPUs, BatchNorm (CvT's projections, SP-ViT's stem) normalises over every
    # process's batch, not its own share (torch's SyncBatchNorm); ignored for one process, refused on a CPU
    sync_bn: bool = False


@dataclass
class LogSection:
    tensorboard: bool = False  # event files in <run>/tensorboard/ (pip install 'vitc[tensorboard]')
    # with tensorboard: the locality figures (matplotlib, seconds each: docs/benchmarks.md, "TensorBoard's
    # locality figures") as images every N epochs and at the last;
    # their scalars (attention distance, GPSA gates) every epoch; 0 = scalars only
    figures_every: int = 1
    # output that is not a terminal (a log file, `| tee`, CI) has no progress bar: a line of its figures (step,
    # loss, lr, img/s, ETA) at most every N seconds of an epoch instead, as timm's log_interval; 0 = none
    interval_s: float = 30.0


@dataclass
class TrainConfig:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    aug: AugSection = field(default_factory=AugSection)
    run: RunSection = field(default_factory=RunSection)
    log: LogSection = field(default_factory=LogSection)

    def to_dict(self) -> dict[str, Any]:
        """The configuration as config.json records it; the model's preprocessing keys only where set (a run at
        the model's own keeps the record every vitc wrote)."""
        record = dataclasses.asdict(self)
        for key in PREPROCESS_KEYS:
            if record["model"][key] is None:
                del record["model"][key]
        return record

    @property
    def run_name(self) -> str:
        return self.run.name or self.model.name or DEFAULT_MODEL


_CHOICES = {
    "data.name": ("digits", "cifar10", "imagefolder"),
    "data.stream": ("auto", "memory", "stream"),
    "data.on_bad_image": ("skip", "stop"),
    "run.amp": ("auto", "off", "bf16", "fp16"),
    "run.compile": ("off", "inductor", "aot_eager", "eager"),  # the last two: torch.compile's debugging backends
    "run.compile_mode": ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"),
    "optim.freeze": ("none", "backbone"),
    "aug.train_interpolation": TRAIN_INTERPOLATIONS,
}
_POSITIVE = ("optim.epochs", "optim.batch_size", "optim.lr", "data.image_size")
_NON_NEGATIVE = (
    "optim.min_lr", "optim.warmup_epochs", "optim.warmup_lr", "optim.weight_decay", "optim.clip_grad",
    "optim.patience", "model.drop_path_rate", "aug.mixup", "aug.cutmix", "aug.erasing", "aug.color_jitter",
    "aug.repeats", "run.workers", "log.figures_every", "log.interval_s",
)  # fmt: skip
# keys that name files or folders: a leading `~` is the home folder (`--set run.out_dir=~/runs`, where the shell
# leaves it, made a folder named `~`)
_PATHS = (("model", "pretrained"), ("data", "dir"), ("run", "out_dir"))
_UNIT = ("optim.label_smoothing", "optim.ema_decay", "aug.erasing", "model.drop_path_rate")


def _check_type(key: str, value: Any, annotation: str) -> Any:
    """Coerce ints to floats where a float is expected; reject everything else that does not match."""
    if "dict" in annotation:
        ok = isinstance(value, dict)
    elif "list" in annotation:
        number = (int, float)
        numbers = isinstance(value, list) and all(isinstance(v, number) and not isinstance(v, bool) for v in value)
        ok = numbers or (value is None and "None" in annotation)
    elif annotation == "bool":
        ok = isinstance(value, bool)
    elif annotation == "bool | None":
        ok = value is None or isinstance(value, bool)
    elif annotation == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif annotation in ("float", "float | None"):
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        ok = number or (value is None and "None" in annotation)
        value = float(value) if ok and value is not None else value
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
    """Every key's type (a config built or edited in Python was checked by value only) and value."""
    for section in dataclasses.fields(cfg):
        values = getattr(cfg, section.name)
        for key in dataclasses.fields(values):
            dotted = f"{section.name}.{key.name}"
            setattr(values, key.name, _check_type(dotted, getattr(values, key.name), str(key.type)))
    for section_name, key_name in _PATHS:
        section_ = getattr(cfg, section_name)
        if getattr(section_, key_name):
            setattr(section_, key_name, os.path.expanduser(getattr(section_, key_name)))
    flat = {f"{s}.{k}": v for s, sec in cfg.to_dict().items() for k, v in sec.items()}
    for key, value in flat.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise VitcError(f"config key {key} must be a finite number, got {value}")
    if not 0 <= cfg.run.seed < 2**63:
        raise VitcError(f"config key run.seed must be in 0..2**63-1, got {cfg.run.seed}")
    if any(not math.isfinite(v) for v in cfg.aug.crop_scale):
        raise VitcError(f"config key aug.crop_scale must be finite, got {cfg.aug.crop_scale}")
    if cfg.run.device not in DEVICES:
        raise unknown_device(cfg.run.device, DEVICES, "--device (run.device)")
    for key, choices in _CHOICES.items():
        if flat[key] not in choices and not (key == "data.name" and flat[key] is None):
            raise VitcError(f"config key {key} must be one of {', '.join(choices)}, got {flat[key]!r}")
    if cfg.run.compile_mode != "default" and cfg.run.compile != "inductor":
        raise VitcError(
            f"config key run.compile_mode={cfg.run.compile_mode} is inductor's; set run.compile=inductor "
            f"(got {cfg.run.compile!r})"
        )
    for key in _POSITIVE:
        if flat[key] is not None and flat[key] <= 0:
            raise VitcError(f"config key {key} must be positive, got {flat[key]}")
    if cfg.data.image_size is not None and cfg.data.image_size > MAX_IMG_SIZE:  # before any image is resized
        raise VitcError(f"config key data.image_size must be at most {MAX_IMG_SIZE}, got {cfg.data.image_size}")
    for key in _NON_NEGATIVE:
        if flat[key] is not None and flat[key] < 0:
            raise VitcError(f"config key {key} must not be negative, got {flat[key]}")
    for key in _UNIT:
        if not 0 <= flat[key] < 1:
            raise VitcError(f"config key {key} must be in [0, 1), got {flat[key]}")
    check_warmup_lr(cfg.optim)
    if cfg.optim.layer_decay is not None and not 0 < cfg.optim.layer_decay <= 1:
        raise VitcError(f"config key optim.layer_decay must be in (0, 1], got {cfg.optim.layer_decay}")
    if not 0 < cfg.data.fraction <= 1:
        raise VitcError(f"config key data.fraction must be in (0, 1], got {cfg.data.fraction}")
    scale = cfg.aug.crop_scale
    if len(scale) != 2 or not 0 < scale[0] <= scale[1] <= 1:
        raise VitcError(f"config key aug.crop_scale must be [low, high] with 0 < low <= high <= 1, got {scale}")
    if cfg.run.name:
        from vitc.train.run_folder import check_run_name

        check_run_name(cfg.run.name)
    if cfg.data.name not in (None, "digits") and not cfg.data.dir:
        raise VitcError(f"data set {cfg.data.name} needs a folder: --data-dir or data.dir")
    if cfg.aug.auto_augment:
        parse_auto_augment(cfg.aug.auto_augment)
        if cfg.aug.color_jitter:  # timm turns colour jitter off under --aa: its ops already change colour
            raise VitcError("aug.color_jitter and aug.auto_augment exclude each other (as in timm): set one")
    _validate_preprocess(cfg.model)
    if cfg.aug.color_jitter > 1:
        raise VitcError(f"config key aug.color_jitter must be in [0, 1], got {cfg.aug.color_jitter}")


def check_warmup_lr(optim: OptimSection) -> None:
    """A warm-up that starts above the rate it rises to is no warm-up: refused once the rate and the warm-up are
    known (an lr or warmup_epochs left to the defaults is checked once vitc.train.defaults has set it). Without a
    warm-up (warmup_epochs 0) warmup_lr has no effect and is taken, as timm ignores its --warmup-lr then."""
    known = optim.warmup_lr is not None and optim.lr is not None and optim.warmup_epochs is not None
    if known and optim.warmup_epochs > 0 and optim.warmup_lr > optim.lr:
        raise VitcError(
            f"config key optim.warmup_lr must be at most optim.lr ({optim.lr:g}), the rate the warm-up rises to, "
            f"got {optim.warmup_lr:g}"
        )


def _validate_preprocess(model: ModelSection) -> None:
    """model.mean, model.std, model.crop_pct, model.crop_mode where set; the channel count is the model's, checked
    when the run is set up (vitc.train.setup)."""
    from vitc.artifacts.preprocess import check_crop_mode, check_crop_pct, check_norm

    for key in ("mean", "std"):
        values = getattr(model, key)
        if values is not None:
            check_norm(values, len(values) or 1, f"config key model.{key}", positive=key == "std")
    if model.crop_pct is not None:
        check_crop_pct(model.crop_pct, "config key model.crop_pct")
    if model.crop_mode is not None:
        check_crop_mode(model.crop_mode, "config key model.crop_mode")


def parse_auto_augment(spec: str) -> dict[str, Any]:
    """timm's --aa string: "rand-m9-mstd0.5[-n2][-inc1]" is RandAugment (magnitude 0-10, ops per image,
    the magnitude's std, timm's increasing-severity ops as DeiT's recipe uses them), "trivial"
    TrivialAugment (one op, a uniform magnitude); the augmenter's arguments. As timm's
    `rand_augment_transform`: the magnitude is 10 unless given, and an std above 100 draws it uniformly
    from 0 to the magnitude."""
    if spec == "trivial":
        return {"kind": "trivial"}
    kind, *parts = spec.split("-")
    args: dict[str, Any] = {"kind": "rand", "magnitude": 10.0, "num_ops": 2, "magnitude_std": 0.0}
    names = {"m": "magnitude", "n": "num_ops", "mstd": "magnitude_std", "inc": "increasing"}
    for part in parts:
        key = next((k for k in ("mstd", "m", "n", "inc") if part.startswith(k)), None)
        try:
            value = float(part[len(key) :]) if key else math.nan
        except ValueError:
            value = math.nan
        unreadable = key is None or not math.isfinite(value) or value < 0
        if unreadable or (key in ("n", "inc") and value != int(value)) or (key == "inc" and value > 1):
            kind = "bad"
            break
        args[names[key]] = int(value) if key == "n" else value == 1 if key == "inc" else value
        if key == "mstd" and value > 100:
            args["magnitude_std"] = math.inf
    if kind != "rand" or args["magnitude"] > 10:
        raise VitcError(
            f'aug.auto_augment {spec!r} is not one vitc knows: "rand-m9-mstd0.5" (RandAugment: -m magnitude '
            f'0-10, -n ops per image, -mstd its std, -inc1 increasing severity) or "trivial" (TrivialAugment)'
        )
    return args


def flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in table.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and dotted != "model.args":
            flat.update(flatten(value, f"{dotted}."))
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
            values = flatten(table)  # a dotted key 3,000 parts long parses, then recurses here
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise VitcError(f"recipe {path} is not valid TOML: {exc}") from exc
        except RecursionError:
            raise VitcError(f"recipe {path} is nested too deeply to be a recipe") from None
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
    values = {k: v for k, v in flatten(record).items() if k != "model.args"}
    return apply(cfg, values)


def resume_config(cfg: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
    """The configuration a run was started with, plus only what the user set explicitly now.

    `vitc train --resume RUN` (or `--resume --name X`) needs no recipe: the run folder holds the resolved config.
    Explicit overrides (e.g. more epochs) still apply; a different model is caught when resuming.
    """
    from vitc._io import parse_json
    from vitc.train.agree import NothingToResume

    saved = RunLayout(Path(cfg.run.out_dir) / cfg.run_name).config
    if not saved.is_file():
        raise NothingToResume(f"nothing to resume: {saved} does not exist")
    try:
        text = saved.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise VitcError(f"{saved} is unreadable ({exc})") from exc
    record = parse_json(text, str(saved))
    if not isinstance(record, dict) or not all(isinstance(v, dict) for v in record.values()):
        raise VitcError(f"{saved} is not a configuration written by vitc train")
    return apply(from_dict(record), overrides)
