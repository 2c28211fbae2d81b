"""What vitc does with a caller's model without keeping it changed: see through its wrappers, and run it in
eval mode with every module's training flag given back afterwards.

No torch at import: vitc.checkpoint (read on a Jetson without torch) imports this.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

__all__ = ["eval_mode", "unwrap_model"]


def unwrap_model(model: Any) -> Any:
    """The model inside torch.compile's wrapper (`_orig_mod`) and DDP's or DataParallel's (`.module`), however
    nested, as timm's unwrap_model finds it: the wrapper's state dict prefixes every key and carries no vitc
    record, so a checkpoint of it would fit no model."""
    while True:
        inner = getattr(model, "module", None)
        if inner is None:
            inner = getattr(model, "_orig_mod", None)
        if inner is None:
            return model
        model = inner


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Put `model` in eval mode and restore every module's training flag afterwards."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in flags:
            module.training = training
