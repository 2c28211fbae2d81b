"""TensorRT: the timing cache file a build loads and saves (engines/timing-trt<version>.cache by default).

The file is shared by every build of one TensorRT version in engines/, and two builds may run at once
(two terminals, a script). A build loads the file before building and, after it, merges what the file
holds then into its own cache before writing it back (`ITimingCache.combine`, under a lock, written to
a temporary renamed over the file), as Polygraphy's EngineBytesFromNetwork does: writing the build's
cache over the file lost the entries another build had saved meanwhile.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from vitc.errors import VitcError

if TYPE_CHECKING:
    import tensorrt as trt


def attach_timing_cache(config: trt.IBuilderConfig, path: Path, warnings: list[str]) -> bool:
    """Load the cache file into the build; True when the build's cache may be written back to `path`.

    A cache from another GPU or TensorRT makes set_timing_cache return False and leaves the build
    without a cache (get_timing_cache() is then None); an unreadable blob may not even make a cache,
    and a file may not be readable at all. In each case a fresh cache is attached, and the file is
    left as it is rather than overwritten.
    """
    try:
        previous = path.read_bytes() if path.is_file() else b""
    except OSError as exc:  # permissions, an I/O error
        problem = f"cannot read the timing cache ({exc.strerror or exc})"
    else:
        cache = config.create_timing_cache(previous)  # may be None for an unreadable blob (nullptr)
        if cache is not None and config.set_timing_cache(cache, False):
            return True
        problem = "the timing cache does not match this TensorRT/GPU"
    warnings.append(
        f"{path}: {problem}; built with a fresh cache and left the file as it is "
        "(delete it, or give --timing-cache another path, to keep this machine's cache)"
    )
    if not config.set_timing_cache(config.create_timing_cache(b""), False):
        warnings.append("TensorRT refused a fresh timing cache; built without one")
    return False


def save_timing_cache(config: trt.IBuilderConfig, path: Path, warnings: list[str]) -> None:
    """Write the build's cache to `path`, with the entries the file holds now merged in.

    `combine(..., ignore_mismatch=False)`: only a cache of this TensorRT and GPU is merged (NvInfer.h warns
    that combining caches of different devices "may lead to functional/performance bugs"). A file that
    no longer holds one (replaced or corrupted during the build) is left as it is, as `attach_timing_cache`
    leaves a foreign file.
    """
    from vitc._io import atomic_write, file_lock

    cache = config.get_timing_cache()
    if cache is None:
        warnings.append(f"{path}: TensorRT returned no timing cache; nothing saved")
        return
    with file_lock(path):  # another build's save waits, so its entries are read, not overwritten
        try:
            on_disk = path.read_bytes() if path.is_file() else b""
        except OSError as exc:
            warnings.append(f"{path}: cannot read the timing cache to merge it ({exc.strerror or exc}); not saved")
            return
        if on_disk:
            previous = config.create_timing_cache(on_disk)
            if previous is None or not cache.combine(previous, False):
                warnings.append(
                    f"{path}: the timing cache changed during the build into one of another TensorRT/GPU (or an "
                    "unreadable one); left it as it is"
                )
                return
        try:
            with atomic_write(path) as tmp:
                tmp.write_bytes(bytes(cache.serialize()))
        except VitcError as exc:  # a cache that cannot be saved is not worth failing the build for
            warnings.append(f"{path}: could not save the timing cache ({exc})")


__all__ = ["attach_timing_cache", "save_timing_cache"]
