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
    class_names: Annotated[
        Optional[str],
        typer.Option(
            help="The classes of the classifier's rows, for weights whose folder names none: a text file of one "
            "name per line (timm's --class-map .txt) or a comma list. Default: the folder's config.json "
            "(timm's label_names, Hugging Face's id2label)."
        ),
    ] = None,
) -> None:
    """Convert foreign weights strictly: every key must fit, or a table says which do not."""
    from vitc.artifacts.checkpoint_meta import checkpoint_model
    from vitc.downloads import folder_model, weights_file
    from vitc.importers import import_checkpoint

    names = None if class_names is None else read_class_names(class_names)  # refused before any reading
    overrides = parse_assignments(set_)
    if overrides.get("in_chans", 3) not in (1, 3):  # the Python API adapts any count, as timm's
        raise VitcError(
            f"--set in_chans={overrides['in_chans']}: vitc's commands read images as grey (1) or RGB (3); other "
            "channel counts are for the Python API (vitc.load_model(path, name, in_chans=N))"
        )
    if img_size is not None:
        overrides["img_size"] = img_size
    terminal = console()
    file = weights_file(source)  # a run folder's best.safetensors, a downloaded folder's weights
    held = checkpoint_model(file)
    if held is not None:  # its own metadata names the model: nothing to convert
        raise VitcError(
            f"{file} is already a vitc checkpoint ({held}): use it as it is, with vitc train --pretrained "
            f"{file}, vitc export {file} or vitc.load_model({str(file)!r})"
        )
    if model is None:
        model = folder_model(source)
        if model is None:
            raise VitcError(
                f"give --model: {source} has no config.json naming a vitc model (timm's 'architecture', or a "
                "Hugging Face CvT config); `vitc models` lists them"
            )
        terminal.print(f"model: {model} (named by its config.json)")
    path = import_checkpoint(
        source, model, out, force=force, say=terminal.print, ema=ema, class_names=names, **overrides
    )
    terminal.print(f"wrote {path} ({model})")


def read_class_names(given: str) -> list[str]:
    """`vitc import --class-names`: a text file of one name per line (timm's --class-map .txt, row i on
    line i) or a comma-separated list; none empty, none twice."""
    path = Path(given)
    if path.is_file():
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise VitcError(f"--class-names {given}: cannot read it as UTF-8 text ({exc})") from None
        while lines and not lines[-1].strip():
            lines.pop()
        names = [line.strip() for line in lines]
    elif "," in given:
        names = [name.strip() for name in given.split(",")]
    else:
        raise VitcError(f"--class-names {given}: no such file (give a file of one name per line, or a comma list)")
    empty = [i for i, name in enumerate(names) if not name]
    if empty:
        raise VitcError(f"--class-names {given}: name {empty[0] + 1} is empty")
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise VitcError(f"--class-names {given}: {name!r} is named twice")
        seen.add(name)
    return names
