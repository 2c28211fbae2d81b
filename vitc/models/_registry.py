"""Model registry: `@register_model` entry points, `create_model`, `list_models`.

As in timm, each family file ends with short registered entry points that only set constructor
arguments. The registry records the model class too, so overrides are checked against its
signature and a typo is a clear error instead of a TypeError deep in a constructor.
"""

from __future__ import annotations

import fnmatch
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from torch import nn

# defined without torch: checkpoints are read on the runtime path
from vitc.artifacts.model_cfg import IMAGENET_CLASSES, POOLING_ARGS, ModelCfg
from vitc.errors import VitcError
from vitc.limits import MAX_DEPTH, MAX_IMG_SIZE, MAX_INT_ARG


@dataclass(frozen=True)
class _Entry:
    name: str
    fn: Callable[..., nn.Module]
    cfg: ModelCfg


_ENTRIES: dict[str, _Entry] = {}
# sizes of which 0 builds a module that fails in its first forward (a conv of no channel, stride or kernel)
POSITIVE_SIZES = ("img_size", "num_heads", "embed_dim", "embed_dims", "patch_size", "patch_sizes", "patch_strides")
POSITIVE_SIZES += ("in_chans", "stem_chans")
F = TypeVar("F", bound=Callable[..., nn.Module])
M = TypeVar("M", bound=nn.Module)


def register_model(family: str, **cfg: Any) -> Callable[[F], F]:
    """Register an entry point `fn(**overrides) -> nn.Module` under its function name."""

    def wrap(fn: F) -> F:
        _ENTRIES[fn.__name__] = _Entry(fn.__name__, fn, ModelCfg(family=family, **cfg))
        return fn

    return wrap


def check_arg(cls_name: str, key: str, value: Any, default: Any) -> None:
    """An override must have its default's type (ints for ints, finite numbers for floats) and a sane size."""

    def bad(why: str) -> VitcError:
        return VitcError(f"{cls_name} argument {key}={str(value)[:40]!r}: {why}")

    if isinstance(default, bool) or isinstance(value, bool):
        if not isinstance(value, bool) or not isinstance(default, bool):
            raise bad(f"expects {type(default).__name__}")
        return
    if key == "img_size" and isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise bad("expects a size or (height, width)")
        for side in value:
            check_arg(cls_name, key, side, default if isinstance(default, int) else 224)
        return
    if isinstance(default, int):
        if not isinstance(value, int):
            raise bad("expects an integer")
        low = 1 if key in POSITIVE_SIZES else 0
        high = {"img_size": MAX_IMG_SIZE, "depth": MAX_DEPTH}.get(key, MAX_INT_ARG)
        if not low <= value <= high:
            raise bad(f"must be between {low} and {high}")
    elif isinstance(default, float):
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise bad("expects a finite, non-negative number")
    elif isinstance(default, (tuple, list)):
        if not isinstance(value, (tuple, list)) or len(value) > MAX_DEPTH:
            raise bad("expects a list")
        for item in value:
            check_arg(cls_name, key, item, default[0] if default else item)


def build_model(cls: type[M], defaults: dict[str, Any], overrides: dict[str, Any]) -> M:
    """Construct `cls` from an entry point's defaults and the caller's overrides, checking names, types, sizes."""
    params = inspect.signature(cls.__init__).parameters
    unknown = sorted(set(overrides) - set(params) - {"self"})
    if unknown:
        allowed = ", ".join(p for p in params if p != "self")
        raise VitcError(f"{cls.__name__} takes no argument {', '.join(unknown)} (it takes: {allowed})")
    args = {**defaults, **overrides}
    for key, value in args.items():
        default = defaults.get(key, params[key].default if key in params else inspect.Parameter.empty)
        if default is not inspect.Parameter.empty and default is not None and value is not None:
            check_arg(cls.__name__, key, value, default)
    try:
        return cls(**args)
    except (ValueError, TypeError, ZeroDivisionError, RuntimeError, AssertionError) as exc:
        # e.g. embed_dim not divisible by num_heads, a patch larger than the image, a negative width
        raise VitcError(f"cannot build {cls.__name__}: {exc}") from exc


def list_models(pattern: str = "*", family: str | None = None, pretrained: bool = False) -> list[str]:
    """Registered model names matching a shell-style pattern, in registration order.

    `pretrained` is timm's argument: only the models with official pretrained weights vitc can import (`vitc
    import`, `vitc.load_model(path, name)`; vitc downloads none), i.e. those registered at ImageNet-1k's classes,
    as their releases were trained; not the `_micro` models, vitc's own for 32×32 images.
    """
    return [
        n
        for n, e in _ENTRIES.items()
        if fnmatch.fnmatch(n, pattern)
        and (family is None or e.cfg.family == family)
        and (not pretrained or e.cfg.num_classes == IMAGENET_CLASSES)
    ]


def unknown_model(name: str) -> VitcError:
    """The error for a name that is not registered, suggesting close names."""
    from vitc.errors import unknown_model as message

    return message(name, list(_ENTRIES))


def _entry(name: str) -> _Entry:
    if name not in _ENTRIES:
        raise unknown_model(name)
    return _ENTRIES[name]


def registered_module(name: str) -> str:
    """The module whose `@register_model` registered `name`: its family's code (checkpoint_filter_fn)."""
    return _entry(name).fn.__module__


def model_cfg(name: str, **overrides: Any) -> ModelCfg:
    """The model's data config, with the input size and classes that `overrides` set."""
    cfg = _entry(name).cfg
    chans = int(overrides.get("in_chans", cfg.input_size[0]))
    size = overrides.get("img_size", cfg.input_size[1:])
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    classes = int(overrides.get("num_classes", cfg.num_classes))
    mean, std = per_channel(cfg.mean, chans), per_channel(cfg.std, chans)
    return replace(cfg, input_size=(chans, int(height), int(width)), num_classes=classes, mean=mean, std=std)


def per_channel(values: tuple[float, ...], chans: int) -> tuple[float, ...]:
    """A registered mean or std for `chans` input channels: as it is for its own count, else its average in
    every channel (a grey image's statistics are near the RGB ones' mean), as timm's loader adapts them
    (timm.data.loader.adapt_to_chs)."""
    if len(values) == chans:
        return values
    return (sum(values) / len(values),) * chans


def create_model(name: str, pretrained: bool = False, **overrides: Any) -> nn.Module:
    """Build a registered model; `overrides` replace constructor arguments (img_size, depth, ...).

    The returned module remembers how it was built (`vitc_name`, `vitc_args`, `vitc_cfg`), which is
    what checkpoints store so that every later step rebuilds it without extra flags. `pretrained`
    is timm's argument: vitc downloads no weights, so only False is accepted.
    """
    entry = _entry(name)
    if pretrained:
        raise VitcError(
            f"vitc downloads no weights (pretrained=True): load a downloaded file with vitc.load_model(path, "
            f"{name!r}) (an official or timm .pth, a timm or Hugging Face folder), or convert it once with "
            "`vitc import`"
        )
    model = entry.fn(**overrides)
    model.vitc_name = name
    model.vitc_args = {key: value for key, value in overrides.items() if not _default_pooling(model, key, value)}
    model.vitc_cfg = model_cfg(name, **overrides)
    return model


def follow_classes(model: nn.Module, num_classes: int, pooling: dict[str, Any] | None = None) -> None:
    """Make what `create_model` recorded (`vitc_args`, `vitc_cfg`) describe a new head of `num_classes`
    and the constructor arguments `pooling` (those at their default are left out, as create_model's are).

    A checkpoint writes that record, and `load_model` rebuilds the head from it: a model saved after
    `reset_classifier` must name the head it holds. Class names loaded with the old head no longer apply.
    """
    args, cfg = getattr(model, "vitc_args", None), getattr(model, "vitc_cfg", None)
    if args is not None:
        args = {**args, "num_classes": num_classes}
        for key, value in (pooling or {}).items():
            if _default_pooling(model, key, value):
                args.pop(key, None)
            else:
                args[key] = value
        model.vitc_args = args
    if cfg is not None:
        model.vitc_cfg = replace(cfg, num_classes=num_classes)
    if getattr(model, "vitc_class_names", None) is not None:
        model.vitc_class_names = None


def _default_pooling(model: nn.Module, key: str, value: Any) -> bool:
    """timm's pooling arguments (global_pool, fc_norm) at the model's default are not recorded: a checkpoint of
    a class-token model built with global_pool="token" stays one that any vitc reads."""
    if key not in POOLING_ARGS:
        return False
    parameter = inspect.signature(type(model).__init__).parameters.get(key)
    return parameter is not None and value == parameter.default


def get_model_cfg(model: nn.Module) -> ModelCfg:
    """The data config of a model built by `create_model`."""
    cfg = getattr(model, "vitc_cfg", None)
    if cfg is None:
        raise VitcError("this model was not built by vitc.create_model and carries no config")
    return cfg
