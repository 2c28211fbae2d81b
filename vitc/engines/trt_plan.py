"""A TensorRT plan file: its header, read without TensorRT, and whether this machine's TensorRT and GPU run it.

`vitc info` summarises a plan from its header and sidecar (`plan_summary`); the runner
(`vitc.engines.trt_runner`) refuses a plan this machine cannot run before deserialising it
(`check_plan_compat`). What the installed TensorRT is and offers is `vitc.engines.tensorrt`.

Security: a plan is executable content (kernels and, with version-compatible engines, host code).
Load only plans you built or trust; vitc refuses files whose header is not a TensorRT plan, but it
cannot tell a malicious plan from a good one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from vitc.artifacts.sidecar import EngineSidecar, check_sidecar_matches, load_sidecar, sidecar_path
from vitc.engines.tensorrt import installed_release, parse_version, version_text
from vitc.errors import VitcError

PLAN_TAG = b"ftrt"  # bytes 0–3 of every serialised engine (0x74727466 little-endian)
PLAN_HEADER_BYTES = 28  # the TensorRT version sits in bytes 24–27 when the serialization word is 0
UNKNOWN_PLAN_VERSION = "unknown version (8.5 or older)"
# Version-compatible plans run on later releases of the major that built them; across majors only
# these (built, runtime) pairs are supported (support matrix 11.4.1: "TensorRT 10 version-compatible
# engines can run with a TensorRT 11 runtime, and TensorRT 8 version-compatible engines can run with
# a TensorRT 10 runtime. No other combination across major versions is supported").
CROSS_MAJOR_COMPATIBLE = ((8, 10), (10, 11))


@dataclass(frozen=True)
class PlanHeader:
    serialization: int
    # what bytes 24-27 read as when they can be a version; only plans of 8.6+ put one there (`built_with`)
    version: tuple[int, int, int, int] | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "tag": PLAN_TAG.decode(),
            "serialization": self.serialization,
            "tensorrt": UNKNOWN_PLAN_VERSION if self.version is None else version_text(self.version),
        }


def parse_plan_header(data: bytes, source: str = "plan") -> PlanHeader:
    """Read the tag and TensorRT version of a serialised engine without deserialising it.

    As trtexec's printPlanVersion (samples/common/sampleEngines.cpp): bytes 24–27 are the version
    only when the serialization word (bytes 4–7) is 0. Plans before 8.6 carry no version there, so a
    version below 8.6 read from those bytes is not one. An 8.5 plan also has 0 in bytes 4–7 (its
    serialization version is at byte 8) and other bytes at 24–27, which can read as "64.31": whether
    the version read here is one is decided with the sidecar and the installed release (`built_with`).
    """
    if len(data) < 4:
        raise VitcError(f"{source}: not a TensorRT plan (only {len(data)} bytes)")
    if data[:4] != PLAN_TAG:
        raise VitcError(f"{source}: not a TensorRT plan (header tag {data[:4]!r}, expected {PLAN_TAG!r})")
    if len(data) < PLAN_HEADER_BYTES:
        raise VitcError(f"{source}: truncated TensorRT plan ({len(data)} bytes, the header needs {PLAN_HEADER_BYTES})")
    serialization = int.from_bytes(data[4:8], "little")
    major, minor, patch, build = data[24], data[25], data[26], data[27]
    trusted = serialization == 0 and (major, minor) >= (8, 6)
    return PlanHeader(serialization, (major, minor, patch, build) if trusted else None)


def read_plan_header(path: str | os.PathLike[str]) -> PlanHeader:
    path = Path(path)
    if not path.is_file():
        raise VitcError(f"{path}: no such file")
    with open(path, "rb") as handle:
        return parse_plan_header(handle.read(PLAN_HEADER_BYTES), str(path))


def built_with(header: PlanHeader, sidecar: EngineSidecar | None = None, installed: str | None = None) -> PlanHeader:
    """The header with the version it can be trusted for: dropped when the sidecar names a release before 8.6
    or the installed TensorRT is 8.5, since those plans have other bytes where 8.6+ writes its version (an
    8.5 plan read as "built with 64.31" was refused on the machine that built it); TensorRT's own
    deserialisation then refuses a plan it cannot load."""
    if header.version is None:
        return header
    recorded = sidecar.tensorrt if sidecar is not None else None
    for release in (recorded, installed):
        try:
            older = bool(release) and parse_version(str(release))[:2] < (8, 6)
        except VitcError:  # a version that does not read as one says nothing about the header
            older = False
        if older:
            return replace(header, version=None)
    return header


def check_plan_compat(
    header: PlanHeader,
    installed: str,
    sidecar: EngineSidecar | None = None,
    gpu: dict[str, str] | None = None,
    source: str = "plan",
) -> list[str]:
    """Raise a one-line VitcError when this machine cannot run the plan; return softer warnings."""
    warnings: list[str] = []
    here = parse_version(installed)
    built: tuple[int, int, int, int] | None = built_with(header, sidecar, installed).version
    if built is None and sidecar is not None and sidecar.tensorrt:
        built = parse_version(sidecar.tensorrt)
    version_compatible = sidecar is not None and sidecar.version_compatible
    if built is None:
        warnings.append(f"{source}: TensorRT {UNKNOWN_PLAN_VERSION} and no sidecar to say which; it may not load")
    elif version_compatible:
        if here[:2] < built[:2]:
            raise VitcError(
                f"{source}: built with TensorRT {version_text(built)} (version-compatible), "
                f"this machine has the older {version_text(here)}; rebuild it here with `vitc build`"
            )
        if here[0] != built[0] and (built[0], here[0]) not in CROSS_MAJOR_COMPATIBLE:
            raise VitcError(
                f"{source}: built with TensorRT {version_text(built)} (version-compatible), which runs on later "
                f"{built[0]}.x releases{_cross_major_note(built[0])}, not on {version_text(here)}: "
                "rebuild it here with `vitc build`"
            )
    elif built[:3] != here[:3] or (built[3] and here[3] and built[3] != here[3]):
        unknown = (
            ""
            if sidecar is not None
            else f" (or, if built --version-compatible, on later ones: it has no sidecar, {sidecar_path(source).name}, "
            "to say so)"
        )
        raise VitcError(
            f"{source}: built with TensorRT {version_text(built)}, this machine has {version_text(here)}; "
            f"plans only run on the TensorRT that built them{unknown}: rebuild it here with `vitc build`"
        )
    if sidecar is not None and gpu and sidecar.gpu:
        want = sidecar.gpu
        level = sidecar.hardware_compat
        want_cc, have_cc = str(want.get("compute_capability")), str(gpu.get("compute_capability"))
        if level == "ampere+":
            if _cc(have_cc) < (8, 0):
                raise VitcError(
                    f"{source}: built for Ampere and newer GPUs; this GPU ({gpu.get('name')}) is sm_{have_cc}"
                )
        elif want_cc != have_cc:
            raise VitcError(
                f"{source}: built on {want.get('name')} (compute capability {want_cc}); this GPU is "
                f"{gpu.get('name')} ({have_cc}): rebuild it here with `vitc build`"
            )
        elif level == "none" and want.get("name") != gpu.get("name"):
            warnings.append(
                f"{source}: built on {want.get('name')}, running on {gpu.get('name')} (same compute capability)"
            )
    return warnings


def _cross_major_note(major: int) -> str:
    later = [str(to) for built, to in CROSS_MAJOR_COMPATIBLE if built == major]
    return f" and on {', '.join(later)}.x" if later else ""


def _cc(text: str) -> tuple[int, int]:
    try:
        major, minor = text.split(".")
        return int(major), int(minor)
    except ValueError:
        return (0, 0)


def plan_summary(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Header and sidecar of a plan, for `vitc info` (no TensorRT needed)."""
    header, sidecar = read_plan_header(path), load_sidecar(path)
    if sidecar is not None:
        check_sidecar_matches(path, sidecar, Path(path).read_bytes())
    header = built_with(header, sidecar, installed_release())
    if header.version is not None:
        built = version_text(header.version)
    else:  # 8.5 and older: only the sidecar knows
        built = (sidecar.tensorrt if sidecar is not None else None) or UNKNOWN_PLAN_VERSION
    return {
        "tensorrt": built,
        "header": header.to_dict(),
        "size_bytes": Path(path).stat().st_size,
        "tf32": _tf32(sidecar),
        "sidecar": None if sidecar is None else sidecar.to_record(),
    }


def _tf32(sidecar: EngineSidecar | None) -> str:
    """Whether the plan's FP32 layers may compute in TF32, in words: a sidecar from before vitc cleared
    TensorRT's default (on) records no choice, and such a plan was built with it on."""
    if sidecar is None:
        return "unknown (no sidecar)"
    allowed = sidecar.options.get("tf32")
    if allowed is None:
        return "allowed: built before vitc turned TensorRT's default off (rebuild for exact fp32 layers)"
    return "allowed (--tf32)" if allowed else "off"


__all__ = [
    "PlanHeader",
    "built_with",
    "check_plan_compat",
    "parse_plan_header",
    "plan_summary",
    "read_plan_header",
]
