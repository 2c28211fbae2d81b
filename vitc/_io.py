"""File plumbing with no heavy imports: atomic writes, hashes, safetensors headers.

Every artifact vitc writes goes through `atomic_write`: a temporary file in the same folder,
flushed and fsynced, then renamed over the target. A kill at any instant leaves either the old
file or the new one under the final name, never half of one.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vitc.errors import VitcError

_MAX_HEADER = 100 * 1024 * 1024


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it replaces `path` atomically."""
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise VitcError(f"cannot write {target}: {_os_reason(exc)}") from exc
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        raise VitcError(f"cannot write {target}: {_os_reason(exc)}") from exc
    finally:
        tmp.unlink(missing_ok=True)


def _os_reason(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "the disk is full"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "the folder is read-only or not writable"
    return exc.strerror or str(exc)


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Write JSON atomically, pretty-printed for humans."""
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_safetensors_header(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON header of a .safetensors file (tensor table and `__metadata__`), without torch.

    Raises VitcError for anything that is not a well-formed safetensors file.
    """
    path = Path(path)
    if not path.is_file():
        raise VitcError(f"{path}: no such file")
    size = path.stat().st_size
    with open(path, "rb") as handle:
        raw = handle.read(8)
        if len(raw) < 8:
            raise VitcError(f"{path}: not a safetensors file (too short)")
        (length,) = struct.unpack("<Q", raw)
        if length == 0 or length > min(_MAX_HEADER, size - 8):
            raise VitcError(f"{path}: not a safetensors file (bad header length)")
        try:
            header = json.loads(handle.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise VitcError(f"{path}: not a safetensors file (unreadable header)") from exc
    if not isinstance(header, dict):
        raise VitcError(f"{path}: not a safetensors file (header is not a table)")
    ends = [
        v["data_offsets"][1]
        for k, v in header.items()
        if k != "__metadata__" and isinstance(v, dict) and "data_offsets" in v
    ]
    if ends and max(ends) > size - 8 - length:
        raise VitcError(f"{path}: truncated safetensors file ({size} bytes, tensors end at {8 + length + max(ends)})")
    return header
