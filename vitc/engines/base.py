"""The runner contract every backend implements, after Polygraphy's loader/runner split.

A runner is a context manager: `activate()` loads the artifact (an ONNX Runtime session, a
TensorRT engine, a PyTorch model), `infer(feed)` maps input names to numpy arrays and returns
output names to numpy arrays, `deactivate()` frees what `activate` took. Every `infer` sets
`inference_time` (seconds, end to end: host arrays in, host arrays out); runners that can time
the device alone also set `gpu_time` (seconds, GPU compute only, from CUDA events).

Nothing here imports an optional dependency; backends import theirs through `vitc._lazy`.
"""

from __future__ import annotations

import abc
import contextlib
import math
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import numpy as np

from vitc.errors import VitcError
from vitc.limits import MAX_IMG_SIZE


@dataclass(frozen=True)
class TensorMeta:
    """One input or output: name, shape (None for a dynamic dimension) and numpy dtype."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str = "float32"

    def concrete(self, batch: int) -> tuple[int, ...]:
        """The shape with the batch dimension set (and any other dynamic dimension → 1)."""
        dims = [batch if i == 0 else (1 if d is None else d) for i, d in enumerate(self.shape)]
        return tuple(dims)

    def accepts(self, shape: tuple[int, ...]) -> bool:
        """Same rank, and every static dimension equal."""
        return len(shape) == len(self.shape) and all(d is None or d == s for d, s in zip(self.shape, shape))

    @property
    def static_batch(self) -> int | None:
        return self.shape[0] if self.shape and self.shape[0] is not None else None


MAX_FEED_BYTES = 4 << 30
NUMERIC = ("float32", "float16", "float64", "int64", "int32", "int8", "uint8")


def _check_inputs(name: str, inputs: list[TensorMeta]) -> None:
    """A model vitc can feed: at least one numeric input, each sample within MAX_IMG_SIZE² pixels."""
    if not inputs:
        raise VitcError(f"{name}: the model has no inputs, so there is nothing to feed or measure")
    for meta in inputs:
        if meta.dtype not in NUMERIC:
            raise VitcError(f"{name}: input {meta.name!r} is of type {meta.dtype}, not numbers")
        sample = math.prod(d or 1 for d in meta.shape[1:])
        if sample > 16 * MAX_IMG_SIZE**2:
            shape = tuple("?" if d is None else d for d in meta.shape)
            raise VitcError(f"{name}: input {meta.name!r} of shape {shape} is larger than any image vitc feeds")


def check_feed_dtype(name: str, meta: TensorMeta, dtype: Any) -> None:
    """A float input takes any float array: float64 or float16 to float32, or float32 to an fp16-I/O engine's
    float16, are casts that keep the values. Integer or bool arrays are refused, as ONNX Runtime, PyTorch
    and Polygraphy refuse them: uint8 pixels cast to float would run unnormalised, wrong with no error."""
    want, got = np.dtype(meta.dtype), np.dtype(dtype)
    if got == want or (np.issubdtype(want, np.floating) and np.issubdtype(got, np.floating)):
        return
    if np.issubdtype(want, np.floating):
        raise VitcError(
            f"{name}: input {meta.name!r} takes normalised {want} pixels, got a {got} array: normalise them first "
            "(vitc.preprocess, or the manifest's mean and std)"
        )
    raise VitcError(f"{name}: input {meta.name!r} takes {want}, got a {got} array")


@dataclass
class RunnerInfo:
    """What a runner reports about itself for tables and JSON."""

    backend: str
    device: str = "cpu"
    precision: str = "fp32"
    detail: dict[str, Any] = field(default_factory=dict)


class BaseRunner(abc.ABC):
    """activate → infer* → deactivate, usable as `with Runner(...) as r: r.infer(feed)`."""

    backend: str = "base"

    def __init__(self, name: str | None = None) -> None:
        self.name = name or self.backend
        self.is_active = False
        self.inference_time: float | None = None  # seconds, end to end, of the last infer()
        self.total_inference_time = 0.0  # seconds of every infer() so far: a caller's share spent in the runner
        self.gpu_time: float | None = None  # seconds of GPU compute of the last infer(), when measurable
        self.warnings: list[str] = []  # what activate() found worth telling the user (bench prints them)

    # -- context manager -------------------------------------------------------------------
    def __enter__(self) -> BaseRunner:
        self.activate()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Deactivate; a failure of that is raised only when no other exception is on its way out, which it
        would replace (after a sticky CUDA error the cleanup fails too, and the inference's error is the cause)."""
        if exc is None:
            self.deactivate()
            return
        with contextlib.suppress(Exception):
            self.deactivate()

    # -- public contract -------------------------------------------------------------------
    def activate(self) -> None:
        if self.is_active:
            return
        try:
            self.activate_impl()
        except BaseException:
            # a failed activation stays inactive, as in Polygraphy, with what it had set up undone (torch's
            # process-wide thread count, a CUDA stream): deactivate_impl takes a half-made state
            with contextlib.suppress(Exception):  # the activation's own error is the one to report
                self.deactivate_impl()
            raise
        self.is_active = True
        try:
            _check_inputs(self.name, self.get_input_metadata())
        except VitcError:
            self.deactivate()
            raise

    def deactivate(self) -> None:
        if not self.is_active:
            return
        try:
            self.deactivate_impl()
        finally:
            self.is_active = False

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch. `feed` maps every input name to an array; returns every output."""
        if not self.is_active:
            raise VitcError(f"{self.name}: activate the runner (or use it in a `with` block) before infer()")
        inputs = self.get_input_metadata()
        if set(feed) != {m.name for m in inputs}:
            raise VitcError(
                f"{self.name}: inputs {sorted(feed)} given, the model takes {sorted(m.name for m in inputs)}"
            )
        for meta in inputs:  # a clear message instead of the backend's own (ORT's INVALID_ARGUMENT, TRT's log)
            if not meta.accepts(feed[meta.name].shape):
                shape = tuple("?" if d is None else d for d in meta.shape)
                raise VitcError(f"{self.name}: input {meta.name!r} takes shape {shape}, got {feed[meta.name].shape}")
            check_feed_dtype(self.name, meta, feed[meta.name].dtype)  # the backends then cast float to float only
        self.gpu_time = None
        start = time.perf_counter()
        outputs = self.infer_impl(feed)
        self.inference_time = time.perf_counter() - start
        self.total_inference_time += self.inference_time
        return outputs

    def make_feed(self, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
        """Random normal inputs of the right shape and dtype for a batch (for timing)."""
        rng = np.random.default_rng(seed)
        inputs = self.get_input_metadata()
        needed = sum(math.prod(m.concrete(batch)) * 8 for m in inputs)  # float64 draws, then the cast
        if needed > MAX_FEED_BYTES:
            size = f"{needed / 2**30:.1f} GB"
            raise VitcError(f"{self.name}: a batch of {batch} would take {size} of input; use a smaller -b")
        return {m.name: rng.standard_normal(m.concrete(batch)).astype(m.dtype) for m in inputs}

    def min_batch(self) -> int:
        """The smallest batch the model takes (a static batch, or 1). Valid after activate()."""
        batches = [m.static_batch for m in self.get_input_metadata() if m.static_batch is not None]
        return max(batches, default=1)

    def max_batch(self) -> int | None:
        """The largest batch the model takes (None: no limit known). Valid after activate()."""
        batches = [m.static_batch for m in self.get_input_metadata() if m.static_batch is not None]
        return min(batches) if batches else None

    def supports_batch(self, batch: int) -> bool:
        """False when an input has a static batch dimension or a profile that excludes `batch`."""
        return all(m.static_batch in (None, batch) for m in self.get_input_metadata())

    # -- what backends implement -------------------------------------------------------------
    @abc.abstractmethod
    def activate_impl(self) -> None: ...

    @abc.abstractmethod
    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def deactivate_impl(self) -> None:
        return None

    @abc.abstractmethod
    def get_input_metadata(self) -> list[TensorMeta]:
        """Valid after activate()."""

    @abc.abstractmethod
    def get_output_metadata(self) -> list[TensorMeta]:
        """Valid after activate()."""

    def info(self) -> RunnerInfo:
        return RunnerInfo(backend=self.backend)


def batch_step(runner: BaseRunner, batch: int) -> int:
    """The images an active runner takes per call when asked for `batch`: clamped into its batch range
    (a static batch, or a TensorRT profile's min..max)."""
    return max(runner.min_batch(), min(batch, runner.max_batch() or batch))


def chunk_of(runner: BaseRunner, at_least: int) -> int:
    """Images to prepare at once: `at_least`, rounded up to a whole number of the active runner's smallest
    batch, so no call is padded but the last (a chunk of 64 through a static batch of 128 would be run as
    one call of half padding)."""
    low = runner.min_batch()
    return -(-at_least // low) * low


def infer_in_batches(runner: BaseRunner, images: np.ndarray, batch: int = 32) -> np.ndarray:
    """The first output of an active runner for `images` (N, ...), `batch` at a time, clamped into the
    batch range the runner takes (batch_step). A last chunk below the minimum is padded with zeros and
    the padded rows dropped, so any count runs through any profile."""
    meta = runner.get_input_metadata()[0]
    output = runner.get_output_metadata()[0].name
    low = runner.min_batch()
    step = batch_step(runner, batch)
    check_feed_dtype(runner.name, meta, images.dtype)  # before the cast below hides uint8 pixels
    images = images.astype(meta.dtype)
    chunks = []
    for start in range(0, len(images), step):
        part = images[start : start + step]
        real = part.shape[0]
        if real < low:
            part = np.concatenate([part, np.zeros((low - real, *part.shape[1:]), dtype=part.dtype)])
        chunks.append(np.asarray(runner.infer({meta.name: part})[output], dtype=np.float32)[:real])
    return np.concatenate(chunks)
