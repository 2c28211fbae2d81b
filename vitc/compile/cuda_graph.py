"""Inference through CUDA graphs: one `torch.cuda.CUDAGraph` per input shape, replayed on every call.

    from vitc.compile import CUDAGraphs, compile_model
    model = compile_model(model, target="cuda")[0].cuda()
    run = CUDAGraphs(model, autocast=torch.float16)
    logits = run(x)            # the first call at a shape warms up and captures; later calls replay

At small batches a vision transformer on a fast GPU is bound by kernel launches (a few µs of CPU
each, hundreds per forward); a replay launches the whole forward at once. This follows the "CUDA
Graphs" section of PyTorch's CUDA semantics notes: warm-up calls on a side stream, capture into a
static output from a static input buffer, then per call copy the input in, replay, and clone the
output (the next replay overwrites the static one). It is what `vitc bench --cuda-graph` runs for
PyTorch (as trtexec's --useCudaGraph does for TensorRT). Shapes must be static: every new
(shape, dtype) is captured once and kept, each graph with its own memory pool. The model must not
change (weights, device, mode) after a capture; call `reset()` if it does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from vitc.errors import VitcError

__all__ = ["CUDAGraphs"]

Key = tuple[tuple[int, ...], torch.dtype, torch.device]


class TorchCuda:
    """The CUDA side of CUDAGraphs (tests pass a CPU stand-in with the same five methods)."""

    def check(self, x: torch.Tensor) -> None:
        if x.device.type != "cuda":
            raise VitcError(f"CUDA graphs replay GPU work: give a CUDA tensor (x.cuda()), got one on {x.device}")

    def on(self, device: torch.device) -> contextlib.AbstractContextManager[Any]:
        """`device` current for the streams, the capture and the replay: a model on cuda:1 while cuda:0 is
        current warmed up on cuda:1's default stream, and torch.cuda.graph's shared capture stream is made on
        whichever device was current at the first capture of the process."""
        return torch.cuda.device(device)

    @contextlib.contextmanager
    def side_stream(self) -> Iterator[None]:
        """Warm-up on a side stream, as PyTorch requires before a capture (lazy init, cuDNN/cuBLAS handles)."""
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            yield
        torch.cuda.current_stream().wait_stream(stream)

    def capture(self, fn: Callable[[], torch.Tensor]) -> tuple[Any, torch.Tensor]:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=torch.cuda.Stream()):  # on the current device (`on`)
            out = fn()
        return graph, out

    def replay(self, graph: Any) -> None:
        graph.replay()


@dataclass
class _Captured:
    graph: Any
    static_in: torch.Tensor
    static_out: torch.Tensor


class CUDAGraphs:
    """`model(x)` for inference, replayed from one CUDA graph per input (shape, dtype, device).

    `autocast` (torch.float16 / torch.bfloat16 / None) is applied inside the capture with its cast cache
    off, as PyTorch requires for graphs. Every call runs under `torch.inference_mode()`.
    """

    def __init__(
        self, model: Callable[[torch.Tensor], torch.Tensor], autocast: torch.dtype | None = None, warmup: int = 3,
        cuda: TorchCuda | None = None,
    ) -> None:  # fmt: skip
        if warmup < 1:
            raise VitcError(f"CUDA graphs need at least one warm-up call before the capture, got warmup={warmup}")
        self.model = model
        self.autocast = autocast
        self.warmup = warmup
        self.cuda = cuda or TorchCuda()
        self._graphs: dict[Key, _Captured] = {}

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        """The input shapes captured so far, in capture order."""
        return [key[0] for key in self._graphs]

    def reset(self) -> None:
        """Drop every graph (and its memory): the next call at each shape captures again."""
        self._graphs.clear()

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.autocast is None:
            return self.model(x)
        with torch.autocast(x.device.type, dtype=self.autocast, cache_enabled=False):
            return self.model(x)

    def _capture(self, x: torch.Tensor) -> _Captured:
        static_in = x.clone()
        with self.cuda.side_stream():
            for _ in range(self.warmup):
                self._forward(static_in)
        graph, static_out = self.cuda.capture(lambda: self._forward(static_in))
        return _Captured(graph, static_in, static_out)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.cuda.check(x)
        with torch.inference_mode(), self.cuda.on(x.device):
            key = (tuple(x.shape), x.dtype, x.device)
            captured = self._graphs.get(key)
            if captured is None:
                captured = self._graphs[key] = self._capture(x)
            else:
                captured.static_in.copy_(x)
            self.cuda.replay(captured.graph)
            return captured.static_out.clone()
