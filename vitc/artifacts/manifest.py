"""The export manifest: one self-describing JSON per precision, mirrored in the ONNX metadata_props.

Layout of `export/<run>/`, written by `vitc export` and read by `vitc build`, `bench` and `info`:
    model.<precision>.onnx      the artifact; metadata_props hold every manifest key (JSON strings)
                                except `onnx_sha256` (a file cannot contain its own hash)
    manifest.<precision>.json   what the ONNX file is, how to feed it, the batch range it was exported
                                for, the drift measured against PyTorch, `onnx_sha256`, `heldout_sha256`
    heldout.<sha16>.npz         its held-out set (vitc.artifacts.heldout)

The files of one export are written one after the other, so a kill can leave a manifest beside
another export's ONNX file; the manifest records the sha256 of both the ONNX file and its held-out
set, and every read checks them: a mixed set is refused, never used.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vitc._io import EXPORT_FORMAT, check_format, parse_json, sha256_file
from vitc.artifacts.batch import BatchRange
from vitc.artifacts.precision import Precision, parse_precision, precision_in_name
from vitc.artifacts.preprocess import format_version
from vitc.errors import VitcError

FORMAT_VERSION = 2  # 2: the held-out set it names stores uint8 pixels (vitc.artifacts.heldout); a vitc that
# reads only version 1 then says "upgrade vitc" instead of failing on the held-out file (a device's older wheel)
SQUASH_VERSION = 3  # 3: its preprocess record squashes (crop_mode), which a reader of version 2 would centre-crop
IO_DTYPES = ("float32", "float16")
TRT_TARGETS = ("8.5", "8.6", "10", "11")  # what `vitc export --trt` takes and a manifest's trt_target records


def trt_version_key(version: str) -> tuple[int, int]:
    """(major, minor) of "8.5", "10" or a full release number such as "8.5.2.2" (what `tensorrt.__version__` says)."""
    major, _, rest = version.partition(".")
    return int(major), int(rest.partition(".")[0] or 0)


def export_target(version: str) -> str | None:
    """The `vitc export --trt` target that writes files TensorRT `version` ("8.5.2.2") parses, if any: `vitc build`
    names it when its parser refuses a file, `vitc check` reads the parser tables it selects."""
    try:
        major, minor = trt_version_key(version)
    except ValueError:
        return None
    target = f"{major}.{minor}" if major == 8 else str(major)
    return target if target in TRT_TARGETS else None


def onnx_name(precision: Precision) -> str:
    return f"model.{precision}.onnx"


def manifest_name(precision: Precision) -> str:
    return f"manifest.{precision}.json"


def set_metadata(model: Any, manifest: dict[str, Any]) -> None:
    """Write every manifest entry (but the file's own hash) into `model.metadata_props` as JSON strings."""
    del model.metadata_props[:]
    for key, value in manifest.items():
        if key == "onnx_sha256":
            continue
        prop = model.metadata_props.add()
        prop.key, prop.value = key, json.dumps(value)


def get_metadata(model: Any) -> dict[str, Any]:
    out = {}
    for prop in model.metadata_props:
        try:
            out[prop.key] = json.loads(prop.value)
        except (json.JSONDecodeError, RecursionError):  # not what vitc wrote: shown as the raw text
            out[prop.key] = prop.value
    return out


@dataclass(frozen=True)
class ExportManifest:
    """One export's manifest: `vitc export` builds it and writes `to_record()`, every reader gets it
    from `parse_manifest`; the two sit side by side here so the format has one definition."""

    path: Path
    model: str
    input_size: tuple[int, int, int]
    precision: Precision
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
    preprocess: dict[str, Any] | None = None
    source_checkpoint: dict[str, Any] = field(default_factory=dict)
    compiled: bool | None = None
    passes: list[dict[str, Any]] | None = None
    precision_report: dict[str, Any] = field(default_factory=dict)
    parity_max_abs_diff: float | None = None
    calibration: dict[str, Any] | None = None
    drift: dict[str, Any] | None = None
    heldout_sha256: str | None = None
    heldout: str | None = None
    onnx_sha256: str | None = None
    exported_by: dict[str, Any] | None = None  # the releases that wrote it: vitc, torch, onnx, onnxruntime
    version: int = FORMAT_VERSION  # as read: a manifest of version 1 is written back as version 1
    raw: dict[str, Any] = field(default_factory=dict)  # the record as read, keys of later releases included

    @property
    def directory(self) -> Path:
        return self.path.parent

    @property
    def onnx_path(self) -> Path:
        return self.directory / onnx_name(self.precision)

    @property
    def heldout_path(self) -> Path | None:
        return self.directory / self.heldout if self.heldout else None

    def to_record(self) -> dict[str, Any]:
        """The JSON record, in the key order vitc has always written (keys of a later release that
        this one read are kept after them)."""
        record: dict[str, Any] = {
            "format": EXPORT_FORMAT,
            "version": format_version(self.preprocess, self.version, SQUASH_VERSION),
            "model": self.model,
            "args": self.args,
            "input_size": list(self.input_size),
            **self._top_level_normalisation(),
            "class_names": self.class_names,
            "preprocess": self.preprocess,
            "precision": self.precision,
            "io_dtype": self.io_dtype,
            "opset": self.opset,
            "trt_target": self.trt_target,
            "batch": self.batch.to_dict(),
            "input_name": self.input_name,
            "output_name": self.output_name,
            "source_checkpoint": self.source_checkpoint,
            "compiled": self.compiled,
            "passes": self.passes,
            "precision_report": self.precision_report,
            "parity_max_abs_diff": self.parity_max_abs_diff,
            "calibration": self.calibration,
            "drift": self.drift,
            "heldout_sha256": self.heldout_sha256,
            "heldout": self.heldout,
            "onnx_sha256": self.onnx_sha256,
        }
        if self.exported_by is not None:  # a manifest of vitc 0.1.0 and earlier records none
            record["exported_by"] = self.exported_by
        written_once = ("mean", "std") if self.preprocess is not None else ()
        record.update({k: v for k, v in self.raw.items() if k not in record and k not in written_once})
        return record

    def _top_level_normalisation(self) -> dict[str, Any]:
        """mean/std at the top level only for a manifest without a preprocess record: the record holds
        them (vitc 0.1.0 wrote them twice; `parse_manifest` reads both forms)."""
        return {} if self.preprocess is not None else {"mean": list(self.mean), "std": list(self.std)}


def _require(record: dict[str, Any], key: str, source: str) -> Any:
    if key not in record:
        raise VitcError(f"{source}: the export manifest has no {key!r}")
    return record[key]


def parse_manifest(record: Any, path: Path) -> ExportManifest:
    """Validate a manifest record (already parsed JSON): the reader of what `ExportManifest.to_record` writes."""
    source = str(path)
    record = check_format(record, EXPORT_FORMAT, SQUASH_VERSION, source, "vitc export manifest")
    precision = parse_precision(_require(record, "precision", source), source)
    io_dtype = record.get("io_dtype", "float32")
    if io_dtype not in IO_DTYPES:
        raise VitcError(f"{source}: io_dtype {io_dtype!r} is not one of {', '.join(IO_DTYPES)}")
    size = _require(record, "input_size", source)
    if not (isinstance(size, list) and len(size) == 3 and all(isinstance(s, int) and s > 0 for s in size)):
        raise VitcError(f"{source}: input_size must be [C, H, W], got {size!r}")
    batch_range = BatchRange.from_dict(_require(record, "batch", source), source)
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
    precision: Precision,
    io_dtype: str,
    batch_range: BatchRange,
    trt_target: Any,
) -> ExportManifest:
    source = str(path)
    preprocess = _record_or_none(record, "preprocess", source)
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
        mean=tuple(_normalisation(record, "mean", preprocess)),
        std=tuple(_normalisation(record, "std", preprocess)),
        class_names=record.get("class_names"),
        preprocess=preprocess,
        source_checkpoint=dict(record.get("source_checkpoint") or {}),
        compiled=record.get("compiled"),
        passes=record.get("passes"),
        precision_report=dict(_record_or_none(record, "precision_report", source) or {}),
        parity_max_abs_diff=record.get("parity_max_abs_diff"),
        calibration=_record_or_none(record, "calibration", source),
        drift=_record_or_none(record, "drift", source),
        heldout_sha256=_hash_or_none(record, "heldout_sha256", source),
        heldout=record.get("heldout"),
        onnx_sha256=_hash_or_none(record, "onnx_sha256", source),
        exported_by=_record_or_none(record, "exported_by", source),
        version=int(record.get("version", 0)),
        raw=record,
    )


def _normalisation(record: dict[str, Any], key: str, preprocess: dict[str, Any] | None) -> Any:
    """mean or std: inside the preprocess record, or at the top level too (as vitc 0.1.0 wrote them)."""
    if key in record:
        return record[key] or ()
    return (preprocess or {}).get(key) or ()


def _record_or_none(record: dict[str, Any], key: str, source: str) -> dict[str, Any] | None:
    value = record.get(key)
    if value is not None and not isinstance(value, dict):
        raise VitcError(f"{source}: {key} must be a JSON object, got {str(value)[:80]!r}")
    return value


def _hash_or_none(record: dict[str, Any], key: str, source: str) -> str | None:
    value = record.get(key)
    if value is not None and not (isinstance(value, str) and len(value) == 64 and _is_hex(value)):
        raise VitcError(f"{source}: {key} must be a sha256 hex digest, got {str(value)[:80]!r}")
    return value


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)


def manifest_paths(folder: str | os.PathLike[str]) -> list[Path]:
    """The manifests of an export folder: its `manifest.<precision>.json` files, else its legacy `manifest.json`."""
    folder = Path(folder)
    return sorted(folder.glob("manifest.*.json")) or sorted(folder.glob("manifest.json"))


def _manifest_in(folder: Path) -> Path:
    """The one manifest of an export folder."""
    found = manifest_paths(folder)
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
    precision = precision_in_name(artifact)
    for name in (manifest_name(precision) if precision else None, "manifest.json"):
        if name and (artifact.parent / name).is_file():
            manifest = load_manifest(artifact.parent / name)
            if artifact.resolve() == manifest.onnx_path.resolve():
                check_file_hash(artifact, manifest.onnx_sha256, manifest.path)
            return manifest
    return None


FILE_OK, FILE_DIFFERS, FILE_MISSING, FILE_UNRECORDED = "ok", "sha256 differs", "missing", "no sha256"


def file_state(path: Path, expected: str | None) -> str:
    """Whether `path` is the file a manifest recorded: FILE_OK, FILE_DIFFERS, FILE_MISSING, or FILE_UNRECORDED
    (older manifests carry no hash). The file is hashed in chunks, so a large one costs a read, not its size
    in memory."""
    if not path.is_file():
        return FILE_MISSING
    if expected is None:
        return FILE_UNRECORDED
    return FILE_OK if sha256_file(path) == expected else FILE_DIFFERS


def check_file_hash(path: Path, expected: str | None, manifest: Path) -> None:
    """Refuse `path` when it is not the file `manifest` recorded (a missing file is its reader's to name)."""
    if file_state(path, expected) == FILE_DIFFERS:
        raise unusable_export([(path, manifest)], FILE_DIFFERS)


# An export's file that is not the one its manifest recorded: (for one file, for several, why), per file_state.
_UNUSABLE = {
    FILE_DIFFERS: (
        "is not the file {} describes",
        "are not the files {} describe",
        " (sha256 differs): the export was interrupted or mixed with another one",
    ),
    FILE_MISSING: (
        "is missing ({} describes it)",
        "are missing ({} describe them)",
        ": the export was deleted or moved in part",
    ),
}


def unusable_export(files: list[tuple[Path, Path]], state: str) -> VitcError:
    """The one line for (file, its manifest) pairs in `state` (FILE_DIFFERS or FILE_MISSING): the manifest's
    drift and held-out set describe a model this folder no longer holds."""
    one, several, why = _UNUSABLE[state]
    if len(files) == 1:
        what = f"{files[0][0]} {one.format(files[0][1].name)}"
    else:
        names = ", ".join(path.name for path, _ in files)
        what = f"{files[0][0].parent}: {names} {several.format(', '.join(m.name for _, m in files))}"
    return VitcError(f"{what}{why}; run vitc export again with --force")
