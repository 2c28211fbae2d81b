"""The held-out set of an export: normalised images, labels and PyTorch FP32 reference logits.

`vitc export` writes it once per checkpoint as `heldout.<sha16>.npz` (named by its content, so an
export of another checkpoint into the same folder never replaces it); `vitc build` and
`vitc bench --data` read it with numpy only. Every read checks the hash its manifest recorded and
that each array's declared shape matches the bytes stored for it. A set of generated inputs (for a
model whose classes no local data has) stores no labels: its drift is agreement-only.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vitc.artifacts.manifest import ExportManifest, check_file_hash, load_manifest, manifest_paths
from vitc.errors import VitcError

GLOB = "heldout.*.npz"


def heldout_name(sha256: str) -> str:
    return f"heldout.{sha256[:16]}.npz"


def encode_heldout(images: np.ndarray, labels: np.ndarray | None, reference_logits: np.ndarray) -> tuple[bytes, str]:
    """The .npz bytes of a held-out set and their sha256 (which names the file); generated inputs have no labels."""
    buf = io.BytesIO()
    arrays = {"images": images.astype(np.float32), "reference_logits": reference_logits.astype(np.float32)}
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
    images: np.ndarray  # float32 N×C×H×W, normalised
    labels: np.ndarray | None  # int64 N; None for generated inputs (agreement-only drift)
    reference_logits: np.ndarray  # float32 N×K, PyTorch FP32

    def __len__(self) -> int:
        return int(self.reference_logits.shape[0])


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
        named_by = [m for m in _manifests(path.parent) if m.heldout == path.name and m.heldout_sha256]
        return path, named_by[0] if named_by else None
    manifests = _manifests(path)
    named = {(m.heldout, m.heldout_sha256) for m in manifests if m.heldout}
    if len(named) > 1:
        listed = ", ".join(m.path.name for m in manifests)
        raise VitcError(f"{path} holds exports with different held-out sets ({listed}): name a manifest file")
    if named:
        return heldout_for(next(m for m in manifests if m.heldout))
    return path / "heldout.npz", None  # a folder written before manifests named their held-out set


def _manifests(folder: Path) -> list[ExportManifest]:
    return [load_manifest(m) for m in manifest_paths(folder)]


def load_heldout(source: str | os.PathLike[str] | ExportManifest) -> Heldout:
    """Load a held-out set from its .npz, a manifest or an export folder; checks hash, sizes and shapes."""
    path, manifest = heldout_for(source)
    if not path.is_file():
        raise VitcError(f"{path}: no such held-out set")
    if manifest is not None:
        check_file_hash(path, manifest.heldout_sha256, manifest.path)
    _check_npz_sizes(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in ("images", "labels", "reference_logits") if k in data}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise VitcError(f"{path}: not a held-out set (.npz of images, labels, reference_logits)") from exc
    missing = {"images", "reference_logits"} - set(arrays)
    if missing:
        raise VitcError(f"{path}: the held-out set lacks {', '.join(sorted(missing))}")
    images, labels, logits = arrays["images"], arrays.get("labels"), arrays["reference_logits"]
    n = logits.shape[0] if logits.ndim == 2 else -1
    if images.ndim != 4 or images.shape[0] != n or (labels is not None and labels.shape != (n,)):
        raise VitcError(
            f"{path}: inconsistent held-out shapes: images {images.shape}, "
            f"labels {None if labels is None else labels.shape}, reference_logits {logits.shape}"
        )
    if n == 0:  # every reader divides by it or concatenates per-batch results
        raise VitcError(f"{path}: the held-out set holds no samples")
    for name, array in (("images", images), ("reference_logits", logits)):
        if array.dtype.kind != "f" or not np.isfinite(array).all():
            raise VitcError(f"{path}: the held-out {name} are not all finite floats")
    if labels is None:
        return Heldout(images.astype(np.float32), None, logits.astype(np.float32))
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
