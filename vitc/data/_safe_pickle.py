"""A restricted unpickler for CIFAR-10 batch files.

A pickle can call any importable function while it loads, so a downloaded batch file is as
dangerous as a script. CIFAR batches only need numpy array reconstruction (and `_codecs.encode`,
which Python 3 protocol-2 pickles use for bytes), so everything else is refused.
"""

from __future__ import annotations

import _codecs
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from vitc.errors import VitcError


def _multiarray_attr(name: str) -> Any:
    """`numpy._core.multiarray.<name>` on numpy 2, `numpy.core.multiarray.<name>` on numpy 1."""
    core = getattr(np, "_core", None) or np.core
    return getattr(core.multiarray, name)


# (module, name) -> object; real batches were written by Python 2 against numpy.core,
# files re-pickled under numpy 2 name numpy._core. Both resolve to the same objects.
_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _codecs.encode,
}
for _mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _ALLOWED[(_mod, "_reconstruct")] = _multiarray_attr("_reconstruct")
    _ALLOWED[(_mod, "scalar")] = _multiarray_attr("scalar")


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals in `_ALLOWED`; any other global aborts the load."""

    def __init__(self, file: io.BufferedIOBase, path: Path) -> None:
        super().__init__(file, encoding="bytes")
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise VitcError(
                f"refusing to unpickle {module}.{name} from {self._path}: "
                "a CIFAR batch only holds numpy arrays, so this file is not one (or was tampered with)"
            ) from None


def safe_load(path: Path) -> Any:
    """Unpickle `path` allowing only numpy arrays and plain containers (bytes keys, as CIFAR's loader)."""
    try:
        with open(path, "rb") as f:
            return _RestrictedUnpickler(f, path).load()
    except VitcError:
        raise
    except OSError as exc:
        raise VitcError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except Exception as exc:  # truncated/corrupt pickles raise many types (EOFError, UnpicklingError, ...)
        raise VitcError(f"{path} is not a valid CIFAR-10 pickle batch ({type(exc).__name__}: {exc})") from exc
