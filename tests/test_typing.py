"""A type checker sees vitc's top-level API as written (the names `import vitc` resolves lazily were `Any`)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SNIPPET = """\
import vitc

reveal_type(vitc.create_model)
reveal_type(vitc.load_model)
reveal_type(vitc.predict)
reveal_type(vitc.preprocess)
vitc.create_model(42)
"""


@pytest.mark.slow
def test_mypy_sees_the_signatures_of_the_lazy_top_level_names(tmp_path: Path) -> None:
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is not installed")
    (tmp_path / "snippet.py").write_text(SNIPPET)
    (tmp_path / "mypy.ini").write_text("[mypy]\nfollow_imports = silent\n")  # vitc's own errors are not this test's
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", "mypy.ini", "--cache-dir", "cache", "snippet.py"],
        cwd=tmp_path,
        env={**os.environ, "MYPYPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    revealed = [line.split("Revealed type is ", 1)[1] for line in done.stdout.splitlines() if "Revealed type" in line]
    assert len(revealed) == 4, done.stdout + done.stderr
    assert revealed[0].startswith('"def (name: str, pretrained: bool =, **overrides: Any) -> torch.nn'), revealed
    assert revealed[1].startswith('"def (path: str | os.PathLike[str], model_name: str | None ='), revealed
    assert revealed[2].startswith('"def (model: torch.nn.modules.module.Module, images: Any, top_k: int ='), revealed
    assert revealed[3].endswith('-> torch._tensor.Tensor"'), revealed
    assert 'Argument 1 to "create_model" has incompatible type "int"; expected "str"' in done.stdout
