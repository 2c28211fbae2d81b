"""The model a run trains and the network its steps run through: the model built (its classifier sized by the
data, the pretrained weights loaded, the backbone frozen, BatchNorm synced over the processes), then wrapped
(DDP, torch.compile), its attention's formulation settled and DDP's buckets laid out (vitc.train.setup)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any
from typing import cast as typed

import torch
from torch.nn.parallel import DistributedDataParallel

from vitc.artifacts.model_cfg import ModelCfg
from vitc.artifacts.preprocess import resolve_preprocess
from vitc.data.feed import MemoryFeed, StreamFeed
from vitc.errors import VitcError
from vitc.models import create_model, get_model_cfg
from vitc.models.layers import checkpoints_batchnorm
from vitc.pretrained import Pretrained, load_pretrained
from vitc.train.config import PREPROCESS_KEYS, TrainConfig
from vitc.train.device import choose_attention
from vitc.train.distributed import DistInfo, sync_batchnorm
from vitc.train.optim import backbone_eval, freeze_backbone
from vitc.train.records import recorded_model_args


def model_args(cfg: TrainConfig, size: int, num_classes: int) -> dict[str, Any]:
    """The constructor arguments a run builds its model with: model.args, a head for the data's classes, the
    run's drop-path rate (model.drop_path_rate) and its image size where data.image_size sets one."""
    args = {**cfg.model.args, "num_classes": num_classes, "drop_path_rate": cfg.model.drop_path_rate}
    if cfg.data.image_size:
        args["img_size"] = size
    return args


def run_preprocess(model_cfg: ModelCfg, cfg: TrainConfig) -> ModelCfg:
    """`model_cfg` with the evaluation transform the run sets (model.mean, model.std, model.crop_pct,
    model.crop_mode), checked against its channels; as it is where the run sets none."""
    given = {key: getattr(cfg.model, key) for key in PREPROCESS_KEYS if getattr(cfg.model, key) is not None}
    if not given:
        return model_cfg
    return model_cfg.evaluated_by(resolve_preprocess(given, None, model_cfg.to_record(), source="config key model"))


def build_model(
    cfg: TrainConfig,
    args: dict[str, Any],
    feed: MemoryFeed | StreamFeed,
    pretrained: Pretrained | None,
    device: torch.device,
    dist: DistInfo,
    resumed: Path | None,
    shown: Callable[[str], None] | None,
) -> tuple[torch.nn.Module, bool]:
    """The model, its classifier sized by the data, from the run's seed or the pretrained weights; the backbone
    frozen where the run trains only the head; and whether its BatchNorms now sync over the processes."""
    if feed.num_classes < 2:
        raise VitcError(f"{cfg.data.name} has {feed.num_classes} class; a classifier needs at least 2")
    asked = cfg.model.args.get("num_classes")
    # a run from before this check recorded its own
    recorded = recorded_model_args(resumed).get("num_classes") if resumed is not None else None
    if asked is not None and (type(asked) is not int or asked != feed.num_classes) and asked != recorded:
        raise VitcError(
            f"model.args.num_classes={asked!r}, but {cfg.data.name} has {feed.num_classes} classes: the classifier "
            "is sized by the data (drop the setting)"
        )
    assert cfg.model.name is not None  # resolved by vitc.train.defaults before the run is set up
    torch.manual_seed(cfg.run.seed)
    model = create_model(cfg.model.name, **args).to(device)
    # what its checkpoints record, and exports read; every vitc model checkpoints its blocks (vitc.models.layers)
    model.vitc_cfg = run_preprocess(get_model_cfg(model), cfg)  # type: ignore[assignment]
    model.set_grad_checkpointing(cfg.run.grad_checkpointing)  # type: ignore[operator]
    if pretrained is not None:
        note = load_pretrained(model, pretrained, feed.class_names)
        if shown:
            shown(note)
    frozen = cfg.optim.freeze == "backbone"
    if frozen:
        freeze_backbone(model)
    synced, note = sync_batchnorm(model, dist, frozen, device.type) if cfg.run.sync_bn else (False, "")
    if note and shown:
        shown(note)
    return model, synced


def train_network(cfg: TrainConfig, model: torch.nn.Module, ddp: DistributedDataParallel | None) -> torch.nn.Module:
    """The network the steps train through: the model, DDP-wrapped under several processes, torch.compiled
    where run.compile says (the training forward only: evaluation and checkpoints use `model` as it is)."""
    net = model if ddp is None else ddp
    frozen = cfg.optim.freeze == "backbone"  # its BatchNorms in eval mode: no statistics to recompute
    recomputed_bn = cfg.run.grad_checkpointing and not frozen and checkpoints_batchnorm(model)
    if cfg.run.compile == "eager" and recomputed_bn:
        raise VitcError(  # dynamo's eager backend recomputes the block's BatchNorm update in place: autograd refuses
            f"run.compile=eager cannot recompute {cfg.model.name}'s BatchNorm blocks under run.grad_checkpointing "
            "(an in-place update of their statistics): use run.compile=aot_eager, the debugging backend that can"
        )
    if cfg.run.compile == "off":
        return net
    mode: dict[str, Any] = {} if cfg.run.compile_mode == "default" else {"mode": cfg.run.compile_mode}
    return typed(torch.nn.Module, torch.compile(net, backend=cfg.run.compile, **mode))  # an OptimizedModule


def settle_attention(
    cfg: TrainConfig,
    model: torch.nn.Module,
    ddp: DistributedDataParallel | None,
    per_rank_batch: int,
    autocast: AbstractContextManager[None],
    device: torch.device,
    dist: DistInfo,
    tell: Callable[[str], None],
    chosen: list[dict[str, Any]] | None,
) -> list[dict[str, Any]] | None:
    """The attention's formulation (vitc.train.device.choose_attention; a resume passes the kernels it had as
    `chosen`), then DDP's buckets laid out by a first backward, which that formulation orders; what run_info
    records of it."""
    pinned = "attn_impl" in cfg.model.args
    attention = choose_attention(model, pinned, per_rank_batch, autocast, tell, dist, chosen)
    if ddp is not None:
        lay_out_buckets(ddp, model, cfg.optim.freeze, autocast, device)
    return attention


@contextmanager
def stand_in_loss(
    net: torch.nn.Module, model: torch.nn.Module, freeze: str, cast: AbstractContextManager[None], device: torch.device
) -> Iterator[torch.Tensor]:
    """A zero loss that reaches every trained parameter, from blank images through `net` in eval mode (no
    BatchNorm statistics from a stand-in, no random draws); train mode again once its backward has run.
    Two images: from one, the class token's gradient is a strided view of the tokens', and DDP warns that
    it does not match its bucket's layout."""
    net.eval()
    try:
        with cast:
            stand_in = torch.zeros(2, *get_model_cfg(model).input_size, device=device)
            loss = net(stand_in).float().sum() * 0.0
        yield loss
    finally:
        net.train()
        if freeze == "backbone":
            backbone_eval(model)


def lay_out_buckets(
    ddp: DistributedDataParallel,
    model: torch.nn.Module,
    freeze: str,
    cast: AbstractContextManager[None],
    device: torch.device,
) -> None:
    """Run DDP's first backward on a stand-in, so that every session trains on the buckets it lays out.

    DDP sums its first backward's gradients in one bucket in the parameters' order, then rebuilds its
    buckets in the order the gradients became ready. Over 3 or more processes a gradient's place in its
    bucket decides its chunk of the ring all-reduce, and so the order the processes' values are added in:
    a resumed session's first step, on the first layout, summed otherwise than the uninterrupted run's
    step there (weights about 1e-6 apart at the end). Each session now starts from this same backward:
    one forward and backward of two images; the steps keep DDP's rebuilt buckets and their sizes, so the
    all-reduce overlaps the backward as before."""
    with stand_in_loss(ddp, model, freeze, cast, device) as loss:
        loss.backward()
    model.zero_grad(set_to_none=True)
