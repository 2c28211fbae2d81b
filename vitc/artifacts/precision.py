"""Precision: what an exported artifact computes in, listed once for every stage.

Precision lives in the ONNX graph (its casts and Q/DQ pairs): `vitc export` bakes it in, the manifest
records it, and the file names carry it (`model.<precision>.onnx`, `manifest.<precision>.json`,
`<run>.<precision>.plan`). Every reader takes it from the manifest or sidecar, else from the name, and
never guesses it from the input dtype (an fp16 graph can have float32 I/O). PyTorch autocast dtypes
(`vitc bench --autocast fp16/bf16`) are another thing and are not listed here.
"""

from __future__ import annotations

import os
from typing import Any, Literal, Optional, Tuple

from vitc.errors import VitcError

Precision = Literal["fp32", "fp16", "int8"]
PRECISIONS: Tuple[Precision, ...] = ("fp32", "fp16", "int8")
FASTEST_FIRST: Tuple[Precision, ...] = ("int8", "fp16", "fp32")


def parse_precision(value: Any, source: str = "") -> Precision:
    """`value` as a Precision, or a one-line VitcError naming the allowed values (`source`: where it was read)."""
    if value not in PRECISIONS:
        where = f"{source}: " if source else ""
        raise VitcError(f"{where}unknown precision {value!r} (choose one of: {', '.join(PRECISIONS)})")
    return value  # type: ignore[no-any-return]


def precision_in_name(path: str | os.PathLike[str]) -> Optional[Precision]:
    """The precision a vitc file name carries just before its suffix (`model.fp16.onnx`,
    `manifest.int8.json`, `convit.fp16.plan`), or None for a name without one."""
    parts = os.path.basename(os.fspath(path)).split(".")
    if len(parts) >= 3 and parts[-2] in PRECISIONS:
        return parts[-2]  # type: ignore[return-value]
    return None
