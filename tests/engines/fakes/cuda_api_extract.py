"""Extract the public names of the CUDA runtime bindings per cuda-python release, for the strict fakes.

Regenerate tests/engines/fakes/cuda_api.json (needs only pip and the network to PyPI):

    for w in cuda-python==12.6.0 cuda-bindings==12.9.0 cuda-bindings==13.0.0; do
        pip download --no-deps -d /tmp/cuda-wheels $w
    done
    pip download --no-deps --only-binary=:all: --platform manylinux2014_aarch64 --python-version 38 \
        -d /tmp/cuda-wheels cuda-python==11.8.2  # JetPack 5: the last release with Python 3.8 wheels
    python tests/engines/fakes/cuda_api_extract.py /tmp/cuda-wheels > tests/engines/fakes/cuda_api.json

Per wheel it records which runtime modules exist (`cuda.cudart`, `cuda.bindings.runtime`) and the
module-level functions and classes whose names start with `cuda`. cuda-python 12.6.0 ships compiled
Cython without the .pyx, so its names come from the source lines quoted in the generated C++.
"""

from __future__ import annotations

import json
import re
import sys
import zipfile
from pathlib import Path

WHEELS = {
    # key: (wheel name prefix, the source of the runtime module inside the wheel)
    "11.8": ("cuda_python-11.8.2-", "cuda/cudart.pyx"),
    "12.6": ("cuda_python-12.6.0-", "cuda/cudart.cpp"),
    "12.9": ("cuda_bindings-12.9.0-", "cuda/bindings/runtime.pyx"),
    "13.0": ("cuda_bindings-13.0.0-", "cuda/bindings/runtime.pyx"),
}


def names_from_pyx(text: str) -> list[str]:
    found = re.findall(r"^def (cuda\w+)\(", text, re.M) + re.findall(r"^(?:cdef )?class (cuda\w+)\b", text, re.M)
    return sorted(set(found))


def names_from_cpp(text: str) -> list[str]:
    """A Cython module compiled without its .pyx: the C++ quotes each source line as ` * <line>`."""
    found = re.findall(r"^ \* def (cuda\w+)\(", text, re.M)
    found += re.findall(r"^ \* (?:cdef )?class (cuda\w+)\b", text, re.M)
    return sorted(set(found))


def extract(folder: Path) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, (prefix, source) in WHEELS.items():
        wheel = next(folder.glob(prefix + "*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            files = set(zf.namelist())
            text = zf.read(source).decode("utf-8", errors="replace")
        modules = [m for m, f in (("cuda.cudart", "cuda/cudart"), ("cuda.bindings.runtime", "cuda/bindings/runtime"))
                   if any(p.startswith(f + ".") and p.endswith(".so") for p in files)]  # fmt: skip
        names = names_from_pyx(text) if source.endswith(".pyx") else names_from_cpp(text)
        out[key] = {"wheel": wheel.name, "modules": modules, "names": names}
    return out


if __name__ == "__main__":
    json.dump(extract(Path(sys.argv[1])), sys.stdout, indent=0)
    sys.stdout.write("\n")
