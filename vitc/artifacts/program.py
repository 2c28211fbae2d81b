"""vitc's record inside a `vitc compile --out` program (.pt2), read without torch.

`vitc.compile.program` saves it as the extra file PROGRAM_RECORD of the torch.export archive (a zip);
`vitc info` reads it back here with zipfile alone.
"""

from __future__ import annotations

import os
import zipfile
from typing import Any, Dict

from vitc._io import parse_json
from vitc.errors import VitcError

PROGRAM_RECORD = "vitc.json"  # torch.export stores it as <archive>/extra/<name> (torch 2.4: extra_files/<name>)
PROGRAM_RECORD_BYTES = 1 << 20  # vitc's record is a few kB


def read_program_record(path: str | os.PathLike[str]) -> Dict[str, Any]:
    """vitc's record of a .pt2 archive; a one-line VitcError for anything `vitc compile --out` did not write."""
    suffix, legacy = f"/extra/{PROGRAM_RECORD}", f"extra_files/{PROGRAM_RECORD}"
    try:
        with zipfile.ZipFile(path) as archive:
            entries = [e for e in archive.infolist() if e.filename.endswith(suffix) or e.filename == legacy]
            if not entries:
                raise VitcError(f"{path}: a .pt2 archive without vitc's record (not written by `vitc compile --out`)")
            if entries[0].file_size > PROGRAM_RECORD_BYTES:
                raise VitcError(f"{path}: vitc's record in this archive is {entries[0].file_size} bytes; not vitc's")
            text = archive.read(entries[0])
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as exc:
        raise VitcError(f"{path}: not a readable .pt2 archive ({exc})") from exc
    record = parse_json(text, f"{path}: vitc's record")
    if not isinstance(record, dict) or not isinstance(record.get("compile", {}), (dict, type(None))):
        raise VitcError(f"{path}: vitc's record in this archive is malformed")
    return record
