"""The artifact formats that join the stages, defined once for their writers and their readers.

`vitc export` writes and `vitc build` / `bench` / `info` read: the export manifest (`manifest`), its
held-out set (`heldout`), the batch range both record (`batch`) and the engine sidecar (`sidecar`).
numpy only: the runtime path on a Jetson reads these without torch or onnx.
"""

from __future__ import annotations

from vitc.artifacts.batch import BatchRange
from vitc.artifacts.heldout import Heldout, encode_heldout, heldout_for, heldout_name, load_heldout, prune_heldout
from vitc.artifacts.manifest import (
    FORMAT_VERSION,
    IO_DTYPES,
    TRT_TARGETS,
    ExportManifest,
    check_file_hash,
    get_metadata,
    load_manifest,
    manifest_for,
    manifest_name,
    manifest_paths,
    onnx_name,
    parse_manifest,
    set_metadata,
)
from vitc.artifacts.precision import FASTEST_FIRST, PRECISIONS, Precision, parse_precision, precision_in_name
from vitc.artifacts.sidecar import EngineSidecar, load_sidecar, parse_sidecar, sidecar_path

__all__ = [
    "FASTEST_FIRST",
    "FORMAT_VERSION",
    "IO_DTYPES",
    "PRECISIONS",
    "TRT_TARGETS",
    "BatchRange",
    "EngineSidecar",
    "ExportManifest",
    "Heldout",
    "Precision",
    "check_file_hash",
    "encode_heldout",
    "get_metadata",
    "heldout_for",
    "heldout_name",
    "load_heldout",
    "load_manifest",
    "load_sidecar",
    "manifest_for",
    "manifest_name",
    "manifest_paths",
    "onnx_name",
    "parse_manifest",
    "parse_precision",
    "parse_sidecar",
    "precision_in_name",
    "prune_heldout",
    "set_metadata",
    "sidecar_path",
]
