"""Options shared by several commands, and the parser for `--set key=value` overrides."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, List, Optional

import typer
from typing_extensions import Annotated

from vitc.errors import VitcError

SetOpt = Annotated[
    Optional[List[str]],
    typer.Option("--set", help="Override a value: key=value (JSON values: 32, 0.1, true, [1,2]). Repeatable."),
]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace an existing output.")]


def parse_assignments(items: list[str] | None) -> dict[str, Any]:
    """Parse ["a=1", "b.c=[2,3]", "d=text"] into {"a": 1, "b.c": [2, 3], "d": "text"}."""
    parsed: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise VitcError(f"--set expects key=value, got {item!r}")
        try:
            parsed[key] = json.loads(raw)
        except json.JSONDecodeError:
            parsed[key] = raw  # a bare word is a string
        except RecursionError:
            raise VitcError(f"--set {key}: the value is nested too deeply") from None
    return parsed


def expand_home(value: Any) -> Any:
    """A path option's leading `~` as the home folder, a list of them each: the shell expands `~` only at the
    start of a word, so `--json=~/p.json` came as `~/p.json` and wrote `./~/p.json`. Anything else as it is."""
    if isinstance(value, Path):
        return Path(os.path.expanduser(value))
    if isinstance(value, list):
        return [expand_home(item) for item in value]
    return value
