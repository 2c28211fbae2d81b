"""Facts about this machine for sidecars, `vitc doctor` and bench warnings (no optional imports).

GPUs come from `nvidia-smi` (absent on Jetson, where the GPU is integrated) or CUDA; Jetson facts
from /etc/nv_tegra_release (L4T), /proc/device-tree/model and `nvpmodel -q`.
"""

from __future__ import annotations

import platform
import re
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

TEGRA_RELEASE = Path("/etc/nv_tegra_release")
DEVICE_MODEL = Path("/proc/device-tree/model")
# L4T release → JetPack (NVIDIA's JetPack archive). Unknown releases are reported as L4T only.
L4T_TO_JETPACK = {
    "35.1": "5.0.2",
    "35.2": "5.1",
    "35.3": "5.1.1",
    "35.4": "5.1.2",
    "35.5": "5.1.3",
    "35.6": "5.1.4",
    "36.2": "6.0 DP",
    "36.3": "6.0",
    "36.4": "6.1/6.2",
    "38.2": "7.0",
}
# L4T major → the vitc extra with the cuda-python for its CUDA (pyproject.toml; docs/jetson.md's table):
# R35 is JetPack 5 (CUDA 11.4), R36 JetPack 6 (CUDA 12.2/12.6), R38 JetPack 7 (CUDA 13).
L4T_CUDA_EXTRA = {"35": ("trt-cu11", "CUDA 11.4"), "36": ("trt-cu12", "CUDA 12"), "38": ("trt-cu13", "CUDA 13")}


@dataclass(frozen=True)
class GpuInfo:
    name: str
    compute_capability: str | None = None
    memory_mb: int | None = None
    driver: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def cpu_model() -> str:
    """The CPU's model name, as lscpu shows it (Linux's /proc/cpuinfo), else what Python knows: results on
    these machines differ by CPU (AMX, AVX512-BF16), and platform.processor() is only "x86_64" on Linux."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _run(cmd: list[str], timeout: float = 10.0) -> str | None:
    if shutil.which(cmd[0]) is None:
        return None
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def parse_nvidia_smi(text: str) -> list[GpuInfo]:
    """Rows of `nvidia-smi --query-gpu=name,compute_cap,memory.total,driver_version --format=csv,noheader,nounits`."""
    gpus = []
    for line in text.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 4 or not parts[0]:
            continue
        memory = int(float(parts[2])) if re.fullmatch(r"[\d.]+", parts[2]) else None
        gpus.append(GpuInfo(parts[0], compute_capability=parts[1] or None, memory_mb=memory, driver=parts[3] or None))
    return gpus


def nvidia_smi_gpus() -> list[GpuInfo]:
    out = _run(
        [
            "nvidia-smi",
            "--query-gpu=name,compute_cap,memory.total,driver_version",
            "--format=csv,noheader,nounits",
        ]
    )
    return parse_nvidia_smi(out) if out else []


def parse_tegra_release(text: str) -> dict[str, str] | None:
    """'# R35 (release), REVISION: 3.1, GCID: ...' → {"l4t": "35.3.1", "jetpack": "5.1.1"}."""
    match = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    if not match:
        return None
    major, revision = match.group(1), match.group(2)
    l4t = f"{major}.{revision}"
    minor = revision.split(".")[0]
    jetpack = L4T_TO_JETPACK.get(f"{major}.{minor}")
    return {"l4t": l4t, "jetpack": jetpack or "unknown"}


def jetson_info() -> dict[str, str] | None:
    """{"model", "l4t", "jetpack"} on a Jetson, None elsewhere."""
    if not TEGRA_RELEASE.is_file():
        return None
    try:
        info = parse_tegra_release(TEGRA_RELEASE.read_text(errors="replace"))
    except OSError:
        return None
    if info is None:
        return None
    try:
        info["model"] = DEVICE_MODEL.read_text(errors="replace").strip("\x00\n ")
    except OSError:
        info["model"] = "Jetson (unknown model)"
    return info


def jetson_cuda_remedy(info: dict[str, str] | None) -> str | None:
    """On a Jetson whose L4T vitc knows, the one install that brings CUDA bindings for its CUDA; else None."""
    if info is None:
        return None
    known = L4T_CUDA_EXTRA.get(info.get("l4t", "").split(".")[0])
    if known is None:
        return None
    extra, cuda = known
    return f"pip install 'vitc[{extra}]', the bindings for JetPack {info.get('jetpack', '?')}'s {cuda}"


def venv_without_system_site_packages() -> bool:
    """True in a venv created without --system-site-packages (pyvenv.cfg), which cannot see the packages
    JetPack installs for the system Python: TensorRT's python3-libnvinfer in /usr/lib/python3*/dist-packages."""
    if sys.prefix == sys.base_prefix:
        return False
    try:
        text = (Path(sys.prefix) / "pyvenv.cfg").read_text(errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key.strip().lower() == "include-system-site-packages":
            return value.strip().lower() != "true"
    return False


def parse_nvpmodel(text: str) -> str | None:
    """`nvpmodel -q` prints 'NV Power Mode: MAXN' then the mode number."""
    match = re.search(r"NV Power Mode:\s*(\S+)", text)
    return match.group(1) if match else None


def jetson_power_warnings() -> tuple[dict[str, Any], list[str]]:
    """Power mode and GPU clock state on a Jetson, plus warnings when figures would not be stable."""
    facts: dict[str, Any] = {}
    warnings: list[str] = []
    out = _run(["nvpmodel", "-q"])
    mode = parse_nvpmodel(out) if out else None
    facts["power_mode"] = mode
    if mode is None:
        warnings.append("could not read the Jetson power mode (nvpmodel -q); record it with the figures")
    elif "MAXN" not in mode.upper():
        warnings.append(f"Jetson power mode is {mode}, not MAXN: figures are not comparable with MAXN ones")
    clocks = gpu_clock_range()
    facts["gpu_clock_hz"] = clocks
    if clocks is None:
        warnings.append(
            "could not read the GPU clock range; run `sudo jetson_clocks` to fix clocks before benchmarking"
        )
    elif clocks[0] != clocks[1]:
        warnings.append(
            f"GPU clocks are not fixed (min {clocks[0]} Hz, max {clocks[1]} Hz): "
            "run `sudo jetson_clocks` for stable figures"
        )
    return facts, warnings


def gpu_clock_range() -> tuple[int, int] | None:
    """(min_freq, max_freq) of the Jetson GPU devfreq node; jetson_clocks makes them equal."""
    for node in sorted(Path("/sys/class/devfreq").glob("*")):
        name = node.name
        if not any(key in name for key in ("gpu", "gv11b", "ga10b", "gb10b")):
            continue
        try:
            return int((node / "min_freq").read_text()), int((node / "max_freq").read_text())
        except (OSError, ValueError):
            continue
    return None
