"""The zoo table `vitc models` prints, read from a cache without importing torch or the models.

Counting parameters and MACs needs every model built (on the meta device) and run once under
FlopCounterMode, seconds for the zoo (docs/benchmarks.md), much of it importing torch. The table is a cache
keyed by a digest of the model sources alone: `vitc/models/zoo_stats.json` ships with the package
(tests/test_cli_models.py fails when it is stale) and serves a machine without torch, such as a
Jetson running only `vitc bench --engine`; a stale or missing one is recomputed once
(vitc.models._stats, which needs torch) and kept in the user cache (`$VITC_CACHE_DIR`, default
~/.cache/vitc). The torch version that counted is recorded beside the rows, not keyed: the counts
are the architecture's (torch 2.11 and 2.13 give identical tables). Regenerate the shipped table
with `python -m vitc._zoo`.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from vitc._io import write_json
from vitc._lazy import require_training
from vitc._model_sources import MODELS_DIR
from vitc.errors import VitcError

SHIPPED = MODELS_DIR / "zoo_stats.json"
NOT_ARCHITECTURE = {"_stats.py", "loading.py"}  # checkpoint plumbing: no effect on the counts


def sources_digest() -> str:
    """What the zoo's counts depend on: the model sources (read as bytes: no torch needed)."""
    digest = hashlib.sha256()
    for path in sorted(MODELS_DIR.glob("*.py")):
        if path.name not in NOT_ARCHITECTURE:
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def compute_table() -> dict[str, Any]:
    """The record the table files hold: every registered model counted (seconds: imports torch), the
    digest of what the counts depend on, and the torch that counted."""
    require_training("counting the zoo (the table shipped with vitc is for other model sources)")
    import torch

    from vitc.models._stats import zoo_rows

    return {"digest": sources_digest(), "torch": torch.__version__, "models": zoo_rows()}


def cache_file() -> Path:
    return Path(os.environ.get("VITC_CACHE_DIR") or Path.home() / ".cache" / "vitc") / "zoo_stats.json"


def _read(path: Path, digest: str) -> list[dict[str, Any]] | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("digest") != digest:
        return None
    return record.get("models")


def zoo_stats(pattern: str = "*") -> list[dict[str, Any]]:
    """Stats (name, family, params, gmacs, input_size) of the models matching `pattern`."""
    digest = sources_digest()
    rows = _read(SHIPPED, digest) or _read(cache_file(), digest)
    if rows is None:
        record = compute_table()
        rows = record["models"]
        with contextlib.suppress(VitcError):  # a read-only home only costs the next call the same seconds
            write_json(cache_file(), record)
    return [row for row in rows if fnmatch.fnmatch(row["name"], pattern)]


if __name__ == "__main__":  # python -m vitc._zoo: regenerate the table shipped with the package
    write_json(SHIPPED, compute_table())
    print(f"wrote {SHIPPED}")
