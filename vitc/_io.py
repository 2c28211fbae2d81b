"""File plumbing with no heavy imports: atomic writes, hashes, safetensors headers.

Every artifact vitc writes goes through `atomic_write`: a temporary file in the same folder,
flushed and fsynced, then renamed over the target. A kill at any instant leaves either the old
file or the new one under the final name, never half of one. Files that describe each other go
through `atomic_files`, renamed one right after the other with Ctrl-C and SIGTERM held.

A SIGKILL (the OOM killer, a watchdog, a power loss) before the rename leaves the temporary behind; the next
write of the same target removes those no live process holds the lock of (`_sweep_leftovers`).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import re
import struct
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vitc._run_layout import run_record
from vitc._signals import stop_signals_held
from vitc.errors import VitcError

_MAX_HEADER = 100 * 1024 * 1024


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it replaces `path` atomically."""
    with atomic_files() as files:
        yield files.stage(path)


class StagedFiles:
    """Temporaries, each next to the file it will replace (`atomic_files`)."""

    def __init__(self) -> None:
        self.staged: list[tuple[Path, Path]] = []  # (temporary, target), in the order staged
        self.writing: Path | None = None  # the target whose temporary is being written: an error names it
        self.locks: list[int] = []  # descriptors holding each temporary's flock until it is renamed or removed

    def stage(self, path: str | os.PathLike[str]) -> Path:
        """A new temporary for `path`, in its folder (made if missing), to be written now."""
        target = Path(path)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            _sweep_leftovers(target)
            tmp, lock = _locked_temporary(target)
        except OSError as exc:
            raise VitcError(f"cannot write {target}: {_os_reason(exc)}") from exc
        if lock is not None:
            self.locks.append(lock)
        self.staged.append((tmp, target))
        self.writing = target
        return tmp

    def commit(self) -> None:
        """Every temporary flushed to the disk, then renamed over its target, back to back with Ctrl-C and
        SIGTERM held (vitc._signals): files that describe each other are replaced together."""
        for tmp, target in self.staged:
            self.writing = target
            with open(tmp, "rb+") as handle:
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; artifacts get the mode any new file would
        with stop_signals_held():
            for tmp, target in self.staged:
                self.writing = target
                os.replace(tmp, target)


@contextlib.contextmanager
def atomic_files() -> Iterator[StagedFiles]:
    """Several files written atomically as one: `stage` each and write its temporary; at the end all are
    renamed over their targets at once, or on any failure none is and the temporaries are removed. An ONNX
    file and the manifest that holds its hash, or a plan and its sidecar, go together: an interrupt that
    left the new one beside the old other made both unusable (each reader checks the hash)."""
    files = StagedFiles()
    try:
        yield files
        files.commit()
    except OSError as exc:
        if files.writing is None:
            raise
        raise VitcError(f"cannot write {files.writing}: {_os_reason(exc)}") from exc
    except Exception as exc:  # writers in Rust or C (safetensors) report the OS error only in their message
        code = re.search(r"\(os error (\d+)\)", str(exc))
        if code is None or files.writing is None:
            raise
        raise VitcError(f"cannot write {files.writing}: {_os_reason(OSError(int(code[1]), str(exc)))}") from exc
    finally:
        for tmp, _ in files.staged:
            tmp.unlink(missing_ok=True)
        for lock in files.locks:  # after the unlink: a sweep never sees an unlocked temporary still in use
            os.close(lock)


def _temporary_name(target: Path) -> re.Pattern[str]:
    """The names `tempfile.mkstemp` gives `target`'s temporaries in `StagedFiles.stage`: `.NAME.` + 8 of
    [a-z0-9_] + `.tmp`, and nothing else (another target's, a user's own `.NAME.old.tmp`)."""
    return re.compile(re.escape(f".{target.name}.") + r"[a-z0-9_]{8}\.tmp")


def _locked_temporary(target: Path) -> tuple[Path, int | None]:
    """A new temporary for `target` and the descriptor that holds an exclusive flock on it while it is written
    (None where this system or file system has no flock: nothing is swept there either). A sweep may take the
    file between its creation and the lock; then the path no longer names the locked file, and another is made."""
    while True:
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        if not _flock(fd, wait=True):
            os.close(fd)
            return Path(name), None
        try:
            ours = os.path.samestat(os.fstat(fd), os.stat(name))
        except FileNotFoundError:
            ours = False
        if ours:
            return Path(name), fd
        os.close(fd)


def _sweep_leftovers(target: Path) -> None:
    """Remove the temporaries of `target` that vitc processes killed while writing left beside it (a SIGKILL
    runs no cleanup: a checkpoint's is hundreds of MB, every run). Each writer holds an flock on its temporary
    until the rename, and the kernel drops it when the process dies however it dies, so a temporary whose lock
    can be taken is no live process's: another rank's or another export's in-flight one is kept. No age rule:
    a Jetson without a clock battery boots in 1970, and a TensorRT build holds its temporary for many minutes."""
    _sweep(target.parent, _temporary_name(target))


def remove_leftover_temporaries(folder: Path) -> None:
    """Every vitc temporary in `folder` that no live process writes (`vitc train` sweeps its run folder as a run
    starts): as a write sweeps its own target's, by the lock, never by name alone."""
    _sweep(folder, re.compile(r"\..+\.[a-z0-9_]{8}\.tmp"))


def _sweep(folder: Path, pattern: re.Pattern[str]) -> None:
    """Remove the files of `folder` whose names match `pattern` and whose flock can be taken (see _sweep_leftovers)."""
    try:
        names = [entry.name for entry in os.scandir(folder) if pattern.fullmatch(entry.name)]
    except OSError:
        return
    for name in names:
        path = os.path.join(folder, name)
        with contextlib.suppress(OSError):  # another user's (0600), or gone already
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
            try:
                if _flock(fd, wait=False) and os.path.samestat(os.fstat(fd), os.stat(path)):
                    os.unlink(path)
            finally:
                os.close(fd)


def _flock(fd: int, wait: bool) -> bool:
    """Take an exclusive flock on `fd`: False where it is held by another process (`wait` False), or where
    there is no flock (Windows; NFS without lockd, some FUSE and SMB mounts: ENOLCK, EOPNOTSUPP)."""
    try:
        import fcntl
    except ImportError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except OSError:
        return False
    return True


@contextlib.contextmanager
def file_lock(path: str | os.PathLike[str]) -> Iterator[bool]:
    """Hold an exclusive lock for updating `path` (read, merge, write back) against other processes doing
    the same: POSIX flock on `<path>.lock` (not on `path`, which atomic_write replaces by another inode).
    Yields False, unlocked, where no lock can be had (no fcntl: Windows; the lock file cannot be made; a
    file system without locks: NFS without lockd, some FUSE and SMB mounts)."""
    handle = None
    with contextlib.suppress(OSError):
        handle = open(Path(path).with_name(Path(path).name + ".lock"), "a+b")  # noqa: SIM115 (closed below)
    if handle is None:
        yield False
        return
    with handle:  # closing it releases the lock
        yield _flock(handle.fileno(), wait=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _os_reason(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "the disk is full"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "the folder is read-only or not writable"
    return exc.strerror or str(exc)


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Write JSON atomically, pretty-printed for humans."""
    with atomic_write(path) as tmp:
        tmp.write_text(json_text(data))


def json_text(data: Any) -> str:
    """JSON as vitc writes it: pretty-printed for humans, NaN and infinities as null (`finite`)."""
    return json.dumps(finite(data), indent=2, sort_keys=False, allow_nan=False) + "\n"


def json_line(data: Any) -> str:
    """A record of a JSON lines file (metrics.jsonl), NaN and infinities as null (`finite`)."""
    return json.dumps(finite(data), allow_nan=False) + "\n"


def finite(data: Any) -> Any:
    """`data` with every NaN and infinity made None: Python writes them as bare `NaN`/`Infinity`, which is not
    JSON (JSON.parse, jq and serde refuse the file). A diverged loss, NaN logits' loss: where a record holds
    one, another field says why (eval's nan_images; the run's stop)."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {key: finite(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [finite(value) for value in data]
    return data


def refuse_to_replace(paths: Iterable[Path], force: bool) -> None:
    """An artifact (ONNX file, manifest, plan, imported weights, compiled program) already there is replaced
    only with --force: one line naming the first that exists, before any work."""
    for path in () if force else paths:
        if path.exists():
            raise VitcError(f"{path} exists (use --force to replace it)")


@dataclass(frozen=True)
class ReportKind:
    """A report written where an option says (`vitc eval --out`, `--json`, `--markdown`): its file name's
    suffix, and how an earlier report of the same kind is recognised, which a re-run replaces without
    --force (users re-run bench and eval all the time)."""

    name: str  # as a message says it: "vitc bench report"
    suffix: str
    recognise: Callable[[Path], bool]


STDOUT = "-"  # a report's path that means standard output (`--json -`), as jq, curl and tar read it


def to_stdout(path: str | os.PathLike[str] | None) -> bool:
    """Whether a report option names standard output (`-`) rather than a file."""
    return path is not None and os.fspath(path) == STDOUT


def write_report(path: str | os.PathLike[str], text: str) -> None:
    """A report's text to its file, atomically, or to standard output for `-` (for `| jq`)."""
    if to_stdout(path):
        import sys

        sys.stdout.write(text)
        sys.stdout.flush()
        return
    with atomic_write(path) as tmp:
        tmp.write_text(text)


def report_path(path: Path, kind: ReportKind, option: str, force: bool, stdout: bool = False) -> Path:
    """The path a report may be written to: `-` (standard output) where the option takes it (`stdout`),
    or a file whose name ends in the kind's suffix and where what is there already is an earlier report of
    the same kind, or anything but a folder with --force. Checked before any work, so a report never lands
    on a checkpoint, an ONNX file, a plan or a run's config.json (their suffixes or contents differ), and
    a typo costs no evaluation."""
    if stdout and to_stdout(path):
        return path
    if path.suffix.lower() != kind.suffix:
        raise VitcError(f"{option} {path}: a {kind.name} is written to a file whose name ends in {kind.suffix}")
    if path.is_dir():
        raise VitcError(f"{option} {path} is a folder: give a file name ending in {kind.suffix}")
    if not path.exists() or kind.recognise(path):
        return path
    artifact = _vitc_artifact(path)
    if artifact:  # what the next step reads: never a report's place, --force or not
        raise VitcError(f"{option} {path} is {artifact}, not a {kind.name}: write the report elsewhere")
    if not force:
        raise VitcError(f"{path} exists and is not a {kind.name} (use --force to replace it)")
    return path


EXPORT_FORMAT = "vitc.export"  # an export's manifest (vitc.artifacts.manifest)
ENGINE_FORMAT = "vitc.engine"  # an engine's sidecar (vitc.artifacts.sidecar)
_ARTIFACT_FORMATS = {EXPORT_FORMAT: "an export's manifest", ENGINE_FORMAT: "an engine's sidecar"}


def _vitc_artifact(path: Path) -> str:
    """What vitc made at `path` that a later command reads ("" for anything else): a run's files, an export's
    manifest, an engine's sidecar. --force over one of them broke the run (--resume) or the export (info, bench)."""
    if run_record(path):
        return f"a run's {path.name}"
    record = json_record(path) if path.suffix.lower() == ".json" else None
    return _ARTIFACT_FORMATS.get(record.get("format"), "") if record is not None else ""


def json_record(path: Path) -> dict[str, Any] | None:
    """The JSON object in `path`, or None where there is none to read."""
    try:
        record = parse_json(path.read_bytes(), str(path))
    except (OSError, VitcError):
        return None
    return record if isinstance(record, dict) else None


def json_report(*keys: str, fmt: str | None = None) -> Callable[[Path], bool]:
    """Recognise a JSON report by keys it has always carried and its `format` (None: a report without one,
    which none of vitc's manifests and sidecars is), so the reports of earlier releases are recognised too."""

    def recognise(path: Path) -> bool:
        record = json_record(path)
        return record is not None and all(key in record for key in keys) and record.get("format") == fmt

    return recognise


def markdown_report(heading: str) -> Callable[[Path], bool]:
    """Recognise a Markdown report by its first line, the heading vitc writes."""

    def recognise(path: Path) -> bool:
        try:
            with open(path, "rb") as handle:
                first = handle.readline(4096)
        except OSError:
            return False
        return first.rstrip(b"\r\n").decode("utf-8", "replace").startswith(heading)

    return recognise


def parse_json(text: str | bytes, source: str) -> Any:
    """JSON from an untrusted file or option: any malformation, nesting bombs included, is a VitcError."""
    try:
        return json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise VitcError(f"{source} is not valid JSON ({exc})") from exc
    except RecursionError:
        raise VitcError(f"{source} is nested too deeply to be what vitc wrote") from None


def check_format(record: Any, fmt: str, version: int, source: str, what: str) -> dict[str, Any]:
    """A record vitc wrote: a table with `format` == fmt and an integer `version` this vitc can read."""
    if not isinstance(record, dict) or record.get("format") != fmt:
        raise VitcError(f"{source}: not a {what} (format is not {fmt!r})")
    found = record.get("version", 0)
    if not isinstance(found, int) or isinstance(found, bool):
        raise VitcError(f"{source}: the {what} version must be an integer, got {str(found)[:20]!r}")
    if found > version:
        raise VitcError(f"{source}: written by a newer vitc ({what} version {found}); upgrade vitc")
    return record


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
        header = parse_json(handle.read(length), f"{path}: the safetensors header")
    if not isinstance(header, dict):
        raise VitcError(f"{path}: not a safetensors file (header is not a table)")
    metadata = header.get("__metadata__")
    if metadata is not None and not (isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())):
        raise VitcError(f"{path}: malformed safetensors file (__metadata__ must be a table of strings)")
    ends = [_tensor_end(path, key, entry) for key, entry in header.items() if key != "__metadata__"]
    if ends and max(ends) > size - 8 - length:
        raise VitcError(f"{path}: truncated safetensors file ({size} bytes, tensors end at {8 + length + max(ends)})")
    return header


def read_safetensors_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The `__metadata__` table of a safetensors file (validated: strings only), empty when absent."""
    metadata: dict[str, str] = read_safetensors_header(path).get("__metadata__") or {}
    return metadata


# bytes per element of every safetensors dtype
SAFETENSORS_DTYPES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8, "C64": 8,
}  # fmt: skip


def _tensor_end(path: Path, key: str, entry: Any) -> int:
    """Where a tensor's bytes end, after checking that its entry is well formed and self-consistent."""

    def bad(why: str) -> VitcError:
        return VitcError(f"{path}: malformed safetensors entry {key[:80]!r} ({why})")

    if not isinstance(entry, dict):
        raise bad("not a table")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in SAFETENSORS_DTYPES:
        raise bad(f"unknown dtype {str(dtype)[:20]!r}")
    if not (isinstance(shape, list) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
        raise bad("shape must be a list of non-negative integers")
    if not (
        isinstance(offsets, list)
        and len(offsets) == 2
        and all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
        and 0 <= offsets[0] <= offsets[1]
    ):
        raise bad("data_offsets must be [begin, end] with 0 <= begin <= end")
    elements = 1
    for dim in shape:
        elements *= dim
    if elements * SAFETENSORS_DTYPES[dtype] != offsets[1] - offsets[0]:
        raise bad(f"shape {shape[:8]} of {dtype} does not match data_offsets {offsets}")
    return int(offsets[1])
