"""A type checker sees vitc's top-level API as written (the names `import vitc` resolves lazily were `Any`)."""

from __future__ import annotations

import pytest

from tests.mypy_run import MypyReport


@pytest.mark.slow
def test_mypy_sees_the_signatures_of_the_lazy_top_level_names(mypy_report: MypyReport) -> None:
    """tests/mypy_run.py's SNIPPET, a user's code: its reveal_type lines, then create_model(42) refused."""
    assert mypy_report.finished, mypy_report.output
    said = mypy_report.lines_of(mypy_report.snippet)
    revealed = [line.split("Revealed type is ", 1)[1] for line in said if "Revealed type" in line]
    assert len(revealed) == 4, mypy_report.output
    assert revealed[0].startswith('"def (name: str, pretrained: bool =, **overrides: Any) -> torch.nn'), revealed
    assert revealed[1].startswith('"def (path: str | os.PathLike[str], model_name: str | None ='), revealed
    assert revealed[2].startswith('"def (model: torch.nn.modules.module.Module, images: Any, top_k: int ='), revealed
    assert revealed[3].endswith('-> torch._tensor.Tensor"'), revealed
    errors = [line for line in said if ": error: " in line]
    assert len(errors) == 1, said
    assert 'Argument 1 to "create_model" has incompatible type "int"; expected "str"' in errors[0]
