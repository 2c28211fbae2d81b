"""PyTorch runner: a zoo model or a vitc checkpoint, eager or vitc-compiled, optionally torch.compile.

This is the only runner that needs torch; it imports it on activate(), never at module import.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from vitc._lazy import lazy_import
from vitc.engines.base import BaseRunner, RunnerInfo, TensorMeta
from vitc.errors import VitcError

AUTOCAST = {"fp32": None, "fp16": "float16", "bf16": "bfloat16"}


class TorchRunner(BaseRunner):
    backend = "torch"

    def __init__(
        self,
        model: str | None = None,
        *,
        ckpt: str | Path | None = None,
        compiled: bool = False,
        torch_compile: bool = False,
        device: str = "cpu",
        precision: str = "fp32",
        threads: int | None = None,
        name: str | None = None,
        module: Any = None,
    ) -> None:
        if model is None and ckpt is None and module is None:
            raise VitcError("the PyTorch runner needs --model NAME or --ckpt PATH")
        if precision not in AUTOCAST:
            raise VitcError(f"unknown precision {precision!r} for PyTorch (fp32, fp16, bf16)")
        if device not in ("cpu", "cuda"):
            raise VitcError(f"unknown device {device!r} (cpu, cuda)")
        label = model or (Path(ckpt).parent.name if ckpt else "module")
        kind = "compiled" if compiled else "eager"
        super().__init__(name or f"torch {label} {kind}" + (" +torch.compile" if torch_compile else ""))
        self.model_name = model
        self.ckpt = Path(ckpt) if ckpt is not None else None
        self.compiled = compiled
        self.torch_compile = torch_compile
        self.device = device
        self.precision = precision
        self.threads = threads
        self.module = module
        self.compile_report: Any = None
        self._torch: Any = None
        self._input = TensorMeta("input", (None, 3, 224, 224))
        self._output = TensorMeta("logits", (None, 1000))

    def activate_impl(self) -> None:
        torch = lazy_import("torch")
        self._torch = torch
        if self.device == "cuda" and not torch.cuda.is_available():
            raise VitcError("--device cuda: torch sees no CUDA GPU here (torch.cuda.is_available() is False)")
        if self.threads:
            torch.set_num_threads(self.threads)
        model = self.module if self.module is not None else self._build()
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
        self._input = TensorMeta("input", (None, *input_size))
        self._output = TensorMeta("logits", (None, classes))

    def _build(self) -> Any:
        if self.ckpt is not None:
            from vitc.checkpoint import load_model

            model, _ = load_model(self.ckpt)
            return model
        from vitc.models import create_model

        return create_model(str(self.model_name))

    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        x = torch.from_numpy(np.ascontiguousarray(feed["input"], dtype=np.float32)).to(self.device)
        dtype = AUTOCAST[self.precision]
        with torch.inference_mode():
            if dtype is None:
                y = self.module(x)
            else:
                with torch.autocast(device_type=self.device, dtype=getattr(torch, dtype)):
                    y = self.module(x)
            out = y.float().cpu().numpy()  # .cpu() synchronises a CUDA stream
        return {"logits": out}

    def deactivate_impl(self) -> None:
        self.module = None
        if self._torch is not None and self.device == "cuda":
            self._torch.cuda.empty_cache()

    def get_input_metadata(self) -> list[TensorMeta]:
        return [self._input]

    def get_output_metadata(self) -> list[TensorMeta]:
        return [self._output]

    def info(self) -> RunnerInfo:
        detail: dict[str, Any] = {"compiled": self.compiled, "torch_compile": self.torch_compile}
        if self._torch is not None:
            detail["torch"] = self._torch.__version__
            if self.device == "cuda":
                detail["gpu"] = self._torch.cuda.get_device_name()
        return RunnerInfo(backend=self.backend, device=self.device, precision=self.precision, detail=detail)
