"""The listing of an image folder's split, cached in the run folder as index.json (vitc._run_layout.INDEX).

A streamed image folder is listed once: a resume, and the next run on the same folder, take the listing
while the folders' modification times are those it was made under (a file added, removed or renamed changes
its folder's). No torch, and Python 3.8: `vitc info RUN/index.json` says on a Jetson too what a listing
holds and whether the next run takes it (`index_summary`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vitc._io import parse_json, write_json
from vitc.data.files import FileIndex, folder_split, list_images, split_read
from vitc.errors import VitcError

INDEX_VERSION = 2  # 2: image files only (by extension)
AGAIN = "the next run lists the folder again"


def index_key(root: Path, class_folders: Iterable[Path]) -> dict[str, Any]:
    """What a listing of `root` holds for as long as it is unchanged: its resolved path and the modification
    times of it and of its class folders (raises OSError where one is gone)."""
    return {"root": str(root.resolve()), "mtime_ns": [_mtime(root)] + [_mtime(folder) for folder in class_folders]}


def index_imagefolder(
    data_dir: str | Path, split: str, cache: Path | None = None, recorded: Sequence[str] | None = None
) -> FileIndex:
    """Scan `data_dir/<split>/<class>/*` once; with `cache` (the run's index.json) a folder whose
    path and folder mtimes (a file added, removed or renamed changes its folder's) are unchanged
    is not scanned again, so a resume starts at once. Classes in `folder_split`'s order (`recorded`: a
    resumed run's); a listing cached in another order is not used."""
    data_dir = Path(data_dir)
    classes, dirs = folder_split(data_dir, split, recorded)
    root = next(iter(dirs.values())).parent
    key = index_key(root, (dirs[c] for c in classes))
    entries = cached_splits(cache)
    hit = entries.get(split)
    if isinstance(hit, dict) and hit.get("key") == key and hit.get("classes") == classes:
        per_class = hit.get("files")
        if valid_names(per_class, len(classes)):
            return _index(root, classes, per_class)
    per_class = []
    for name in classes:
        files = list_images(dirs[name])
        if not files:
            raise VitcError(f"class folder {dirs[name]} has no images")
        per_class.append(files)
    if cache is not None:
        entries[split] = {"key": key, "classes": classes, "count": sum(map(len, per_class)), "files": per_class}
        entries[split]["folder"] = str(root)  # as named under data_dir (the key's root is resolved): `_state`
        cache.parent.mkdir(parents=True, exist_ok=True)
        write_json(cache, {"version": INDEX_VERSION, "splits": entries})
    return _index(root, classes, per_class)


def valid_names(per_class: Any, n_classes: int) -> bool:
    """A cached listing: one non-empty list of plain file names (no separators) per class."""
    if not isinstance(per_class, list) or len(per_class) != n_classes:
        return False
    return all(
        isinstance(names, list)
        and names
        and all(isinstance(f, str) and f and "/" not in f and f not in (".", "..") for f in names)
        for names in per_class
    )


def _mtime(path: Path) -> int:
    return os.stat(path).st_mtime_ns


def _index(root: Path, classes: list[str], per_class: list[list[str]]) -> FileIndex:
    files = [f"{c}/{f}" for c, names in zip(classes, per_class) for f in names]  # one list per class: checked
    labels = np.concatenate([np.full(len(n), i, dtype=np.int64) for i, n in enumerate(per_class)])
    return FileIndex(root, files, labels, list(classes))


def cached_splits(cache: Path | None) -> dict[str, Any]:
    """The cached splits, or nothing when the cache is missing, unreadable or of another version."""
    if cache is None or not cache.is_file():
        return {}
    try:
        record = parse_json(cache.read_bytes(), str(cache))
    except (OSError, VitcError):
        return {}
    ok = isinstance(record, dict) and record.get("version") == INDEX_VERSION and isinstance(record.get("splits"), dict)
    return dict(record["splits"]) if ok else {}


def index_summary(path: Path) -> dict[str, Any]:
    """What `vitc info RUN/index.json` shows: per split, the folder it lists, its classes and images, and whether
    it is current (the folders' modification times in its key are those on disk now: a resume takes it) or stale
    (the next run lists the folder again). A file that is no listing, damaged or unreadable, is one line."""
    try:
        record = parse_json(path.read_bytes(), str(path))
    except OSError as exc:
        raise VitcError(f"{path} cannot be read ({exc.strerror or exc})") from exc
    except VitcError as exc:
        raise VitcError(f"{exc}: {AGAIN}") from exc
    if not isinstance(record, dict) or not isinstance(record.get("splits"), dict):
        raise VitcError(f"{path} is not an image folder's listing as vitc train writes it (its splits): {AGAIN}")
    if record.get("version") != INDEX_VERSION:
        said = f"stale: another vitc's listing (version {record.get('version')}, this one reads {INDEX_VERSION})"
        return {"version": record.get("version"), "state": f"{said}; {AGAIN}"}
    return {
        "version": INDEX_VERSION,
        "splits": {str(split): _split_summary(path, str(split), entry) for split, entry in record["splits"].items()},
    }


def _split_summary(path: Path, split: str, entry: Any) -> dict[str, Any]:
    """One split's listing: its folder, classes and images, and whether the next run takes it (`_state`)."""
    key = entry.get("key") if isinstance(entry, dict) else None
    classes = entry.get("classes") if isinstance(entry, dict) else None
    if not (
        isinstance(key, dict)
        and isinstance(key.get("root"), str)
        and isinstance(classes, list)
        and all(isinstance(name, str) and name for name in classes)
        and valid_names(entry.get("files"), len(classes))
    ):
        raise VitcError(f"{path}: the listing of {split!r} is damaged, not as vitc train writes it: {AGAIN}")
    root = Path(key["root"])
    images = sum(len(names) for names in entry["files"])
    folder = Path(entry["folder"]) if isinstance(entry.get("folder"), str) else root  # written before: its root
    state = _state(root, folder, split, classes, key)
    return {"root": str(root), "classes": len(classes), "images": images, "state": state}


def _state(root: Path, folder: Path, split: str, classes: list[str], key: dict[str, Any]) -> str:
    """current: `index_imagefolder` takes the listing (its key is the one made of the folders now, and the split
    still reads the folder it listed, `folder` as named under the data folder: a test/ made beside the val/ it
    read is read instead); else stale, and why."""
    try:
        now = index_key(root, (root / name for name in classes))
    except OSError:
        return f"stale: {root} or one of its class folders is gone; {AGAIN}"
    if now != key or split_read(folder.parent, split) != folder.name:
        return f"stale: a folder changed since it was listed; {AGAIN}"
    return "current: a resume takes it as it is"
