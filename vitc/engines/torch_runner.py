"""PyTorch runner: a zoo model or a vitc checkpoint, eager or vitc-compiled, optionally torch.compile,
and on CUDA optionally replayed from CUDA graphs (one per input shape: vitc.compile.CUDAGraphs).

As in Polygraphy, the runner takes a loader (a callable that builds the model) and calls it on every
activate(): loading never lives inside the runner, so a runner used in `with` twice serves the same
weights both times. This is the only runner that needs torch; it imports it on activate().
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from vitc._lazy import lazy_import
from vitc.engines import AUTOCAST
from vitc.engines.base import BaseRunner, RunnerInfo, TensorMeta
from vitc.errors import VitcError, no_cuda, unknown_device

ModelLoader = Callable[[], Any]  # () -> torch.nn.Module


def model_from_zoo(name: str, seed: int = 0, **args: Any) -> ModelLoader:
    """A loader for a zoo model with seeded random weights (the same weights at every call). The weights are
    drawn from a fork of torch's CPU generator: the caller's random stream is left as it was."""

    def load() -> Any:
        torch = lazy_import("torch")
        from vitc.models import create_model

        with torch.random.fork_rng(devices=[]):  # the model is built on the CPU: no CUDA stream is drawn from
            torch.default_generator.manual_seed(seed)  # not torch.manual_seed: that seeds every GPU's too
            return create_model(name, **args)

    load.label = name  # type: ignore[attr-defined]
    return load


def model_from_checkpoint(path: str | Path) -> ModelLoader:
    """A loader for a vitc checkpoint's model and weights."""

    def load() -> Any:
        from vitc.checkpoint import read_checkpoint

        return read_checkpoint(path)[0]

    load.label = Path(path).parent.name or Path(path).stem  # type: ignore[attr-defined]
    return load


class TorchRunner(BaseRunner):
    backend = "torch"

    def __init__(
        self,
        loader: ModelLoader,
        *,
        compiled: bool = False,
        torch_compile: bool = False,
        cuda_graph: bool = False,
        device: str = "cpu",
        autocast: str = "fp32",
        threads: int | None = None,
        name: str | None = None,
    ) -> None:
        if autocast not in AUTOCAST:
            raise VitcError(f"unknown autocast dtype {autocast!r} for PyTorch (fp32, fp16, bf16)")
        if device not in ("cpu", "cuda"):
            raise unknown_device(device, ("cpu", "cuda"))
        if cuda_graph and device != "cuda":
            raise VitcError(
                f"--cuda-graph replays GPU work: PyTorch runners need --device cuda (got --device {device})"
            )
        label = getattr(loader, "label", "model")
        kind = "compiled" if compiled else "eager"
        suffix = (" +torch.compile" if torch_compile else "") + (" +cuda-graph" if cuda_graph else "")
        super().__init__(name or f"torch {label} {kind}{suffix}")
        self.loader = loader
        self.compiled = compiled
        self.torch_compile = torch_compile
        self.cuda_graph = cuda_graph
        self.device = device
        self.autocast = autocast
        self.threads = threads  # torch's CPU threads while active (None: as torch has them)
        self._threads_before: int | None = None  # torch's count before activation, restored after
        self.module: Any = None
        self.compile_report: Any = None
        self.first_call_s: dict[int, float] = {}  # batch -> seconds of its first call (torch.compile, capture)
        self._graphs: Any = None
        self._events: Any = None
        self._torch: Any = None
        self._input = TensorMeta("input", (None, 3, 224, 224))
        self._output = TensorMeta("logits", (None, 1000))

    def activate_impl(self) -> None:
        torch = lazy_import("torch")
        self._torch = torch
        if self.device == "cuda" and not torch.cuda.is_available():
            raise no_cuda("--device cuda", torch)
        self._threads_before = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        model = self.loader()
        model.eval()
        cfg = getattr(model, "vitc_cfg", None)
        input_size = tuple(cfg.input_size) if cfg is not None else (3, 224, 224)
        classes = int(cfg.num_classes) if cfg is not None else None
        if self.compiled:
            try:
                compile_model = lazy_import("vitc.compile").compile_model
            except VitcError as exc:
                raise VitcError("the compiled path needs vitc.compile, which this vitc lacks") from exc
            model, self.compile_report = compile_model(model, input_size=input_size, target=self.device)
            model.eval()
        model = model.to(self.device)
        if self.torch_compile:
            model = torch.compile(model)
        self.module = model
        self.first_call_s = {}
        if self.cuda_graph:
            graphs = lazy_import("vitc.compile.cuda_graph").CUDAGraphs
            dtype = AUTOCAST[self.autocast]
            self._graphs = graphs(model, autocast=None if dtype is None else getattr(torch, dtype))
        if self.device == "cuda":
            self._events = (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
        self._input = TensorMeta("input", (None, *input_size))
        self._output = TensorMeta("logits", (None, classes))

    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        start = time.perf_counter()
        x = torch.from_numpy(np.ascontiguousarray(feed["input"], dtype=np.float32)).to(self.device)
        if self._events is not None:
            self._events[0].record()
        with torch.inference_mode():
            y = self._graphs(x) if self._graphs is not None else self._forward(x)
            if self._events is not None:
                self._events[1].record()
            out = y.float().cpu().numpy()  # .cpu() synchronises a CUDA stream
        if self._events is not None:
            self.gpu_time = self._events[0].elapsed_time(self._events[1]) / 1e3
        batch = int(x.shape[0])
        if batch not in self.first_call_s:  # torch.compile compiles and CUDA graphs are captured here
            self.first_call_s[batch] = time.perf_counter() - start
        return {"logits": out}

    def _forward(self, x: Any) -> Any:
        dtype = AUTOCAST[self.autocast]
        if dtype is None:
            return self.module(x)
        with self._torch.autocast(device_type=self.device, dtype=getattr(self._torch, dtype)):
            return self.module(x)

    def deactivate_impl(self) -> None:
        if self._threads_before is not None:  # torch's thread count is process-wide: the next runner gets its own
            self._torch.set_num_threads(self._threads_before)
            self._threads_before = None
        self.module = None
        self._graphs = None
        self._events = None
        if self._torch is not None and self.device == "cuda":
            self._torch.cuda.empty_cache()

    def get_input_metadata(self) -> list[TensorMeta]:
        return [self._input]

    def get_output_metadata(self) -> list[TensorMeta]:
        return [self._output]

    def info(self) -> RunnerInfo:
        detail: dict[str, Any] = {
            "compiled": self.compiled,
            "torch_compile": self.torch_compile,
            "cuda_graph": self.cuda_graph,
            "vitc_compile_s": None if self.compile_report is None else self.compile_report.seconds,
            "first_call_s": dict(self.first_call_s),
        }
        if self._torch is not None:
            detail["torch"] = self._torch.__version__
            detail["threads"] = self.threads or self._torch.get_num_threads()
            if self.device == "cuda":
                detail["gpu"] = self._torch.cuda.get_device_name()
        return RunnerInfo(backend=self.backend, device=self.device, precision=self.autocast, detail=detail)
