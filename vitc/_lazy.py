"""One home for optional heavy dependencies, imported on first use.

Each optional package is named here once, with the extra that provides it, so a missing one
gives the same clear message everywhere instead of an ImportError deep in a stack.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import platform
import sys
import threading
from types import ModuleType
from typing import Any

from vitc.errors import VitcError, first_line

# package -> how to install it: the pyproject extra that lists it, at the versions vitc needs
# (tests/engines/test_wheel.py checks each against pyproject.toml). pillow is a core dependency, transformers
# only the tests' reference (in [dev]); TensorRT is on no extra (NVIDIA's wheel on a desktop; on a Jetson,
# engines.tensorrt.tensorrt_remedy says what to do)
OPTIONAL = {
    "torch": "pip install torch==2.13.0 && pip install 'vitc[torch]'",
    "sklearn": "pip install 'vitc[torch]'",
    "PIL": "pip install pillow",
    "matplotlib": "pip install 'vitc[torch]'",
    "tensorboard": "pip install 'vitc[tensorboard]'",
    "onnx": "pip install 'vitc[onnx]'",
    "onnxruntime": "pip install 'vitc[onnx]'",
    "onnxscript": "pip install 'vitc[torch]'",
    "transformers": "pip install transformers",
    "tensorrt": "pip install tensorrt on a desktop GPU; JetPack ships it on Jetson",
    "cuda": "pip install 'vitc[trt]'",
    "pycuda": "pip install 'vitc[trt-pycuda]'",
}


# The training side (torch, the models, export) needs Python >= 3.10; the runtime path (info, doctor,
# check, build, bench --engine) also runs on Python 3.8, the system Python of JetPack 5.
TRAINING_PYTHON = (3, 10)
RUNTIME_COMMANDS = "info, doctor, check, build, and bench, predict and eval on an engine"


def require_training_python(what: str) -> None:
    """One clear line instead of a TypeError deep in 3.10-only code when `what` runs on an older Python."""
    if sys.version_info[:2] < TRAINING_PYTHON:
        raise VitcError(
            f"{what} needs Python >= {'.'.join(map(str, TRAINING_PYTHON))} and PyTorch "
            f"(this is Python {platform.python_version()}); the runtime commands {RUNTIME_COMMANDS} run here"
        )


def require_training(what: str) -> None:
    """The training side's Python, then PyTorch: checked before any of its modules is imported."""
    require_training_python(what)
    if not has_module("torch"):
        raise VitcError(f"{what} needs PyTorch, which is not installed ({OPTIONAL['torch']})")
    # not imported here: the command line is checked first (seconds on a Jetson); a torch that is installed but
    # fails to import is said in one line where the command imports it (vitc.cli._errors.handle_errors)


def has_module(name: str) -> bool:
    """True when `name` can be imported, without importing it (a dotted name imports its parents)."""
    try:
        return importlib.util.find_spec(name) is not None
    except Exception:  # ImportError, ValueError, or whatever a broken parent package raises
        return False


_REDIRECTING = threading.RLock()  # import_optional's swaps of sys.stderr, one thread at a time


def import_optional(name: str) -> tuple[ModuleType | None, str | None]:
    """(module, None); (None, None) when its package is not installed; (None, why) when it is installed but
    its import fails: a Jetson's torch without libcusparseLt.so.0, or onnxruntime built against a newer
    numpy than apt's 1.17.4 ahead on PYTHONPATH. Any exception counts (those raise ImportError, others
    OSError or RuntimeError). What the import writes to stderr is kept for `why`: a pybind11 module raises a
    bare ImportError after printing numpy's "module compiled against API version 0xe ..." there."""
    if not has_module(name.split(".")[0]):
        return None, None
    said = io.StringIO()
    with _REDIRECTING:  # sys.stderr is global: two threads swapping it at once left it a StringIO for good
        try:
            with contextlib.redirect_stderr(said):
                module = importlib.import_module(name)
        except Exception as exc:
            return None, first_line(exc, said=said.getvalue())
    sys.stderr.write(said.getvalue())  # a working module's warnings are still shown
    return module, None


def broken_text(name: str, why: str) -> str:
    """How an installed package that cannot be imported is said, in every command and in `vitc doctor`."""
    return f"{name} is installed but cannot be imported: {why}"


def needed_but_broken(name: str, why: str) -> str:
    """The error of a command whose optional dependency `name` is installed but fails to import."""
    return f"this command needs {name!r}: {broken_text(name, why)}"


def lazy_import(name: str) -> ModuleType:
    """Import an optional dependency or raise a VitcError that says how to install it (or why it is broken)."""
    root = name.split(".")[0]
    if root == "torch":
        require_training_python("this command")
    module, broken = import_optional(name)
    if module is not None:
        return module
    if broken is not None:
        raise VitcError(needed_but_broken(root, broken))
    hint = OPTIONAL.get(root, f"pip install {root}")
    raise VitcError(f"this command needs {root!r}, which is not installed ({hint})")


def torch_before(major: int, minor: int) -> bool:
    """Whether the installed torch is older than `major.minor`: the gate of each workaround for a release."""
    torch = lazy_import("torch")
    return tuple(int(part) for part in torch.__version__.split(".")[:2]) < (major, minor)


def pyplot() -> ModuleType:
    """matplotlib.pyplot on the Agg backend: figures are written to files, never shown."""
    matplotlib = lazy_import("matplotlib")
    matplotlib.use("Agg")
    return lazy_import("matplotlib.pyplot")


class LazyModule(ModuleType):
    """A module proxy that imports the first of `names` on the first attribute access.

    Backends bind their optional dependency at module level with it (`trt = LazyModule("tensorrt")`)
    so that importing the backend costs nothing and tests can replace the attribute with a fake.
    """

    def __init__(self, *names: str) -> None:
        super().__init__(names[0])
        self._vitc_names = names
        self._vitc_module: ModuleType | None = None

    def _vitc_load(self) -> ModuleType:
        if self._vitc_module is None:
            error: VitcError | None = None
            for name in self._vitc_names:
                try:
                    self._vitc_module = lazy_import(name)
                    break
                except VitcError as exc:
                    error = error or exc
            else:
                assert error is not None
                raise error
        return self._vitc_module

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("_vitc_"):
            raise AttributeError(attr)
        return getattr(self._vitc_load(), attr)
