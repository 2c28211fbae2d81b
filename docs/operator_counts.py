"""The aten operators one eager training step dispatches, vitc beside timm: what bounds eager speed on a big GPU.

On issue 20's H200 at batch 128 the Ti models' eager steps ran at the ratios of their operator
counts (docs/benchmarks.md, "Operators per training step"): a step of a small model there waits on
the host launching kernels, not on the GPU running them, so an operator removed is time saved while
a FLOP saved is not. Operators that are views launch no kernel and are counted apart.

One step = forward under autocast, cross-entropy, backward, AdamW with `foreach` (CUDA's default);
with `--forward TARGET`, one inference forward instead, vitc's models compiled for TARGET.
On a CPU it runs vitc's GPU code paths (`--cpu-branches` for the CPU's own), so that the counts are
the GPU's without one. Only `vitc.models.create_model` is needed from vitc, so the same script counts an
older checkout: `PYTHONPATH=<checkout> python docs/operator_counts.py`. timm is optional (on the
lent GPU machine; here `pip download timm` unpacked onto PYTHONPATH: a stand-in replaces the
torchvision it imports for its data pipelines, which the models never call).

    python docs/operator_counts.py
    python docs/operator_counts.py --device cuda --amp bf16
    python docs/operator_counts.py --forward cuda --sizes tiny --amp off
"""

from __future__ import annotations

import argparse
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
from collections import Counter
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

NO_KERNEL = {"_unsafe_view"}  # not flagged a view, but one: it aliases its input
# (timm name or None, vitc name, vitc kwargs) per size; each size's first row is the DeiT its ratios divide by
ROWS = {
    "tiny": [
        ("deit_tiny_patch16_224", "deit_tiny", {}),
        ("convit_tiny", "convit_tiny", {}),
        (None, "convit_tiny", {"attn_impl": "fused_dense"}),
        (None, "convit_tiny", {"attn_impl": "reference"}),
    ],
    "small": [
        ("deit_small_patch16_224", "deit_small", {}),
        ("convit_small", "convit_small", {}),
        (None, "convit_small", {"attn_impl": "fused_dense"}),
        (None, "convit_small", {"attn_impl": "reference"}),
        (None, "spvit_s", {}),
        (None, "spvit_s", {"attn_impl": "reference"}),
        (None, "cvt_13", {}),
    ],
}


class OperatorCount(TorchDispatchMode):
    """The aten operators dispatched inside the `with`, by name, and how many were not views."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()
        self.kernels = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = func.overloadpacket.__name__
        self.counts[name] += 1
        self.kernels += not (func.is_view or name in NO_KERNEL)
        return func(*args, **(kwargs or {}))


def step_operators(model: torch.nn.Module, device: torch.device, amp: torch.dtype | None, img: int) -> OperatorCount:
    """One training step's operators, after a first step (optimiser state and caches made once)."""
    model = model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=True)
    x = torch.randn(2, 3, img, img, device=device)
    y = torch.randint(0, 10, (2,), device=device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            loss = F.cross_entropy(model(x).float(), y)
        loss.backward()
        optimizer.step()

    step()
    with OperatorCount() as count:
        step()
    return count


def forward_operators(model: torch.nn.Module, device: torch.device, amp: torch.dtype | None, img: int) -> OperatorCount:
    """One inference forward's operators (no_grad, eval), after a first call."""
    model = model.to(device).eval()
    x = torch.randn(2, 3, img, img, device=device)
    with torch.no_grad(), torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
        model(x)
        with OperatorCount() as count:
            model(x)
    return count


def compiled_variants(name: str, model: torch.nn.Module, target: str) -> list[tuple[str, torch.nn.Module]]:
    """vitc's model compiled for `target` (vitc.compile), a ConViT in each GPSA lowering."""
    from vitc.compile import compile_model
    from vitc.compile.static_gpsa import LOWERINGS
    from vitc.models.convit import GPSA

    if not any(isinstance(m, GPSA) for m in model.modules()):
        return [(f"compiled ({target})", compile_model(model, target=target)[0])]
    return [
        (f"compiled ({target}, {lowering})", compile_model(model, target=target, pass_options=options)[0])
        for lowering in LOWERINGS
        for options in [{"static_gpsa": {"lowering": lowering}}]
    ]


def use_gpu_branches() -> None:
    """vitc's code paths for devices other than CPUs, on the CPU (where this vitc has them)."""
    from vitc.models import layers

    for switch in ("WRITTEN_ATTENTION_ON", "FLUSH_SUBNORMALS_ON"):
        if hasattr(layers, switch):
            setattr(layers, switch, ())


class _Placeholder(type):
    """A class whose every attribute is another placeholder class (InterpolationMode.NEAREST, ...)."""

    def __getattr__(cls, attr: str) -> type:
        return _Placeholder(attr, (), {})


def _placeholder(attr: str) -> type:
    if attr.startswith("__"):  # __file__, __spec__, ...: absent, as inspect and importlib expect
        raise AttributeError(attr)
    return _Placeholder(attr, (), {})


class _TorchvisionStandIn(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """`torchvision` and its submodules as empty modules whose names are placeholders: enough for
    timm's imports; its models never call into torchvision."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name.split(".")[0] == "torchvision":
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec: Any) -> types.ModuleType:
        module = types.ModuleType(spec.name)
        module.__path__ = []
        module.__getattr__ = _placeholder  # type: ignore[method-assign]
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        pass


def import_timm() -> Any:
    """timm, or None where it is not installed; torchvision stood in for where it is missing or does not
    import (a build for another torch: its C++ operators fail to load)."""
    if importlib.util.find_spec("timm") is None:
        return None
    if not _torchvision_imports() and not any(isinstance(f, _TorchvisionStandIn) for f in sys.meta_path):
        for name in [m for m in sys.modules if m.split(".")[0] == "torchvision"]:  # what the failed import left
            del sys.modules[name]
        sys.meta_path.insert(0, _TorchvisionStandIn())
    import timm

    return timm


def _torchvision_imports() -> bool:
    if importlib.util.find_spec("torchvision") is None:
        return False
    try:
        import torchvision  # noqa: F401
    except Exception as exc:  # ImportError, or RuntimeError "operator torchvision::nms does not exist"
        print(f"torchvision does not import ({type(exc).__name__}: {str(exc)[:160]}): a stand-in is used", flush=True)
        return False
    return True


def table(opts: argparse.Namespace) -> str:
    from vitc.models import create_model

    device = torch.device(opts.device)
    amp = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[opts.amp]
    timm = import_timm()
    lines = [
        f"{opts.img}×{opts.img}, {device.type}{' (GPU branches)' if opts.gpu_branches else ''}, {opts.amp}, "
        f"torch {torch.__version__}",
        "",
        "| model | operators | not views | not views, timm DeiT = 1 |",
        "|---|---:|---:|---:|",
    ]
    for size in opts.sizes.split(","):
        base = None
        for peer, name, kwargs in ROWS[size]:
            for side in ("timm", "vitc") if peer else ("vitc",):
                if side == "timm" and timm is None:
                    continue
                torch.manual_seed(0)
                label = f"{side} {peer if side == 'timm' else name}" + "".join(f" {v}" for v in kwargs.values())
                if opts.forward and kwargs:  # a training formulation: compiling replaces it
                    continue
                try:
                    model = (
                        timm.create_model(peer, num_classes=10, img_size=opts.img)
                        if side == "timm"
                        else create_model(name, num_classes=10, img_size=opts.img, **kwargs)
                    )
                except Exception as exc:  # an older checkout without this formulation
                    lines.append(f"| {label} | — | — | ({exc}) |")
                    continue
                variants = [("", model)]
                if opts.forward and side == "vitc":
                    variants = compiled_variants(name, model, opts.forward)
                for suffix, variant in variants:
                    count = (forward_operators if opts.forward else step_operators)(variant, device, amp, opts.img)
                    base = base or (count.kernels if side == "timm" else None)
                    ratio = f"{base / count.kernels:.2f}" if base else "—"
                    total = sum(count.counts.values())
                    lines.append(f"| {f'{label} {suffix}'.strip()} | {total} | {count.kernels} | {ratio} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--amp", default="bf16", choices=("off", "bf16", "fp16"))
    ap.add_argument("--img", type=int, default=224)
    ap.add_argument("--sizes", default="tiny,small")
    ap.add_argument("--cpu-branches", dest="gpu_branches", action="store_false", help="vitc's CPU code paths")
    ap.add_argument("--forward", metavar="TARGET", help="one inference forward, vitc's models compiled for TARGET")
    opts = ap.parse_args(argv)
    opts.gpu_branches = opts.gpu_branches and opts.device == "cpu"
    if opts.gpu_branches:
        use_gpu_branches()
    print(table(opts))


if __name__ == "__main__":
    main()
