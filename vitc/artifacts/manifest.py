"""Reader for `vitc export` artifacts: manifests and held-out sets (numpy only, no torch).

An export folder holds, per precision, `model.<precision>.onnx` and `manifest.<precision>.json`
(what the ONNX file is, how to feed it, the batch range it was exported for, the drift measured
against PyTorch), and the held-out set each manifest names, `heldout.<hash>.npz` (normalised images,
labels and PyTorch FP32 reference logits). `vitc build` and `vitc bench --data` use them to check an
engine's accuracy on a machine without torch.

The files of one export are written one after the other, so a kill can leave a manifest beside
another export's ONNX file; the manifest records the sha256 of both the ONNX file and its held-out
set, and every read checks them: a mixed set is refused, never used.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vitc._io import parse_json, sha256_file
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
    heldout_sha256: str | None = None
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
        onnx_sha256=_hash_or_none(record, "onnx_sha256", source),
        drift=record.get("drift"),
        heldout=record.get("heldout"),
        heldout_sha256=_hash_or_none(record, "heldout_sha256", source),
        raw=record,
    )


def _hash_or_none(record: dict[str, Any], key: str, source: str) -> str | None:
    value = record.get(key)
    if value is not None and not (isinstance(value, str) and len(value) == 64 and _is_hex(value)):
        raise VitcError(f"{source}: {key} must be a sha256 hex digest, got {str(value)[:80]!r}")
    return value


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)


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
    record = parse_json(path.read_bytes(), f"{path}: the export manifest")
    return parse_manifest(record, path)


def manifest_for(artifact: str | os.PathLike[str]) -> ExportManifest | None:
    """The manifest of `model.<precision>.onnx` (`manifest.<precision>.json` beside it), or None.

    The ONNX file must be the one the manifest describes (its sha256): a set mixed by an interrupted
    or concurrent export is refused.
    """
    artifact = Path(artifact)
    if artifact.is_dir():
        return load_manifest(artifact)
    precision = artifact.name.split(".")[-2] if artifact.name.count(".") >= 2 else None
    for name in (f"manifest.{precision}.json" if precision else None, "manifest.json"):
        if name and (artifact.parent / name).is_file():
            manifest = load_manifest(artifact.parent / name)
            if artifact.resolve() == manifest.onnx_path.resolve():
                check_file_hash(artifact, manifest.onnx_sha256, manifest.path)
            return manifest
    return None


def check_file_hash(path: Path, expected: str | None, manifest: Path) -> None:
    """Refuse `path` when it is not the file `manifest` recorded (older manifests carry no hash)."""
    if expected is not None and path.is_file() and sha256_file(path) != expected:
        raise VitcError(
            f"{path} is not the file {manifest.name} describes (sha256 differs): the export was interrupted "
            "or mixed with another one; run vitc export again with --force"
        )


@dataclass(frozen=True)
class Heldout:
    images: np.ndarray  # float32 N×C×H×W, normalised
    labels: np.ndarray  # int64 N
    reference_logits: np.ndarray  # float32 N×K, PyTorch FP32

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def heldout_for(source: str | os.PathLike[str] | ExportManifest) -> tuple[Path, str | None]:
    """(held-out file, expected sha256) for a manifest, an export folder or a .npz path.

    An export folder resolves through its manifests; exports of one folder made from different
    checkpoints have different held-out sets, and then the manifest must be named.
    """
    if isinstance(source, ExportManifest):
        if source.heldout_path is None:
            raise VitcError(f"{source.path}: the export manifest names no held-out set")
        return source.heldout_path, source.heldout_sha256
    path = Path(source)
    if path.is_file() and path.suffix == ".json":
        return heldout_for(load_manifest(path))
    if not path.is_dir():  # a .npz named directly: still checked against a manifest that names it
        named_by = [m for m in _manifests(path.parent) if m.heldout == path.name and m.heldout_sha256]
        return path, named_by[0].heldout_sha256 if named_by else None
    manifests = _manifests(path)
    named = {(m.heldout, m.heldout_sha256) for m in manifests if m.heldout}
    if len(named) > 1:
        listed = ", ".join(m.path.name for m in manifests)
        raise VitcError(f"{path} holds exports with different held-out sets ({listed}): name a manifest file")
    if named:
        return heldout_for(next(m for m in manifests if m.heldout))
    return path / "heldout.npz", None  # a folder written before manifests named their held-out set


def _manifests(folder: Path) -> list[ExportManifest]:
    return [load_manifest(m) for m in sorted(folder.glob("manifest.*.json"))]


def load_heldout(source: str | os.PathLike[str] | ExportManifest) -> Heldout:
    """Load a held-out set from its .npz, a manifest or an export folder; checks hash, sizes and shapes."""
    path, expected = heldout_for(source)
    if not path.is_file():
        raise VitcError(f"{path}: no such held-out set")
    check_file_hash(path, expected, source.path if isinstance(source, ExportManifest) else Path("its manifest"))
    _check_npz_sizes(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in ("images", "labels", "reference_logits") if k in data}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
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
    for name, array in (("images", images), ("reference_logits", logits)):
        if array.dtype.kind != "f" or not np.isfinite(array).all():
            raise VitcError(f"{path}: the held-out {name} are not all finite floats")
    if labels.dtype.kind not in "iu" or (n and (labels.min() < 0 or labels.max() >= logits.shape[1])):
        raise VitcError(f"{path}: held-out labels must be class indices below {logits.shape[1]}")
    return Heldout(images.astype(np.float32), labels.astype(np.int64), logits.astype(np.float32))


def _check_npz_sizes(path: Path) -> None:
    """Every array's declared shape must match the bytes stored for it: a 1 KB file cannot make numpy
    allocate gigabytes. Object arrays (pickles) are refused."""
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                with archive.open(info) as member:
                    version = np.lib.format.read_magic(member)
                    fmt = np.lib.format
                    read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
                    shape, _, dtype = read(member)
                    header = member.tell()
                if dtype.hasobject:
                    raise VitcError(f"{path}: {info.filename} holds Python objects, not numbers")
                needed = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
                if needed != info.file_size - header:
                    raise VitcError(
                        f"{path}: {info.filename} declares shape {shape} ({needed} bytes) but stores "
                        f"{info.file_size - header} bytes"
                    )
    except VitcError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise VitcError(f"{path}: not a held-out set (.npz of images, labels, reference_logits)") from exc
