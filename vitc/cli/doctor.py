"""`vitc doctor`: what this machine has for each command, and what is missing."""

from __future__ import annotations

import importlib.metadata
import platform
import sys
from typing import Any

import typer
from rich.table import Table
from rich.text import Text
from typing_extensions import Annotated

from vitc.errors import first_line


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def gather() -> dict[str, Any]:
    """Facts, importing only what is installed; a package that is installed but fails to import (a Jetson's
    torch without libcusparseLt, onnxruntime against an older numpy) is a row of its own, `broken: why`."""
    from vitc import _lazy
    from vitc._lazy import import_optional
    from vitc.engines.platform import jetson_info, nvidia_smi_gpus

    facts: dict[str, Any] = {"python": platform.python_version(), "platform": sys.platform + " " + platform.machine()}
    torch, broken = import_optional("torch")
    facts["torch"] = _broken(broken)
    if torch is not None:
        try:
            facts["torch"] = {
                "version": torch.__version__,
                "cuda": torch.version.cuda,
                "cuda_available": torch.cuda.is_available(),
            }
        except Exception as exc:  # a torch that imports but cannot query CUDA is still worth showing
            facts["torch"] = {"version": getattr(torch, "__version__", None), "error": first_line(exc)}
    if sys.version_info[:2] < _lazy.TRAINING_PYTHON:  # JetPack 5: installing (or fixing) torch would not help
        facts["torch"] = {**(facts["torch"] or {"version": None}), "unsupported": _old_python()}
    facts["onnx"] = _version("onnx")
    onnxruntime, broken = import_optional("onnxruntime")
    facts["onnxruntime"] = _broken(broken)
    if onnxruntime is not None:
        facts["onnxruntime"] = {"version": onnxruntime.__version__, "providers": onnxruntime.get_available_providers()}
    facts["tensorrt"] = _tensorrt()
    facts["cuda_binding"] = binding_facts()
    facts["gpus"] = [g.to_dict() for g in nvidia_smi_gpus()]
    facts["jetson"] = jetson_info()
    return facts


def _broken(why: str | None) -> dict[str, Any] | None:
    """The row of a package that is installed but cannot be imported (None: not installed, or it imported)."""
    return None if why is None else {"version": None, "broken": why}


def _tensorrt() -> dict[str, Any] | None:
    """TensorRT's version and DLA cores; `broken` for the stubs-only package or a missing libnvinfer, `unsupported`
    (why, and what to do) for a release vitc does not run."""
    from vitc._lazy import import_optional
    from vitc.engines.tensorrt import unsupported_release

    tensorrt, broken = import_optional("tensorrt")
    if tensorrt is None:
        return _broken(broken)
    if not hasattr(tensorrt, "__version__"):
        return _broken("only tensorrt-stubs is installed, not TensorRT")
    facts: dict[str, Any] = {"version": tensorrt.__version__}
    unsupported = unsupported_release(str(tensorrt.__version__))
    if unsupported:  # 8.4 and older: build and the plan runner refuse it
        facts["unsupported"] = unsupported
    try:
        facts["dla_cores"] = int(tensorrt.Builder(tensorrt.Logger()).num_DLA_cores)
    except Exception:  # no GPU or driver: the version is still worth showing
        facts["dla_cores"] = None
    return facts


def binding_facts() -> dict[str, Any]:
    """Which CUDA bindings `vitc bench --engine` would use, for which driver, and why the others were not."""
    from vitc.engines.cuda import choose_bindings

    facts = choose_bindings().to_dict()
    dist = {"cuda-python": ("cuda-bindings", "cuda-python"), "pycuda": ("pycuda",)}.get(facts["kind"] or "", ())
    facts["version"] = next((v for v in map(_version, dist) if v), None)
    return facts


def _binding_text(facts: dict[str, Any]) -> Text:
    """Plain text (the install hint's 'vitc[trt-cu11]' is no markup) with 'missing' in red."""
    if facts["kind"] is None:
        return Text.assemble(("missing", "red"), f" ({facts['reason']})")
    text = f"{facts['kind']} {facts['version'] or ''} ({facts['module']}): {facts['reason']}"
    return Text(text + "".join(f"; not chosen: {why}" for why in facts["rejected"]))


def requirements(facts: dict[str, Any], why_cut: int | None = None) -> list[tuple[str, str, bool, str, str]]:
    """(command, what it needs, present?, broken, unsupported) rows; `broken` names each package the command needs
    that is installed but fails to import, with why (as the component rows say it, or cut to share `why_cut`
    characters among them: the table), else ""; `unsupported` says which installed release vitc does not run
    (TensorRT before 8.5, and what to do; a Python older than the training side's, for the rows needing torch),
    else ""."""
    from vitc import _lazy

    training = _lazy.TRAINING_PYTHON
    py = f"Python >= {training[0]}.{training[1]}, "  # the training side; the runtime rows also run on 3.8
    torch_ok = bool(facts["torch"] and facts["torch"].get("version")) and not facts["torch"].get("unsupported")
    trt_ok = bool(facts["tensorrt"] and facts["tensorrt"].get("version")) and not facts["tensorrt"].get("unsupported")
    gpu_ok = bool(facts["gpus"]) or facts["jetson"] is not None
    cuda_ok = torch_ok and bool(facts["torch"].get("cuda_available"))
    ort_ok = bool(facts["onnxruntime"] and facts["onnxruntime"].get("version"))
    onnx_ok = facts["onnx"] is not None
    engine_ok = trt_ok and facts["cuda_binding"]["kind"] is not None and gpu_ok
    engine = "tensorrt, cuda-python or pycuda, an NVIDIA GPU"
    rows = [
        ("train / compile / eval ckpt", py + "torch", torch_ok, ("torch",)),
        (
            "export",
            py + "torch, onnx, onnxruntime",
            torch_ok and onnx_ok and ort_ok,
            ("torch", "onnxruntime"),
        ),
        ("check / info x.onnx", "onnx", onnx_ok, ("onnx",)),
        ("build", engine, engine_ok, ("tensorrt",)),
        ("bench / predict / eval x.onnx", "onnxruntime", ort_ok, ("onnxruntime",)),
        ("bench / predict / eval x.plan", engine, engine_ok, ("tensorrt",)),
        ("bench --model / --compare", py + "torch", torch_ok, ("torch",)),
        ("bench --device cuda", py + "torch with CUDA and a GPU", cuda_ok, ("torch",)),
    ]
    return [
        (
            command,
            needs,
            ok,
            "" if ok else _broken_needs(facts, names, why_cut),
            "" if ok else _unsupported(facts, names),
        )
        for command, needs, ok, names in rows
    ]


def _unsupported(facts: dict[str, Any], names: tuple[str, ...]) -> str:
    """`TensorRT 8.4.1.5 < 8.5 (upgrade JetPack)` when `names` holds tensorrt and the installed one is too old (the
    tensorrt component row has the whole line); `Python 3.8.18 < 3.10` when `names` holds torch and this
    Python is older than the training side's: installing torch (NVIDIA's JetPack 5 wheel is for 3.8) would not help."""
    from vitc.engines.tensorrt import OLDEST_RELEASE, upgrade_remedy, version_text

    torch = facts.get("torch")
    if "torch" in names and isinstance(torch, dict) and torch.get("unsupported"):  # gather's: the Python
        return str(torch["unsupported"])
    row = facts.get("tensorrt")
    if "tensorrt" not in names or not isinstance(row, dict) or not row.get("unsupported"):
        return ""
    return f"TensorRT {row['version']} < {version_text(OLDEST_RELEASE)} ({upgrade_remedy()})"


def _old_python() -> str:
    """`Python 3.8.18 < 3.10`: this Python is older than vitc's training side needs."""
    from vitc import _lazy

    return f"Python {platform.python_version()} < {'.'.join(map(str, _lazy.TRAINING_PYTHON))}"


def _broken_needs(facts: dict[str, Any], names: tuple[str, ...], why_cut: int | None = None) -> str:
    """`name (why)` of each of `names` whose row says broken (installed, fails to import), joined by "; ".
    `why_cut`: the characters of why that all of them share, each why cut to its part, so that every broken
    package is named (the whole line cut short named only the first of two when its why was long)."""
    rows = [(name, facts[name]) for name in names]
    broken = {name: str(row["broken"]) for name, row in rows if isinstance(row, dict) and row.get("broken")}
    if why_cut is not None:
        left, shares = why_cut, {}
        for done, name in enumerate(sorted(broken, key=lambda n: len(broken[n]))):  # a short why kept whole
            shares[name] = min(len(broken[name]), max(1, left // (len(broken) - done)))
            left -= shares[name]
        broken = {name: _cut(why, shares[name]) for name, why in broken.items()}
    return "; ".join(f"{name} ({why})" for name, why in broken.items())


def _cut(text: str, most: int) -> str:
    """`text`, or its first `most` - 1 characters and "…" where it is longer."""
    return text if len(text) <= most else text[: most - 1] + "…"


_SHORT = 120  # characters of the broken packages' whys in the command table (the component rows have them whole)
HINTED = ("onnx", "onnxruntime")  # component rows that name their install (vitc._lazy.OPTIONAL) when missing


def _needs_text(ok: bool, broken: str, unsupported: str = "") -> Text:
    """The command table's status: ready, unsupported (which release, what to do), missing, or broken: each package
    named, with its why."""
    if ok:
        return Text("ready", style="green")
    if unsupported:
        return Text.assemble(("unsupported", "red"), f": {unsupported}")
    if not broken:
        return Text("missing", style="red")
    return Text.assemble(("broken", "red"), f": {broken}")


def doctor(json_out: Annotated[bool, typer.Option("--json", help="Print the facts as JSON.")] = False) -> None:
    """Check Python, torch, ONNX Runtime, TensorRT, CUDA bindings, GPUs and Jetson/DLA for each command."""
    facts = gather()
    if json_out:
        import json

        typer.echo(
            json.dumps(
                {
                    "facts": facts,
                    "commands": [
                        dict(zip(("command", "needs", "ok", "broken", "unsupported"), r)) for r in requirements(facts)
                    ],
                },
                indent=2,
            )
        )
        return
    from vitc._lazy import OPTIONAL
    from vitc.cli._console import console as plain_console
    from vitc.engines.tensorrt import tensorrt_remedy

    console = plain_console()
    missing = Text("missing", style="red")
    table = Table(title="vitc doctor: this machine")
    table.add_column("component")
    table.add_column("status")
    for key, value in facts.items():
        if key == "cuda_binding":
            table.add_row(key, _binding_text(value))
            continue
        if value is None and key == "tensorrt":
            text: str | Text = Text.assemble(("missing", "red"), f" ({tensorrt_remedy()})")
        elif value is None and key in HINTED:  # what to install, as the tensorrt row says it
            text = Text.assemble(("missing", "red"), f" ({OPTIONAL[key]})")
        elif value in (None, [], {}):
            text = missing
        elif isinstance(value, dict) and value.get("unsupported"):  # first: fixing a broken one would not help
            text = Text.assemble(("unsupported", "red"), f": {value['unsupported']}")
        elif isinstance(value, dict) and value.get("broken"):
            text = Text.assemble(("broken", "red"), f": {value['broken']}")
        elif isinstance(value, dict):
            text = ", ".join(f"{k}: {v}" for k, v in value.items())
        elif isinstance(value, list):
            text = "; ".join(", ".join(f"{k}: {v}" for k, v in g.items() if v) for g in value)
        else:
            text = str(value)
        table.add_row(key, text)
    console.print(table)
    needs = Table(title="what each command needs")
    for column in ("command", "needs", "status"):
        needs.add_column(column)
    for command, what, ok, broken, unsupported in requirements(facts, why_cut=_SHORT):
        needs.add_row(command, what, _needs_text(ok, broken, unsupported))
    console.print(needs)
