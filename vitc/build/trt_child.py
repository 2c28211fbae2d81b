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
pickled on stdin and writes the result, or the exception, pickled to a file the parent names (stdout and
stderr stay the user's: TensorRT's log goes there as in-process). A file, not an inherited pipe: Windows
passes no file descriptors (subprocess's pass_fds), and the plan is written once, streamed by pickle, and
read once after the child has exited, never held twice by both processes.
"""

from __future__ import annotations

import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
from typing import Any, Callable, Tuple

from vitc.errors import VitcError

# Ctrl-C reaches the whole process group: the parent stops the child itself (terminate), so the child
# ignores it rather than print a traceback of its own.
BOOT = (
    "import pickle, signal, sys\n"
    "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
    "sys.path[:] = pickle.load(sys.stdin.buffer)\n"
    "from vitc.build.trt_child import serve\n"
    "serve(sys.argv[1])\n"
)


def run_in_child(func: Callable[..., Any], args: Tuple[Any, ...], crashed: str, folder: str | None = None) -> Any:
    """func(*args) in a new Python process: its return value, or its exception raised here (a VitcError as
    the same one line). A child that ends without a result (killed, out of memory, a crash in TensorRT) is
    `crashed` plus its exit code, one line. Ctrl-C (or SIGTERM, which vitc takes as Ctrl-C) stops it. The
    result is written in `folder` (the plan's: not a tmpfs /tmp that holds it in memory), else the system's."""
    scratch = tempfile.mkdtemp(prefix=".vitc-build-", dir=folder)
    result = os.path.join(scratch, "result.pickle")
    try:
        try:
            child = subprocess.Popen([sys.executable, "-c", BOOT, result], stdin=subprocess.PIPE)
        except OSError as exc:
            raise VitcError(f"{crashed}: could not start it ({exc.strerror or exc})") from exc
        try:
            assert child.stdin is not None
            try:
                pickle.dump(list(sys.path), child.stdin)
                pickle.dump((func, args), child.stdin)
                child.stdin.close()
            except BrokenPipeError:  # it ended before reading: its exit code says why
                pass
            code = child.wait()
        finally:
            if child.poll() is None:  # Ctrl-C or SIGTERM here
                child.terminate()
                child.wait()
        try:
            with open(result, "rb") as source:
                kind, value = pickle.load(source)
        except Exception:  # nothing, or part of a result: it died before or while writing it
            raise VitcError(f"{crashed} ended without a result: exit code {code}{_signal_name(code)}") from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if kind == "raise":
        raise value
    return value


def serve(result: str) -> None:
    """The child's side: run what stdin names, write ("return", value) or ("raise", exception) to `result`."""
    import traceback

    func, args = pickle.load(sys.stdin.buffer)
    try:
        outcome: Tuple[str, Any] = ("return", func(*args))
    except Exception as exc:
        if not isinstance(exc, VitcError):  # a bug: its traceback where the user sees it, as in-process
            traceback.print_exc()
        outcome = ("raise", exc)
    try:
        with open(result, "wb") as sink:
            try:
                pickle.dump(outcome, sink, protocol=4)  # large bytes (the plan) are streamed, not copied first
            except (pickle.PicklingError, TypeError, AttributeError) as exc:  # an exception that does not pickle
                sink.seek(0)
                sink.truncate()
                pickle.dump(("raise", RuntimeError(f"{type(outcome[1]).__name__}: {outcome[1]} ({exc})")), sink)
    except OSError as exc:  # a full disk: the parent's line gives the exit code, this one the reason
        sys.stderr.write(f"vitc: the build's result could not be written to {result}: {exc.strerror or exc}\n")
        sys.exit(3)


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
