"""Reader for `vitc export` artifacts: `manifest.json` and `heldout.npz` (numpy only, no torch).

An export folder holds `model.<precision>.onnx`, `manifest.json` (what the ONNX file is, how to
feed it, the batch range it was exported for, the drift measured against PyTorch) and
`heldout.npz` (normalised images, labels and PyTorch FP32 reference logits). `vitc build` and
`vitc bench --data` use them to check an engine's accuracy on a machine without torch.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vitc.errors import VitcError

FORMAT = "vitc.export"
FORMAT_VERSION = 1
PRECISIONS = ("fp32", "fp16", "int8")
IO_DTYPES = ("float32", "float16")
TRT_TARGETS = ("8.5", "8.6", "10", "11")


@dataclass(frozen=True)
class BatchRange:
    """An optimisation-profile batch range; static when min == opt == max."""

    min: int
    opt: int
    max: int

    def __post_init__(self) -> None:
        if not (1 <= self.min <= self.opt <= self.max):
            raise VitcError(f"batch range must satisfy 1 <= min <= opt <= max, got {self.min}:{self.opt}:{self.max}")

    @property
    def static(self) -> bool:
        return self.min == self.opt == self.max

    @classmethod
    def parse(cls, text: str) -> BatchRange:
        """'8' (static) or 'MIN:OPT:MAX', e.g. '1:8:32'."""
        parts = text.strip().split(":")
        try:
            values = [int(p) for p in parts]
        except ValueError:
            raise VitcError(f"--batch expects N or MIN:OPT:MAX, got {text!r}") from None
        if len(values) == 1:
            return cls(values[0], values[0], values[0])
        if len(values) != 3:
            raise VitcError(f"--batch expects N or MIN:OPT:MAX, got {text!r}")
        return cls(*values)

    def to_dict(self) -> dict[str, int]:
        return {"min": self.min, "opt": self.opt, "max": self.max}

    def __str__(self) -> str:
        return f"{self.min}:{self.opt}:{self.max}"


@dataclass(frozen=True)
class ExportManifest:
    path: Path
    model: str
    input_size: tuple[int, int, int]
    precision: str
    io_dtype: str
    batch: BatchRange
    input_name: str = "input"
    output_name: str = "logits"
    opset: int | None = None
    trt_target: str | None = None
    args: dict[str, Any] = field(default_factory=dict)
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    class_names: list[str] | None = None
    source_checkpoint: dict[str, Any] = field(default_factory=dict)
    onnx_sha256: str | None = None
    drift: dict[str, Any] | None = None
    heldout: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def directory(self) -> Path:
        return self.path.parent

    @property
    def onnx_path(self) -> Path:
        return self.directory / f"model.{self.precision}.onnx"

    @property
    def heldout_path(self) -> Path | None:
        return self.directory / self.heldout if self.heldout else None


def _require(record: dict[str, Any], key: str, source: str) -> Any:
    if key not in record:
        raise VitcError(f"{source}: the export manifest has no {key!r}")
    return record[key]


def parse_manifest(record: Any, path: Path) -> ExportManifest:
    """Validate a manifest record (already parsed JSON)."""
    source = str(path)
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise VitcError(f"{source}: not a vitc export manifest (format is not {FORMAT!r})")
    version = record.get("version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise VitcError(f"{source}: the manifest version must be an integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise VitcError(f"{source}: written by a newer vitc (manifest version {record['version']}); upgrade vitc")
    precision = _require(record, "precision", source)
    if precision not in PRECISIONS:
        raise VitcError(f"{source}: precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    io_dtype = record.get("io_dtype", "float32")
    if io_dtype not in IO_DTYPES:
        raise VitcError(f"{source}: io_dtype {io_dtype!r} is not one of {', '.join(IO_DTYPES)}")
    size = _require(record, "input_size", source)
    if not (isinstance(size, list) and len(size) == 3 and all(isinstance(s, int) and s > 0 for s in size)):
        raise VitcError(f"{source}: input_size must be [C, H, W], got {size!r}")
    batch = _require(record, "batch", source)
    try:
        batch_range = BatchRange(int(batch["min"]), int(batch["opt"]), int(batch["max"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise VitcError(f"{source}: batch must be {{min, opt, max}}, got {batch!r}") from exc
    heldout = record.get("heldout")
    if heldout is not None and (
        not isinstance(heldout, str) or Path(heldout).name != heldout or heldout in ("", ".", "..")
    ):
        # a file name inside the export folder, never a path: a manifest must not point elsewhere
        raise VitcError(f"{source}: heldout must be a file name in the export folder, got {heldout!r}")
    trt_target = record.get("trt_target")
    if trt_target is not None and str(trt_target) not in TRT_TARGETS:
        raise VitcError(f"{source}: trt_target {trt_target!r} is not one of {', '.join(TRT_TARGETS)}")
    try:
        return _build(record, path, size, precision, io_dtype, batch_range, trt_target)
    except (TypeError, ValueError) as exc:  # e.g. "mean": 3 or "args": "x" in a hand-edited file
        raise VitcError(f"{source}: malformed export manifest ({exc})") from exc


def _build(
    record: dict[str, Any],
    path: Path,
    size: list[int],
    precision: str,
    io_dtype: str,
    batch_range: BatchRange,
    trt_target: Any,
) -> ExportManifest:
    source = str(path)
    return ExportManifest(
        path=path,
        model=str(_require(record, "model", source)),
        input_size=(size[0], size[1], size[2]),
        precision=precision,
        io_dtype=io_dtype,
        batch=batch_range,
        input_name=str(record.get("input_name", "input")),
        output_name=str(record.get("output_name", "logits")),
        opset=record.get("opset"),
        trt_target=None if trt_target is None else str(trt_target),
        args=dict(record.get("args") or {}),
        mean=tuple(record.get("mean") or ()),
        std=tuple(record.get("std") or ()),
        class_names=record.get("class_names"),
        source_checkpoint=dict(record.get("source_checkpoint") or {}),
        onnx_sha256=record.get("onnx_sha256"),
        drift=record.get("drift"),
        heldout=record.get("heldout"),
        raw=record,
    )


def _manifest_in(folder: Path) -> Path:
    """The one `manifest.<precision>.json` of an export folder (or its legacy `manifest.json`)."""
    found = sorted(folder.glob("manifest.*.json")) or sorted(folder.glob("manifest.json"))
    if not found:
        raise VitcError(f"{folder}: no export manifest (manifest.<precision>.json) in this folder")
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise VitcError(f"{folder} holds several exports ({names}): name the .onnx or the manifest file")
    return found[0]


def load_manifest(path: str | os.PathLike[str]) -> ExportManifest:
    """Load an export manifest from its file, or from an export folder that holds exactly one."""
    path = Path(path)
    if path.is_dir():
        path = _manifest_in(path)
    if not path.is_file():
        raise VitcError(f"{path}: no such export manifest")
    try:
        record = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise VitcError(f"{path}: the export manifest is not valid JSON ({exc})") from exc
    return parse_manifest(record, path)


def manifest_for(artifact: str | os.PathLike[str]) -> ExportManifest | None:
    """The manifest of `model.<precision>.onnx` (`manifest.<precision>.json` beside it), or None."""
    artifact = Path(artifact)
    if artifact.is_dir():
        return load_manifest(artifact)
    precision = artifact.name.split(".")[-2] if artifact.name.count(".") >= 2 else None
    for name in (f"manifest.{precision}.json" if precision else None, "manifest.json"):
        if name and (artifact.parent / name).is_file():
            return load_manifest(artifact.parent / name)
    return None


@dataclass(frozen=True)
class Heldout:
    images: np.ndarray  # float32 N×C×H×W, normalised
    labels: np.ndarray  # int64 N
    reference_logits: np.ndarray  # float32 N×K, PyTorch FP32

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def load_heldout(path: str | os.PathLike[str]) -> Heldout:
    """Load `heldout.npz` from a file or an export folder (via its manifest), checking the shapes."""
    path = Path(path)
    if path.is_dir():  # every precision of an export folder shares one held-out set
        path = path / "heldout.npz"
    if not path.is_file():
        raise VitcError(f"{path}: no such held-out set")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in ("images", "labels", "reference_logits") if k in data}
    except (OSError, ValueError, EOFError) as exc:
        raise VitcError(f"{path}: not a held-out set (.npz of images, labels, reference_logits)") from exc
    missing = {"images", "labels", "reference_logits"} - set(arrays)
    if missing:
        raise VitcError(f"{path}: the held-out set lacks {', '.join(sorted(missing))}")
    images, labels, logits = arrays["images"], arrays["labels"], arrays["reference_logits"]
    n = labels.shape[0] if labels.ndim == 1 else -1
    if images.ndim != 4 or logits.ndim != 2 or images.shape[0] != n or logits.shape[0] != n:
        raise VitcError(
            f"{path}: inconsistent held-out shapes: images {images.shape}, labels {labels.shape}, "
            f"reference_logits {logits.shape}"
        )
    return Heldout(images.astype(np.float32), labels.astype(np.int64), logits.astype(np.float32))
