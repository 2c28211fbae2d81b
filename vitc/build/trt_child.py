"""A build step run in a fresh Python process, for TensorRT releases whose Python objects are never freed.

TensorRT 8.5's OnnxParser binding ties the parser and its network to each other (release/8.5
python/src/parsers/pyOnnx.cpp: `py::keep_alive<1, 2>` and `<2, 1>`; 8.6 dropped `<1, 2>`), and the network
keeps its builder (pyCore.cpp's create_network, `keep_alive<0, 1>`). pybind11 holds those references in
its own table, which Python's garbage collector does not see, so on 8.5 the builder, the network and the
weights the parser holds live until the process ends: through the drift check that follows the build (on
a Jetson's 4-8 GB shared by CPU and GPU) and through every later build of a Python loop. A child process
gives all of it back when it exits.

The child is started with `subprocess` (not multiprocessing, whose spawn re-runs a user's script without
an `if __name__ == "__main__"` guard) on the parent's sys.path; it reads the function and its arguments
pickled on stdin and writes the result, or the exception, pickled on a pipe of its own (stdout and stderr
stay the user's: TensorRT's log goes there as in-process).
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
from typing import Any, Callable, Tuple

from vitc.errors import VitcError

# Ctrl-C reaches the whole process group: the parent stops the child itself (terminate), so the child
# ignores it rather than print a traceback of its own.
BOOT = (
    "import pickle, signal, sys\n"
    "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
    "sys.path[:] = pickle.load(sys.stdin.buffer)\n"
    "from vitc.build.trt_child import serve\n"
    "serve(int(sys.argv[1]))\n"
)


def run_in_child(func: Callable[..., Any], args: Tuple[Any, ...], crashed: str) -> Any:
    """func(*args) in a new Python process: its return value, or its exception raised here (a VitcError as
    the same one line). A child that ends without a result (killed, out of memory, a crash in TensorRT) is
    `crashed` plus its exit code, one line. Ctrl-C (or SIGTERM, which vitc takes as Ctrl-C) stops it."""
    readable, writable = os.pipe()
    try:
        child = subprocess.Popen(
            [sys.executable, "-c", BOOT, str(writable)], stdin=subprocess.PIPE, pass_fds=(writable,)
        )
    except OSError as exc:
        os.close(readable)
        raise VitcError(f"{crashed}: could not start it ({exc.strerror or exc})") from exc
    finally:
        os.close(writable)
    try:
        with os.fdopen(readable, "rb") as source:
            assert child.stdin is not None
            try:
                pickle.dump(list(sys.path), child.stdin)
                pickle.dump((func, args), child.stdin)
                child.stdin.close()
            except BrokenPipeError:  # it ended before reading: its exit code says why
                pass
            data = source.read()
        code = child.wait()
    finally:
        if child.poll() is None:  # Ctrl-C or SIGTERM here
            child.terminate()
            child.wait()
    try:
        kind, value = pickle.loads(data)
    except Exception:  # nothing, or part of a result: it died before or while writing it
        raise VitcError(f"{crashed} ended without a result: exit code {code}{_signal_name(code)}") from None
    if kind == "raise":
        raise value
    return value


def serve(fd: int) -> None:
    """The child's side: run what stdin names, write ("return", value) or ("raise", exception) to `fd`."""
    import traceback

    func, args = pickle.load(sys.stdin.buffer)
    try:
        outcome: Tuple[str, Any] = ("return", func(*args))
    except Exception as exc:
        if not isinstance(exc, VitcError):  # a bug: its traceback where the user sees it, as in-process
            traceback.print_exc()
        outcome = ("raise", exc)
    try:
        data = pickle.dumps(outcome)
    except Exception as exc:  # an exception that does not pickle: its type and text
        data = pickle.dumps(("raise", RuntimeError(f"{type(outcome[1]).__name__}: {outcome[1]} ({exc})")))
    with os.fdopen(fd, "wb") as sink:
        sink.write(data)


def _signal_name(code: int) -> str:
    """' (SIGKILL: out of memory?)' for a child a signal ended; '' otherwise."""
    if code >= 0:
        return ""
    try:
        name = signal.Signals(-code).name
    except ValueError:
        return f" (signal {-code})"
    return f" ({name}: out of memory?)" if name == "SIGKILL" else f" ({name})"


__all__ = ["run_in_child"]
