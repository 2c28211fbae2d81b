"""Time the reference implementations (timm's ConViT-Ti and DeiT-Ti) against vitc's, in one process.

A measurement aid for docs/benchmarks.md, not part of vitc: timm is not a vitc dependency (it needs
torchvision, which has no CPU build on our machines). Run it with timm's wheel unpacked on
PYTHONPATH; `--shim-torchvision` satisfies timm's import-time torchvision references with dummies
(its model code never calls them). Before timing, the script loads timm's weights into vitc's
models and prints max |Δ logits|, so the comparison is between equal networks.

    pip download --no-deps timm==1.0.31 && unzip -q timm-1.0.31-py3-none-any.whl -d /tmp/timm
    PYTHONPATH=/tmp/timm python docs/reference_timing.py --shim-torchvision --batch 1,8 --iterations 36 --rounds 6
"""

from __future__ import annotations

import argparse
import sys

import torch

from vitc.bench import timing


def shim_torchvision() -> None:
    import enum
    import importlib.abc
    import importlib.machinery
    import types

    class Anything(type):
        def __getattr__(cls, name: str) -> type:
            return cls

    class Dummy(metaclass=Anything):
        def __init__(self, *args: object, **kwargs: object) -> None:
            pass

    class Module(types.ModuleType):
        def __getattr__(self, name: str) -> object:
            if name.startswith("__"):
                raise AttributeError(name)
            if name == "InterpolationMode":
                return enum.Enum(name, "NEAREST NEAREST_EXACT BILINEAR BICUBIC BOX HAMMING LANCZOS")
            return Dummy

    class Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        def find_spec(self, name: str, path: object, target: object = None) -> importlib.machinery.ModuleSpec | None:
            if name == "torchvision" or name.startswith("torchvision."):
                return importlib.machinery.ModuleSpec(name, self, is_package=True)
            return None

        def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
            module = Module(spec.name)
            module.__path__ = []
            return module

        def exec_module(self, module: types.ModuleType) -> None:
            return None

    sys.meta_path.insert(0, Finder())


def interleaved_medians(
    models: dict[str, torch.nn.Module], batch: int, warmup: int, iterations: int, rounds: int
) -> dict[str, float]:
    """Median ms per model over interleaved rounds (vitc.bench.timing.interleaved_medians)."""
    x = torch.randn(batch, 3, 224, 224)
    with torch.inference_mode():
        calls = {name: (lambda m=model: m(x)) for name, model in models.items()}
        return timing.interleaved_medians(calls, warmup, iterations, rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", default="1,8")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--shim-torchvision", action="store_true")
    args = parser.parse_args()
    if args.shim_torchvision:
        shim_torchvision()
    import timm

    from vitc.compile import compile_model
    from vitc.models import create_model

    torch.manual_seed(0)
    models: dict[str, torch.nn.Module] = {}
    for timm_name, vitc_name in (("convit_tiny", "convit_tiny"), ("deit_tiny_patch16_224", "deit_tiny")):
        reference = timm.create_model(timm_name).eval()
        ours = create_model(vitc_name).eval()
        ours.load_state_dict(reference.state_dict())
        with torch.no_grad():
            x = torch.randn(2, 3, 224, 224)
            delta = (ours(x) - reference(x)).abs().max()
            print(f"{vitc_name}: max |Δ logits| vitc vs timm {timm.__version__}: {delta:.2e}")
        models[f"timm {timm_name}"] = reference
        models[f"vitc {vitc_name} eager"] = ours
        models[f"vitc {vitc_name} compiled"] = compile_model(ours, target="cpu")[0]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    batches = [int(b) for b in args.batch.split(",")]
    print("| model | " + " | ".join(f"batch {b} ms" for b in batches) + " |")
    print("|---|" + "---:|" * len(batches))
    medians = {b: interleaved_medians(models, b, args.warmup, args.iterations, args.rounds) for b in batches}
    for name in models:
        print(f"| {name} | " + " | ".join(f"{medians[b][name]:.1f}" for b in batches) + " |")
    reference, compiled = "timm convit_tiny", "vitc convit_tiny compiled"
    for b in batches:
        speedup = medians[b][reference] / medians[b][compiled]
        print(f"batch {b}: compiled vitc convit_tiny is {speedup:.2f}x the reference")
    for b in batches:  # issue 13: compiled ConViT-Ti against the reference DeiT-Ti, whose GMACs it shares
        speed = medians[b]["timm deit_tiny_patch16_224"] / medians[b][compiled]
        print(f"batch {b}: compiled vitc convit_tiny runs at {speed:.2f}x the speed of timm deit_tiny")


if __name__ == "__main__":
    main()
