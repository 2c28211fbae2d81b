"""`vitc check`: lint an ONNX file against what a TensorRT version's ONNX parser accepts."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Tuple

import typer
from typing_extensions import Annotated

from vitc.cli._console import console as plain_console

if TYPE_CHECKING:
    from vitc.export.trt_rules import Finding

SHOWN = 4  # folded name groups per problem before "+N more"


def fold_names(names: Sequence[str], limit: int = SHOWN) -> str:
    """Node names that differ only in indices (`blocks.3`, `MatMul_2`) as `first … last (n)`, in order."""
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(re.sub(r"(?<=[._])\d+", "#", name), []).append(name)
    parts = [g[0] if len(g) == 1 else f"{g[0]} … {g[-1]} ({len(g)})" for g in groups.values()]
    if len(parts) > limit:
        parts = [*parts[:limit], f"+{len(parts) - limit} more (--all lists them)"]
    return ", ".join(parts)


def group_findings(findings: Sequence[Finding]) -> list[tuple[str, str, list[str]]]:
    """(kind, problem, node names) per distinct problem, in the order problems first appear."""
    groups: dict[tuple[str, str], list[str]] = {}
    for finding in findings:
        groups.setdefault((finding.op_type, finding.problem), []).append(finding.node)
    return [(kind, problem, names) for (kind, problem), names in groups.items()]


def check(
    model: Annotated[Path, typer.Argument(help="ONNX file.")],
    trt: Annotated[
        Optional[str],
        typer.Option(
            "--trt",
            help="TensorRT version: 8.5, 8.6, 10 or 11, or a release such as 8.5.2.2 or 10.3. Default: the "
            "TensorRT installed here, else the target in the export's manifest beside the file, else 10.",
        ),
    ] = None,
    all_names: Annotated[bool, typer.Option("--all", help="List every node name instead of folding them.")] = False,
) -> None:
    """List ops, Q/DQ layouts and dynamic dims TensorRT would reject, grouped by kind; exit 1 if any (2: bad input)."""
    from vitc.artifacts.given import FILE, not_taken, path_kind
    from vitc.engines import SUFFIXES
    from vitc.errors import CheckFailed, VitcError
    from vitc.export.onnx_export import read_onnx
    from vitc.export.trt_rules import check_onnx, resolve

    if trt is not None:
        resolve(trt)  # an export target or the release a device reports (its parser's table): refuse others at once
    if path_kind(model) != FILE:
        raise not_taken(model, "an ONNX file", (".onnx",))
    if SUFFIXES.get(model.suffix.lower()) == "tensorrt":  # a plan's bytes could parse as some protobuf
        raise VitcError(
            f"{model}: {model.suffix} names a TensorRT plan and vitc check reads ONNX files: check the .onnx "
            f"it was built from (`vitc info {model}` describes a plan)"
        )
    trt, why = (trt, None) if trt is not None else default_target(model)
    proto = read_onnx(model)
    findings = check_onnx(proto, trt)
    console = plain_console()
    for kind, problem, names in group_findings(findings):
        count = f" ×{len(names)}" if len(names) > 1 else ""
        console.print(f"  {kind}{count}: {problem}", highlight=False, soft_wrap=True)
        console.print(f"      {', '.join(names) if all_names else fold_names(names)}", highlight=False, soft_wrap=True)
    if findings:
        raise CheckFailed(f"{model}: {len(findings)} problem(s) for TensorRT {trt}" + (f", {why}" if why else ""))
    nodes = f"{len(proto.graph.node)} nodes"
    console.print(f"{model}: OK for TensorRT {trt}" + (f", {why}" if why else "") + f" ({nodes})")


def default_target(model: Path) -> Tuple[str, str]:
    """(version, why) without --trt: the TensorRT installed here (read, not imported), which `vitc build`
    would use; else the target the export recorded beside the file; else 10. "OK for TensorRT 10" where 8.5
    is installed was followed by `vitc build` failing on the same file."""
    from vitc.artifacts import manifest_for
    from vitc.engines.tensorrt import OLDEST_RELEASE, installed_release, too_old, version_text
    from vitc.errors import VitcError
    from vitc.export.trt_rules import resolve

    release, unknown = installed_release(), ""
    if release is not None:
        version = ".".join(release.split(".")[:2])
        try:
            resolve(version)
            return version, "the one installed here"
        except VitcError:  # a release vitc has no parser table for, or one too old: said, the next source checked
            oldest = version_text(OLDEST_RELEASE)
            why = f"does not build for (it needs {oldest} or newer)" if too_old(release) else "has no parser table for"
            unknown = f"TensorRT {release} is installed here, which vitc {why}; "
    try:
        manifest = manifest_for(model)
    except VitcError:  # a file the manifest does not describe (edited since): its target says nothing of it
        manifest = None
    if manifest is not None and manifest.trt_target is not None:
        return manifest.trt_target, f"{unknown}the export's target in {manifest.path.name}"
    here = "" if unknown else "no TensorRT here, "
    return "10", f"{unknown}the default ({here}no export target: --trt names another)"
