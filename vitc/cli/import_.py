"""`vitc import`: convert an official, timm or Hugging Face checkpoint into vitc's format."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from typing_extensions import Annotated

from vitc.cli._console import console
from vitc.cli._options import ForceOpt, SetOpt, parse_assignments
from vitc.errors import VitcError


def import_(
    source: Annotated[
        Path, typer.Argument(help="Foreign checkpoint (.pth, .pt, .bin, .safetensors) or a Hugging Face model folder.")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder; receives model.safetensors.")],
    model: Annotated[
        Optional[str],
        typer.Option(
            "--model", "-m", help="vitc model name, e.g. convit_small (default: what the folder's config.json names)."
        ),
    ] = None,
    img_size: Annotated[
        Optional[int], typer.Option(help="Target resolution; position embeddings are resampled.")
    ] = None,
    set_: SetOpt = None,
    ema: Annotated[
        bool,
        typer.Option(
            "--ema/--no-ema",
            help="Of a training checkpoint with EMA weights (timm's state_dict_ema, DeiT's model_ema), take those, "
            "as timm does; --no-ema takes its plain weights (state_dict, model).",
        ),
    ] = True,
    force: ForceOpt = False,
) -> None:
    """Convert foreign weights strictly: every key must fit, or a table says which do not."""
    from vitc.downloads import checkpoint_model, model_named_by, weights_file
    from vitc.importers import import_checkpoint

    overrides = parse_assignments(set_)
    if overrides.get("in_chans", 3) not in (1, 3):  # the Python API adapts any count, as timm's
        raise VitcError(
            f"--set in_chans={overrides['in_chans']}: vitc's commands read images as grey (1) or RGB (3); other "
            "channel counts are for the Python API (vitc.load_model(path, name, in_chans=N))"
        )
    if img_size is not None:
        overrides["img_size"] = img_size
    terminal = console()
    held = checkpoint_model(source)
    if held is not None:  # its own metadata names the model: nothing to convert
        file = weights_file(source)  # a run folder's best.safetensors
        raise VitcError(
            f"{file} is already a vitc checkpoint ({held}): use it as it is, with vitc train --pretrained "
            f"{file}, vitc export {file} or vitc.load_model({str(file)!r})"
        )
    if model is None:
        model = model_named_by(source)
        if model is None:
            raise VitcError(
                f"give --model: {source} has no config.json naming a vitc model (timm's 'architecture', or a "
                "Hugging Face CvT config); `vitc models` lists them"
            )
        terminal.print(f"model: {model} (named by its config.json)")
    path = import_checkpoint(source, model, out, force=force, say=terminal.print, ema=ema, **overrides)
    terminal.print(f"wrote {path} ({model})")
