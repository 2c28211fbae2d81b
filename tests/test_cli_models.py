"""`vitc models`: the cached zoo table equals counts of built models, a stale cache is recomputed, no torch.

Also run by `make test-runtime` on the Pythons of JetPack 5 and 6 without torch: the tests that build
models skip there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vitc import _zoo
from vitc._model_sources import registered_names
from vitc.cli.main import app

runner = CliRunner()


@pytest.fixture(autouse=True, scope="module")
def _user_cache(tmp_path_factory: pytest.TempPathFactory):
    """A stale shipped table is recomputed into this module's cache, never into the home folder."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VITC_CACHE_DIR", str(tmp_path_factory.mktemp("vitc-cache")))
        yield


def test_shipped_table_is_for_these_model_sources() -> None:
    """A Jetson without torch has only this table: regenerate it (`python -m vitc._zoo`) with any model edit."""
    shipped = json.loads(_zoo.SHIPPED.read_text())
    assert shipped["digest"] == _zoo.sources_digest(), "stale vitc/models/zoo_stats.json: python -m vitc._zoo"
    assert sorted(row["name"] for row in shipped["models"]) == sorted(registered_names())


@pytest.mark.parametrize("name", ["convit_micro", "cvt_micro", "deit_micro", "spvit_micro", "deit_tiny"])
def test_table_equals_counts_of_the_built_model(name: str) -> None:
    pytest.importorskip("torch")
    from vitc.models._stats import model_stats

    (row,) = _zoo.zoo_stats(name)
    built = model_stats(name)
    assert row["params"] == built["params"] and row["family"] == built["family"]
    assert row["gmacs"] == pytest.approx(built["gmacs"], rel=1e-12)
    assert tuple(row["input_size"]) == built["input_size"]


def test_stale_table_is_recomputed_once_then_cached(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from vitc.models import _stats

    stale = tmp_path / "shipped.json"
    stale.write_text(json.dumps({"digest": "old", "models": [{"name": "wrong"}]}))
    monkeypatch.setattr(_zoo, "SHIPPED", stale)
    monkeypatch.setenv("VITC_CACHE_DIR", str(tmp_path / "cache"))
    calls = []
    row = {"name": "convit_micro", "family": "convit", "params": 1, "gmacs": 0.5, "input_size": [3, 32, 32]}

    def compute() -> list:
        calls.append(1)
        return [row]

    monkeypatch.setattr(_stats, "zoo_rows", compute)
    assert _zoo.zoo_stats() == [row] and len(calls) == 1
    assert _zoo.zoo_stats("convit*") == [row] and len(calls) == 1  # second call: the user cache
    assert _zoo.zoo_stats("cvt*") == []
    assert json.loads((tmp_path / "cache" / "zoo_stats.json").read_text())["models"] == [row]


def test_digest_follows_the_model_sources(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "convit.py").write_text("a = 1\n")
    monkeypatch.setattr(_zoo, "MODELS_DIR", tmp_path)
    before = _zoo.sources_digest()
    (tmp_path / "convit.py").write_text("a = 2\n")
    assert _zoo.sources_digest() != before


def test_models_command_lists_and_filters_without_torch(tmp_path: Path) -> None:
    """The shipped table alone (an empty user cache), with torch unimportable as on a bare Jetson."""
    code = (
        "import sys; sys.modules['torch'] = None;"  # import torch now raises ImportError
        "from typer.testing import CliRunner; from vitc.cli.main import app;"
        "r = CliRunner().invoke(app, ['models', 'cvt*']); print(r.output); assert r.exit_code == 0;"
        "r = CliRunner().invoke(app, ['models', 'convt_tiny']); print('---', r.output); assert r.exit_code == 2"
    )
    env = {**os.environ, "VITC_CACHE_DIR": str(tmp_path), "COLUMNS": "120"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    table, error = done.stdout.split("---")
    assert "cvt_13" in table and "277,196,392" in table and "convit_tiny" not in table
    suggestion = "did you mean convit_tiny, convit_tiny_plus, convit_micro?"
    assert error.strip() == f"error: unknown model 'convt_tiny'; {suggestion}"


def test_stale_table_without_torch_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from vitc import _lazy

    stale = tmp_path / "shipped.json"
    stale.write_text(json.dumps({"digest": "old", "models": [{"name": "wrong"}]}))
    monkeypatch.setattr(_zoo, "SHIPPED", stale)
    monkeypatch.setenv("VITC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(_lazy, "has_module", lambda name: name != "torch")
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.output.count("\n") == 1 and "counting the zoo" in result.output  # on Python 3.8: its version first
    assert "needs PyTorch" in result.output or "needs Python >= 3.10 and PyTorch" in result.output


def test_unknown_pattern_is_a_clear_error() -> None:
    result = runner.invoke(app, ["models", "convt_tiny"])
    assert result.exit_code == 2
    assert "did you mean convit_tiny" in result.output
    nothing = runner.invoke(app, ["models", "resnet*"])  # it said "`vitc models` lists them", from vitc models
    count = len(registered_names())
    assert nothing.exit_code == 2 and f"`vitc models` without a pattern lists all {count}" in nothing.output


def test_unknown_model_is_defined_once_in_errors() -> None:
    """Issue 23: `vitc train` imports it from vitc.errors; vitc._zoo no longer re-exports it."""
    import vitc.cli.train as train_cli
    from vitc import errors

    assert not hasattr(_zoo, "unknown_model") and train_cli.unknown_model is errors.unknown_model


def test_the_docs_zoo_table_is_the_one_vitc_models_prints() -> None:
    """docs/models.md's parameters and first GMACs column against the shipped table (it had gone stale:
    11 of 19 GMACs were the reference form's, which the table's last column keeps)."""
    import re

    text = (Path(__file__).resolve().parents[1] / "docs" / "models.md").read_text()
    documented = {
        m.group(1): (int(m.group(2).replace(",", "")), float(m.group(3)))
        for m in re.finditer(r"^\| (\w+) \| \w+ \| ([\d,]+) \| ([\d.]+) \| [\d.]+ \| \S+ \|$", text, re.M)
    }
    shipped = json.loads(_zoo.SHIPPED.read_text())["models"]
    assert documented == {row["name"]: (row["params"], round(row["gmacs"], 3)) for row in shipped}
