"""ONNX Runtime runner: the best execution provider available, names and shapes from the model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from vitc._device import cpu_cores
from vitc._lazy import lazy_import
from vitc._ort import ort_session
from vitc.artifacts.precision import Precision, precision_in_name
from vitc.engines.base import BaseRunner, RunnerInfo, TensorMeta
from vitc.errors import VitcError, first_line

PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
}


def choose_providers(available: list[str], device: str = "auto") -> list[str]:
    """Providers in order of preference: TensorRT, CUDA, CPU ('cpu' → CPU only, 'cuda' → no TensorRT EP)."""
    if device not in ("auto", "cpu", "cuda", "tensorrt"):
        raise VitcError(f"unknown ONNX Runtime device {device!r} (auto, cpu, cuda, tensorrt)")
    wanted = {
        "auto": PREFERENCE,
        "cpu": ("CPUExecutionProvider",),
        "cuda": ("CUDAExecutionProvider", "CPUExecutionProvider"),
        "tensorrt": PREFERENCE,
    }[device]
    chosen = [p for p in wanted if p in available]
    if device in ("cuda", "tensorrt") and chosen[:1] == ["CPUExecutionProvider"]:
        raise VitcError(f"ONNX Runtime has no GPU provider here (available: {', '.join(available)})")
    return chosen or ["CPUExecutionProvider"]


def _dims(shape: list[Any]) -> tuple[int | None, ...]:
    return tuple(d if isinstance(d, int) and d > 0 else None for d in shape)


class OnnxRuntimeRunner(BaseRunner):
    backend = "onnxrt"

    def __init__(
        self,
        path: str | Path,
        *,
        device: str = "auto",
        threads: int | None = None,
        name: str | None = None,
        precision: Precision | None = None,
        cuda_graph: bool = False,
    ) -> None:
        """`precision`: the manifest's; default the one the file name carries (`model.fp16.onnx`), else unknown.

        `cuda_graph` is refused, never ignored: ONNX Runtime replays CUDA graphs only from onnxruntime-gpu's
        CUDA provider with every node on it and I/O bound to fixed device buffers (its "preview" feature),
        while `vitc[onnx]` installs the CPU build; a plan (`vitc build`) replays them in the TensorRT runner.
        """
        if cuda_graph:
            raise VitcError(
                f"--cuda-graph applies to TensorRT plans and to PyTorch runners with --device cuda, not to "
                f"ONNX Runtime ({path}): build a plan with `vitc build` to time it under CUDA graphs"
            )
        self.path = Path(path)
        super().__init__(name or self.path.name)
        self.precision = precision or precision_in_name(self.path)
        self.device = device
        self.threads = threads or cpu_cores()
        self.session: Any = None
        self.providers: list[str] = []
        self._inputs: list[TensorMeta] = []
        self._outputs: list[TensorMeta] = []

    def activate_impl(self) -> None:
        ort = lazy_import("onnxruntime")
        if not self.path.is_file():
            raise VitcError(f"{self.path}: no such file")
        providers = choose_providers(list(ort.get_available_providers()), self.device)
        # optimised as any deployment of the file runs it, on --threads (default: the cores this process may use)
        self.session = ort_session(self.path, providers, threads=self.threads, optimize=True, name=str(self.path))
        self.providers = list(self.session.get_providers())
        if self.providers[:1] == ["CPUExecutionProvider"] and self.precision == "int8" and _fp16_base(self.path):
            self.warnings.append(
                f"{self.name} runs what it does not quantize in FP16 (for GPUs), which ONNX Runtime's CPU "
                "provider runs slowly: for CPUs, export it with --high-precision-dtype fp32"
            )
        self._inputs = [
            TensorMeta(i.name, _dims(i.shape), ORT_TYPES.get(i.type, i.type)) for i in self.session.get_inputs()
        ]
        self._outputs = [
            TensorMeta(o.name, _dims(o.shape), ORT_TYPES.get(o.type, "float32")) for o in self.session.get_outputs()
        ]

    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        dtypes = {m.name: m.dtype for m in self._inputs}
        # float to float only: infer() refused integer pixels (check_feed_dtype)
        ready = {k: np.ascontiguousarray(v, dtype=dtypes[k]) for k, v in feed.items()}
        try:
            values = self.session.run(None, ready)
        except Exception as exc:  # onnxruntime's own Fail/RuntimeException types: the graph failed on this input
            raise VitcError(f"{self.path}: ONNX Runtime failed to run it ({first_line(exc)})") from exc
        return {m.name: np.asarray(v) for m, v in zip(self._outputs, values)}

    def deactivate_impl(self) -> None:
        self.session = None

    def get_input_metadata(self) -> list[TensorMeta]:
        return list(self._inputs)

    def get_output_metadata(self) -> list[TensorMeta]:
        return list(self._outputs)

    def info(self) -> RunnerInfo:
        provider = self.providers[0] if self.providers else "?"
        device = "cpu" if provider == "CPUExecutionProvider" else "cuda"
        return RunnerInfo(
            backend=self.backend,
            device=device,
            precision=self.precision or "?",  # never guessed from the I/O dtype: fp16 graphs can have fp32 I/O
            detail={"providers": self.providers, "threads": self.threads, "path": str(self.path)},
        )


def _fp16_base(path: Path) -> bool:
    """An int8 export whose unquantized part is FP16 (`vitc export --high-precision-dtype`), by the manifest beside
    it, read without hashing the file again (the warning it gives is advice; `model_card` checks the pair)."""
    from vitc.artifacts.manifest import load_manifest, manifest_name

    manifest = path.parent / manifest_name("int8")
    try:
        report = load_manifest(manifest).precision_report if manifest.is_file() else {}
    except VitcError:  # an unreadable manifest: nothing to say here
        return False
    return report.get("high_precision_dtype") == "fp16"
