"""vitc.compile.CUDAGraphs on CPU: a stand-in for torch.cuda records what a real graph would replay.

What only a GPU shows (that torch.cuda.graph captures these models, that a replay is faster, that the
autocast cast cache is off in the capture) runs in docs/gpu_check.py's `inference` section.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import pytest
import torch
from torch import nn

from vitc.compile import CUDAGraphs, compile_model
from vitc.compile.cuda_graph import TorchCuda
from vitc.errors import VitcError

from .conftest import build, max_diff


class FakeGraph:
    def __init__(self, fn: Callable[[], torch.Tensor], out: torch.Tensor) -> None:
        self.fn, self.out, self.replays = fn, out, 0


class FakeCuda:
    """torch.cuda's part of CUDAGraphs on CPU: a replay reruns the captured function into the static output.
    `done` records on which current device (`on`) each side stream, capture and replay ran."""

    def __init__(self) -> None:
        self.side_streams = 0
        self.captures: list[FakeGraph] = []
        self.current: torch.device | None = None
        self.done: list[tuple[str, torch.device | None]] = []

    def check(self, x: torch.Tensor) -> None:
        pass

    @contextlib.contextmanager
    def on(self, device: torch.device) -> Iterator[None]:
        before, self.current = self.current, device
        try:
            yield
        finally:
            self.current = before

    @contextlib.contextmanager
    def side_stream(self) -> Iterator[None]:
        self.side_streams += 1
        self.done.append(("side stream", self.current))
        yield

    def capture(self, fn: Callable[[], torch.Tensor]) -> tuple[FakeGraph, torch.Tensor]:
        out = fn()
        graph = FakeGraph(fn, out)
        self.captures.append(graph)
        self.done.append(("capture", self.current))
        return graph, out

    def replay(self, graph: FakeGraph) -> None:
        graph.out.copy_(graph.fn())  # a graph writes into the memory it captured, nowhere else
        graph.replays += 1
        self.done.append(("replay", self.current))


class Counting(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 3)
        self.calls = 0
        self.cast_cache: list[bool] = []  # autocast's cast cache at each call

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.cast_cache.append(torch.is_autocast_cache_enabled())
        return self.lin(x)


def test_one_capture_per_shape_input_copied_in_output_cloned() -> None:
    model, cuda = Counting().eval(), FakeCuda()
    run = CUDAGraphs(model, warmup=2, cuda=cuda)
    a, b, c = torch.randn(2, 4), torch.randn(2, 4), torch.randn(5, 4)
    out_a = run(a)
    assert (cuda.side_streams, len(cuda.captures), model.calls) == (1, 1, 2 + 1 + 1)  # warm-up, capture, replay
    out_b = run(b)  # same shape: replayed, no new capture or warm-up
    assert (cuda.side_streams, len(cuda.captures), cuda.captures[0].replays) == (1, 1, 2)
    with torch.no_grad():
        assert torch.equal(out_b, model.lin(b)) and torch.equal(out_a, model.lin(a))  # a kept: outputs are clones
    out_c = run(c)  # a new batch size: its own warm-up and graph
    assert (cuda.side_streams, len(cuda.captures)) == (2, 2) and out_c.shape == (5, 3)
    assert run.shapes == [(2, 4), (5, 4)]
    out_a2 = run(a)
    assert torch.equal(out_a2, out_a) and cuda.captures[0].replays == 3 and len(cuda.captures) == 2
    assert out_a2.data_ptr() != cuda.captures[0].out.data_ptr()
    run.reset()
    run(a)
    assert len(cuda.captures) == 3 and run.shapes == [(2, 4)]


def test_a_compiled_model_replays_to_the_same_logits() -> None:
    """The compiled CvT (separate k/v convs, SDPA: the cuda target) and ConViT through the graph path."""
    for name in ("cvt_micro", "convit_micro"):
        compiled, _ = compile_model(build(name), target="cuda")
        run = CUDAGraphs(compiled, cuda=FakeCuda())
        x = torch.randn(3, 3, 32, 32)
        with torch.no_grad():
            expected = compiled(x)
        assert max_diff(run(x), expected) <= 1e-6 and max_diff(run(x * 1.0), expected) <= 1e-6


def test_autocast_is_inside_the_capture_without_its_cast_cache() -> None:
    """PyTorch: autocast in a graph capture needs cache_enabled=False (cached casts would be freed memory)."""
    model = Counting().eval()
    out = CUDAGraphs(model, autocast=torch.bfloat16, cuda=FakeCuda())(torch.randn(2, 4))
    assert out.dtype == torch.bfloat16 and model.cast_cache == [False] * 5  # 3 warm-up calls, capture, replay
    assert CUDAGraphs(Counting().eval(), cuda=FakeCuda())(torch.randn(2, 4)).dtype == torch.float32


def test_the_inputs_device_is_current_for_the_warm_up_the_capture_and_each_replay() -> None:
    """A model on a GPU other than the current one (cuda:1 while cuda:0 is current): its side stream, capture
    stream and replays are that GPU's (`TorchCuda.on`); they were the current device's."""
    cuda = FakeCuda()
    run = CUDAGraphs(Counting().eval(), cuda=cuda)
    x = torch.randn(2, 4)
    run(x)
    run(x)
    assert cuda.done == [("side stream", x.device), ("capture", x.device), ("replay", x.device), ("replay", x.device)]
    assert cuda.current is None  # given back after each call


def test_clear_errors() -> None:
    with pytest.raises(VitcError, match="give a CUDA tensor"):
        CUDAGraphs(Counting().eval())(torch.randn(2, 4))  # the real torch.cuda side: a CPU tensor is refused
    with pytest.raises(VitcError, match="warm-up"):
        CUDAGraphs(Counting(), warmup=0)
    assert isinstance(CUDAGraphs(Counting()).cuda, TorchCuda)
