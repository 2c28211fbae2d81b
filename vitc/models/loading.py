"""Strict state-dict loading that explains a mismatch instead of dumping PyTorch's message."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from vitc.errors import VitcError
from vitc.limits import MAX_MODEL_BYTES


@dataclass
class KeyReport:
    """How a state dict differs from a model: the table `vitc import` prints."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    wrong_shape: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)  # key, model, file

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.wrong_shape)

    def rows(self, limit: int = 20) -> list[tuple[str, str, str]]:
        """(problem, key, detail) rows, at most `limit` per problem."""
        rows = [("missing", k, "in the model, not in the file") for k in self.missing[:limit]]
        rows += [("unexpected", k, "in the file, not in the model") for k in self.unexpected[:limit]]
        rows += [("wrong shape", k, f"model {list(m)} vs file {list(f)}") for k, m, f in self.wrong_shape[:limit]]
        return rows

    def summary(self) -> str:
        counts = (len(self.missing), len(self.unexpected), len(self.wrong_shape))
        return "{} missing, {} unexpected, {} wrongly shaped keys".format(*counts)


class KeyMismatchError(VitcError):
    """Raised when weights do not fit a model; carries the report for a table."""

    def __init__(self, message: str, report: KeyReport) -> None:
        super().__init__(message)
        self.report = report


def compare_shapes(expected: Mapping[str, Sequence[int]], given: Mapping[str, Sequence[int]]) -> KeyReport:
    """How the tensor table `given` (key -> shape) differs from `expected`."""
    return KeyReport(
        missing=[k for k in expected if k not in given],
        unexpected=[k for k in given if k not in expected],
        wrong_shape=[
            (k, tuple(expected[k]), tuple(v))
            for k, v in given.items()
            if k in expected and tuple(v) != tuple(expected[k])
        ],
    )


def compare_keys(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> KeyReport:
    return compare_shapes(_shapes(model.state_dict()), _shapes(state_dict))


def _shapes(tensors: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in tensors.items()}


def adapt_input_conv(in_chans: int, weight: torch.Tensor) -> torch.Tensor:
    """3-channel (RGB) convolution weights for `in_chans` input channels, as timm's adapt_input_conv: summed
    over the channels for 1 (a grey image then gives what the RGB weights give it replicated in each
    channel), else repeated to `in_chans` and scaled by 3/in_chans. In float32, returned in the weight's dtype."""
    dtype = weight.dtype
    weight = weight.float()
    if in_chans == 1:
        weight = weight.sum(dim=1, keepdim=True)
    else:
        weight = weight.repeat(1, math.ceil(in_chans / 3), 1, 1)[:, :in_chans] * (3 / in_chans)
    return weight.to(dtype)


def adapts_input_conv(
    model: nn.Module, key: str, model_shape: Sequence[int], file_shape: Sequence[int], source: str
) -> bool:
    """Whether tensor `key` is the model's first convolution held for another channel count that
    `adapt_input_conv` turns into the model's; a VitcError for a count it cannot (not 3, as timm's cannot)."""
    ours, theirs = list(model_shape), list(file_shape)
    if key != f"{getattr(model, 'first_conv', None)}.weight" or len(ours) != 4 or len(theirs) != 4 or ours == theirs:
        return False
    if ours[:1] + ours[2:] != theirs[:1] + theirs[2:]:
        return False  # another width or kernel: the key table says so
    if theirs[1] != 3:
        raise VitcError(
            f"{source}: its first convolution {key} is for {theirs[1]} input channels, the model's for {ours[1]}; only "
            f"3-channel (RGB) weights adapt to another count (as in timm): build the model with in_chans={theirs[1]}"
        )
    return True


def adapt_input_channels(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str
) -> tuple[dict[str, torch.Tensor], str | None]:
    """`state_dict` with its RGB first convolution adapted to the model's channel count (timm's load_pretrained
    does it for in_chans != 3), and the line that says so, None where nothing was adapted."""
    key = f"{getattr(model, 'first_conv', None)}.weight"
    theirs, ours = state_dict.get(key), model.state_dict().get(key)
    if theirs is None or ours is None or not adapts_input_conv(model, key, ours.shape, theirs.shape, source):
        return dict(state_dict), None
    chans = ours.shape[1]
    how = "summed over their channels" if chans == 1 else f"repeated and scaled by 3/{chans}"
    note = f"{key}: 3-channel (RGB) weights adapted to in_chans={chans}, {how} (as timm's adapt_input_conv)"
    return {**state_dict, key: adapt_input_conv(chans, theirs)}, note


POS_EMBED = "pos_embed"  # the one tensor whose shape follows img_size (DeiT, ConViT, SP-ViT; CvT has none)


def build_within_limits(
    name: str,
    args: dict[str, Any],
    source: str,
    shapes: Mapping[str, Sequence[int]] | None = None,
    resampled: bool = False,
) -> nn.Module:
    """Build `name(**args)` only once a skeleton on the meta device (no memory) has shown that it fits."""
    check_skeleton(name, args, source, shapes, resampled)
    from vitc.models._registry import create_model

    return create_model(name, **args)


def check_skeleton(
    name: str,
    args: dict[str, Any],
    source: str,
    shapes: Mapping[str, Sequence[int]] | None = None,
    resampled: bool = False,
) -> None:
    """That `name(**args)`, built on the meta device (no memory), has its tensors within MAX_MODEL_BYTES and,
    when `shapes` (a file's tensor table) are given, the same keys and shapes as the file (but an RGB first
    convolution, which `adapt_input_channels` fits to the model's in_chans, and, when `resampled`, a position
    embedding of another grid, which `resample_to_grid` fits). Arguments read from a file can then never size
    an allocation, and a checkpoint is never written that its own description does not rebuild."""
    from vitc.models._registry import create_model

    with torch.device("meta"):
        skeleton = create_model(name, **args)
    tensors = [*skeleton.parameters(), *skeleton.buffers()]
    needed = sum(t.numel() * t.element_size() for t in tensors)
    if needed > MAX_MODEL_BYTES:
        raise VitcError(f"{source}: {name} with {args} would need {needed / 2**30:.0f} GB; refusing to build it")
    if shapes is not None:
        expected = _shapes(skeleton.state_dict())
        fitted = {k: expected[k] if adapts_input_conv(skeleton, k, expected.get(k, ()), v, source) else v
                  for k, v in shapes.items()}  # fmt: skip
        if resampled and POS_EMBED in fitted and POS_EMBED in expected:
            fitted[POS_EMBED] = expected[POS_EMBED]
        report = compare_shapes(expected, fitted)
        if not report.ok:
            raise KeyMismatchError(f"{source} does not fit {name}: {report.summary()}", report)


def resample_to_grid(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """`state_dict` with its position embedding resampled to the model's token grid, bicubically, as the
    family's reference does for another img_size (timm's pretrained loading; SP-ViT's release: see
    `ZooModel.pos_embed_antialias`), its class token's entry, where it has one, kept."""
    theirs, ours = state_dict.get(POS_EMBED), model.state_dict().get(POS_EMBED)
    if theirs is None or ours is None or theirs.shape == ours.shape:
        return dict(state_dict)
    from vitc.models.layers import resample_pos_embed

    grid = tuple(model.patch_embed.grid_size)
    try:
        prefix, antialias = ours.shape[1] - grid[0] * grid[1], getattr(model, "pos_embed_antialias", True)
        value = resample_pos_embed(theirs, grid, num_prefix_tokens=prefix, antialias=antialias)
    except ValueError as exc:
        raise VitcError(f"{source}: cannot resample {POS_EMBED} to {grid[0]}×{grid[1]} tokens ({exc})") from exc
    return {**state_dict, POS_EMBED: value}


def classifier_differs(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> bool:
    """Whether the weights' classifier (`classifier_of`: its keys and shapes) is not the model's: another class
    count, or none at all (a backbone saved without its head)."""
    from vitc.models.layers import classifier_of

    heads = tuple(f"{module}." for module in classifier_of(model))
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items() if k.startswith(heads)}
    theirs = {k: tuple(v.shape) for k, v in state_dict.items() if k.startswith(heads)}
    return ours != theirs


def with_fresh_classifier(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state_dict` with `model`'s own classifier in place of the weights' one: the fresh initialisation that
    timm's pretrained loading keeps for another num_classes, and `vitc train --pretrained` for another class
    count (loaded strictly, the head then loads onto itself)."""
    from vitc.models.layers import classifier_of

    heads = tuple(f"{module}." for module in classifier_of(model))
    own = {k: v for k, v in model.state_dict().items() if k.startswith(heads)}
    return {k: v for k, v in state_dict.items() if not k.startswith(heads)} | own


def load_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "weights") -> None:
    """Load every key with the right shape, or raise KeyMismatchError listing what differs."""
    report = compare_keys(model, state_dict)
    if not report.ok:
        name = getattr(model, "vitc_name", type(model).__name__)
        raise KeyMismatchError(f"{source} does not fit {name}: {report.summary()}", report)
    model.load_state_dict(state_dict, strict=True)
