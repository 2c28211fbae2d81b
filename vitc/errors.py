"""The exceptions the CLI turns into a one-line message: exit code 2 for bad input, 1 for a failed check."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator


class VitcError(Exception):
    """A user-facing error: bad input, a missing file, an unsupported option.

    The message must be one line that says what is wrong and, where possible, what to do.
    Anything else that escapes is a bug in vitc and gets a traceback.
    """

    exit_code = 2
    every_process = False  # raised alike by every process of a multi-process run: printed once per machine
    said_elsewhere = False  # another process of this machine prints the same line: this one exits silently


class CheckFailed(VitcError):
    """The command ran on good input and its result failed a check: `vitc check` found problems, an export
    lost more top-1 than `--max-drop`, a compile changed the logits. Exit code 1, as ruff, pytest, diff
    and Polygraphy give for findings, so a script tells them from bad input (2)."""

    exit_code = 1


class CudaError(VitcError):
    """A CUDA call of vitc's runtime failed (`vitc.engines.cuda`, on cuda-python or pycuda); `out_of_memory` when
    for lack of memory, which `gpu_failure` words as it words PyTorch's out-of-memory error."""

    def __init__(self, message: str, out_of_memory: bool = False) -> None:
        super().__init__(message)
        self.out_of_memory = out_of_memory


def first_line(exc: BaseException, limit: int = 300, said: str = "") -> str:
    """The exception's first non-empty line, cut to `limit` characters: what a one-line error quotes of it.

    An exception without a message (a bare `AssertionError()` inside torch.onnx.export, a pybind11 module's
    `ImportError()`) gives the last non-empty line of `said` (what the code that raised it printed on stderr:
    numpy's "module compiled against API version ..." before that ImportError), else its type's name; never
    an IndexError from `str(exc).splitlines()[0]` in place of the error being reported.
    """
    lines = _lines(str(exc))
    if lines:
        return lines[0][:limit]
    lines = _lines(said)
    return lines[-1][:limit] if lines else type(exc).__name__


def joined_lines(exc: BaseException, limit: int = 300) -> str:
    """Every line of the exception's message on one line, cut to `limit`: for a message whose detail is below
    its first line (load_state_dict's "Error(s) in loading state_dict for X:" over its missing keys)."""
    return " ".join(_lines(str(exc)))[:limit] or type(exc).__name__


def named_first_line(exc: BaseException, limit: int = 300) -> str:
    """`Type: first line`, or the type alone for an exception without a message: a failure named where the
    type says as much as the text (a KeyError's message is only the key)."""
    lines = _lines(str(exc))
    return f"{type(exc).__name__}: {lines[0][:limit]}" if lines else type(exc).__name__


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def gpu_failure(exc: BaseException, doing: str, hint: str, kept: str = "") -> VitcError | None:
    """The one-line error for a CUDA failure raised `doing` something, or None for any other exception.

    Out of GPU memory (torch.cuda.OutOfMemoryError, a RuntimeError, or a CudaError of the TensorRT runner's
    cuda-python or pycuda calls) says what to try (`hint`); a CUDA error (a device lost, reset or taken away
    mid-run) names itself; both end with `kept` (what of the work survives). torch's are matched by name and
    message, so the numpy-only runtime path needs no torch for it.
    """
    text = first_line(exc)
    out_of_memory = isinstance(exc, CudaError) and exc.out_of_memory
    if out_of_memory or type(exc).__name__ == "OutOfMemoryError" or "CUDA out of memory" in text:
        return VitcError(f"out of GPU memory {doing}; try {hint}{kept}")
    if isinstance(exc, CudaError) or (
        isinstance(exc, RuntimeError) and ("CUDA error" in text or "CUDA-capable device" in text)
    ):
        return VitcError(f"the GPU failed {doing} ({text[:200]}); check it with nvidia-smi (lost or reset?){kept}")
    return None


ON_GPU_HINT = "freeing the GPU (other processes on it) or --device cpu"  # eval/predict out of GPU memory: what to try


@contextlib.contextmanager
def gpu_errors(doing: str, hint: str) -> Iterator[None]:
    """A CUDA failure in the block (out of memory, a GPU lost) as its one line (`gpu_failure`); anything else as
    it was: a command that runs a model on a GPU the user chose, beside whatever else fills it."""
    try:
        yield
    except RuntimeError as exc:
        failure = gpu_failure(exc, doing, hint)
        if failure is None:
            raise
        raise failure from exc


def no_cuda(option: str, torch: Any) -> VitcError:
    """`option` asked for CUDA where `torch` (the module) has none: a CPU-only build of PyTorch, the usual
    cause on a new GPU machine, needs another install; a CUDA build that finds no GPU, a look at the driver."""
    if torch.version.cuda is None:
        why = (
            f"this PyTorch ({torch.__version__}) is a CPU-only build: install a CUDA build for your driver "
            "(pytorch.org gives the pip command)"
        )
    else:
        why = (
            f"PyTorch {torch.__version__} (built for CUDA {torch.version.cuda}) finds no usable GPU: `nvidia-smi` "
            "lists the GPUs and the highest CUDA version the driver supports"
        )
    return VitcError(f"{option} was asked for, but {why}")


def unknown_model(name: str, names: list[str], listing: str = "`vitc models` lists them") -> VitcError:
    """The error for a model name that is not among `names` (the registered ones), suggesting close names,
    else where to see them all (`listing`)."""
    import difflib

    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; {listing}"
    return VitcError(f"unknown model {name!r}{hint}")


DEVICES = ("auto", "cpu", "cuda")  # what --device takes in train (run.device), eval, predict and bench


def unknown_device(choice: str, choices: tuple[str, ...], where: str = "--device") -> VitcError:
    """The error for a device that is not one of `choices`. A GPU's number (cuda:1, 1, 0,1: how
    Ultralytics and torch name one) is chosen here as every CUDA program lets one choose it, by
    CUDA_VISIBLE_DEVICES, so the message says how; "gpu" means cuda."""
    import re

    given = choice.strip().lower()
    numbers = re.fullmatch(r"(?:cuda|gpu)?:?\s*(\d+(?:\s*,\s*\d+)*)", given)
    if numbers:
        gpus = re.sub(r"\s", "", numbers.group(1))
        count = gpus.count(",") + 1
        more = f"; `vitc train --nproc {count}` trains on {count} GPUs" if count > 1 else ""
        which = "GPUs" if count > 1 else "the GPU"
        hint = f": choose {which} with CUDA_VISIBLE_DEVICES={gpus} before the command and --device cuda{more}"
    elif given in ("gpu", "cuda"):
        hint = ": --device cuda"
    else:
        hint = ""
    return VitcError(f"unknown device {choice!r} for {where} ({', '.join(choices)}){hint}")
