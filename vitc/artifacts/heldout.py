"""The held-out set of an export: its images, labels and PyTorch FP32 reference logits.

`vitc export` writes it once per checkpoint as `heldout.<sha16>.npz` (named by its content, so an
export of another checkpoint into the same folder never replaces it); `vitc build`, `vitc bench --data`
and `vitc eval ENGINE` read it with numpy only. The images are stored as uint8 pixels with the mean and
std that normalise them (`normalized`, the function the reference logits' inputs came from): a quarter
of the float bytes, which a Jetson copies, holds in memory while TensorRT builds, and normalises a
chunk at a time. A set written before holds the float inputs themselves (`images`), read as they are.
Every read checks the hash its manifest recorded and that each array's declared shape matches the
bytes stored for it. A set of generated inputs (for a model whose classes no local data has) stores no
labels: its drift is agreement-only.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from vitc._io import sha256_file
from vitc.artifacts.drift import compare_logits
from vitc.artifacts.manifest import ExportManifest, check_file_hash, load_manifest, manifest_paths
from vitc.artifacts.preprocess import normalized
from vitc.errors import VitcError

GLOB = "heldout.*.npz"
KEYS = ("pixels", "mean", "std", "images", "labels", "reference_logits")  # images: float inputs, written before
NOT_HELDOUT = "not a held-out set (.npz of pixels, labels, reference_logits)"  # every reader's refusal


def heldout_name(sha256: str) -> str:
    return f"heldout.{sha256[:16]}.npz"


def encode_heldout(
    pixels: np.ndarray,
    mean: Sequence[float],
    std: Sequence[float],
    labels: np.ndarray | None,
    reference_logits: np.ndarray,
) -> tuple[bytes, str]:
    """The .npz bytes of a held-out set and their sha256 (which names the file): uint8 N×C×H×W pixels, the
    mean and std `normalized` takes, labels (none for generated inputs) and the reference logits."""
    if pixels.dtype != np.uint8 or pixels.ndim != 4:
        raise ValueError(f"held-out pixels must be uint8 N×C×H×W, got {pixels.dtype} {pixels.shape}")
    buf = io.BytesIO()
    arrays = {
        "pixels": pixels,
        "mean": np.asarray(mean, dtype=np.float32),
        "std": np.asarray(std, dtype=np.float32),
        "reference_logits": reference_logits.astype(np.float32),
    }
    if labels is not None:
        arrays["labels"] = labels.astype(np.int64)
    np.savez(buf, **arrays)
    data = buf.getvalue()
    return data, hashlib.sha256(data).hexdigest()


def prune_heldout(folder: Path) -> None:
    """Delete the held-out sets that no manifest of `folder` names any more."""
    try:
        named = {m.heldout for m in _manifests(folder)}
    except VitcError:
        return  # an unreadable manifest might name any of them: keep all
    for path in folder.glob(GLOB):
        if path.name not in named:
            path.unlink(missing_ok=True)


@dataclass(frozen=True)
class Heldout:
    images: np.ndarray  # uint8 N×C×H×W pixels; float32 normalised inputs in a set written before
    labels: np.ndarray | None  # int64 N; None for generated inputs (agreement-only drift)
    reference_logits: np.ndarray  # float32 N×K, PyTorch FP32
    mean: tuple[float, ...] = ()  # what normalises uint8 pixels (`normalized`)
    std: tuple[float, ...] = ()

    def __len__(self) -> int:
        return int(self.reference_logits.shape[0])

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.images.shape[1:])

    def inputs(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """The float32 model inputs of images [start, stop): pixels normalised here, a chunk at a time."""
        part = self.images[start:stop]
        return normalized(part, self.mean, self.std) if part.dtype == np.uint8 else part


def heldout_for(source: str | os.PathLike[str] | ExportManifest) -> tuple[Path, ExportManifest | None]:
    """(held-out file, the manifest that names it) for a manifest, an export folder or a .npz path.

    An export folder resolves through its manifests; exports of one folder made from different
    checkpoints have different held-out sets, and then the manifest must be named.
    """
    if isinstance(source, ExportManifest):
        if source.heldout_path is None:
            raise VitcError(f"{source.path}: the export manifest names no held-out set")
        return source.heldout_path, source
    path = Path(source)
    if path.is_file() and path.suffix == ".json":
        return heldout_for(load_manifest(path))
    if not path.is_dir():  # a .npz named directly: still checked against a manifest that names it
        named_by = [m for m in manifests_naming(path) if m.heldout_sha256]
        return path, named_by[0] if named_by else None
    manifests = _manifests(path)
    named = {(m.heldout, m.heldout_sha256) for m in manifests if m.heldout}
    if len(named) > 1:
        listed = ", ".join(m.path.name for m in manifests)
        raise VitcError(f"{path} holds exports with different held-out sets ({listed}): name a manifest file")
    if named:
        return heldout_for(next(m for m in manifests if m.heldout))
    if not manifests and not (path / "heldout.npz").is_file():
        raise VitcError(
            f"{path} is not an export folder (no manifest.<precision>.json or held-out set in it); a folder of "
            f"labelled images is measured with vitc eval ENGINE --data-dir {path}"
        )
    return path / "heldout.npz", None  # a folder written before manifests named their held-out set


def _manifests(folder: Path) -> list[ExportManifest]:
    return [load_manifest(m) for m in manifest_paths(folder)]


def manifests_naming(path: Path) -> list[ExportManifest]:
    """The manifests beside the held-out set `path` that name it: the precisions exported from its checkpoint."""
    return [m for m in _manifests(path.parent) if m.heldout == path.name]


def load_heldout(source: str | os.PathLike[str] | ExportManifest) -> Heldout:
    """Load a held-out set from its .npz, a manifest or an export folder; checks hash, sizes and shapes."""
    path, manifest = heldout_for(source)
    return _read(path, manifest)


def heldout_summary(source: str | os.PathLike[str]) -> dict[str, Any]:
    """What `vitc info X.npz` shows of a held-out set, after every check `load_heldout` makes. Its uint8 pixels
    are not read (their values need no check; shape and dtype come from the header): a 2,000-image set costs
    its hash, not 300 MB. The reference top-1 is the drift report's (`compare_logits`), as manifests record it."""
    path, manifest = heldout_for(source)
    held = _read(path, manifest, pixels=False)
    pixels, labels, logits = held.images.dtype == np.uint8, held.labels, held.reference_logits
    summary: dict[str, Any] = {
        "file": str(path),
        "images": len(held),
        "stored": "uint8 pixels" if pixels else "float inputs (a set written before vitc stored pixels)",
        "sample_shape": list(held.sample_shape),
        "dtype": str(held.images.dtype),
        "labels": labels is not None,
        "classes": int(logits.shape[1]),
        "reference_top1": None if labels is None else compare_logits(logits, logits, labels).reference_top1,
        "mean": list(held.mean) if pixels else None,
        "std": list(held.std) if pixels else None,
        "sha256": manifest.heldout_sha256 if manifest is not None else sha256_file(path),  # the manifest's: checked
        "manifests": [m.path.name for m in manifests_naming(path)],
    }
    if labels is None:
        summary["note"] = "generated inputs, no labels: drift on this set is agreement-only"
    return summary


def _read(path: Path, manifest: ExportManifest | None, pixels: bool = True) -> Heldout:
    """The checked set at `path`; without `pixels`, uint8 pixels stand in by their shape and dtype alone
    (zero-strided zeros: `heldout_summary`'s, never returned by `load_heldout`)."""
    if not path.is_file():
        raise VitcError(f"{path}: no such held-out set")
    if manifest is not None:
        check_file_hash(path, manifest.heldout_sha256, manifest.path)
    headers = _check_npz_sizes(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in KEYS if k in data and (pixels or k != "pixels")}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise VitcError(f"{path}: {NOT_HELDOUT}") from exc
    if not pixels and "pixels" in headers:
        if manifest is None:  # no hash proved the bytes: their CRC, as np.load's read checks it
            _check_crc(path, "pixels.npy")
        shape, dtype = headers["pixels"]
        arrays["pixels"] = np.broadcast_to(np.zeros((), dtype=dtype), shape)
    if not {"pixels", "images", "reference_logits"} & set(arrays):
        held = ", ".join(sorted(headers)) or "no arrays"
        raise VitcError(f"{path}: {NOT_HELDOUT}; it holds {held}")
    stored = "pixels" if "pixels" in arrays else "images"  # float inputs: a set written before
    missing = {stored, "reference_logits"} - set(arrays)
    if missing:
        raise VitcError(f"{path}: the held-out set lacks {', '.join(sorted(missing))}")
    images, labels, logits = arrays[stored], arrays.get("labels"), arrays["reference_logits"]
    n = logits.shape[0] if logits.ndim == 2 else -1
    if images.ndim != 4 or images.shape[0] != n or (labels is not None and labels.shape != (n,)):
        raise VitcError(
            f"{path}: inconsistent held-out shapes: {stored} {images.shape}, "
            f"labels {None if labels is None else labels.shape}, reference_logits {logits.shape}"
        )
    if n == 0:  # every reader divides by it or concatenates per-batch results
        raise VitcError(f"{path}: the held-out set holds no samples")
    floats = [("reference_logits", logits)] + ([] if stored == "pixels" else [("images", images)])
    for name, array in floats:
        if array.dtype.kind != "f" or not np.isfinite(array).all():
            raise VitcError(f"{path}: the held-out {name} are not all finite floats")
    if labels is not None and (labels.dtype.kind not in "iu" or labels.min() < 0 or labels.max() >= logits.shape[1]):
        raise VitcError(f"{path}: held-out labels must be class indices below {logits.shape[1]}")
    mean, std = _normalisation(path, arrays, images) if stored == "pixels" else ((), ())
    return Heldout(
        images if stored == "pixels" else images.astype(np.float32, copy=False),
        None if labels is None else labels.astype(np.int64, copy=False),
        logits.astype(np.float32, copy=False),
        mean,
        std,
    )


def _normalisation(
    path: Path, arrays: dict[str, np.ndarray], pixels: np.ndarray
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The mean and std stored beside uint8 pixels: one value, or one per channel; std never 0."""
    if pixels.dtype != np.uint8:
        raise VitcError(f"{path}: the held-out pixels must be uint8, got {pixels.dtype}")
    found = []
    for name in ("mean", "std"):
        values = arrays.get(name)
        if values is None or values.dtype.kind != "f" or values.size not in (1, pixels.shape[1]):
            raise VitcError(f"{path}: the held-out set needs a float {name} of 1 or {pixels.shape[1]} values")
        if not np.isfinite(values).all() or (name == "std" and (values == 0).any()):
            raise VitcError(f"{path}: the held-out {name} must be finite" + (" and non-zero" if name == "std" else ""))
        found.append(tuple(float(v) for v in values.reshape(-1)))
    return found[0], found[1]


def _check_crc(path: Path, member: str) -> None:
    """Read `member` through a chunk at a time: zipfile checks its CRC-32 at the end, without holding it whole."""
    try:
        with zipfile.ZipFile(path) as archive, archive.open(member) as stream:
            while stream.read(1 << 20):
                pass
    except (OSError, KeyError, zlib.error, zipfile.BadZipFile) as exc:
        raise VitcError(f"{path}: {NOT_HELDOUT}") from exc


def _check_npz_sizes(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Every array's declared shape must match the bytes stored for it: a 1 KB file cannot make numpy
    allocate gigabytes. Object arrays (pickles) are refused. The shape and dtype of each, by its name."""
    headers: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
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
                headers[info.filename[: -len(".npy")] if info.filename.endswith(".npy") else info.filename] = (
                    shape,
                    dtype,
                )
    except VitcError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise VitcError(f"{path}: {NOT_HELDOUT}") from exc
    return headers
