"""`vitc models`: the cached zoo table equals counts of built models, a stale cache is recomputed, no torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vitc import _zoo
from vitc.cli.main import app

runner = CliRunner()


@pytest.fixture(autouse=True, scope="module")
def _user_cache(tmp_path_factory: pytest.TempPathFactory):
    """A stale shipped table is recomputed into this module's cache, never into the home folder."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VITC_CACHE_DIR", str(tmp_path_factory.mktemp("vitc-cache")))
        yield


@pytest.mark.parametrize("name", ["convit_micro", "cvt_micro", "deit_micro", "spvit_micro", "deit_tiny"])
def test_table_equals_counts_of_the_built_model(name: str) -> None:
    from vitc.models._stats import model_stats

    (row,) = _zoo.zoo_stats(name)
    built = model_stats(name)
    assert row["params"] == built["params"] and row["family"] == built["family"]
    assert row["gmacs"] == pytest.approx(built["gmacs"], rel=1e-12)
    assert tuple(row["input_size"]) == built["input_size"]


def test_stale_table_is_recomputed_once_then_cached(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
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
    rows = _zoo.zoo_stats()  # a fresh table, shipped or cached (computed here if both are stale)
    (tmp_path / "zoo_stats.json").write_text(json.dumps({"digest": _zoo.sources_digest(), "models": rows}))
    code = (
        "import sys; from typer.testing import CliRunner; from vitc.cli.main import app;"
        "r = CliRunner().invoke(app, ['models', 'cvt*']); print(r.output);"
        "assert r.exit_code == 0; assert 'torch' not in sys.modules, 'torch was imported'"
    )
    env = {**os.environ, "VITC_CACHE_DIR": str(tmp_path), "COLUMNS": "120"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "cvt_13" in done.stdout and "277,196,392" in done.stdout and "convit_tiny" not in done.stdout


def test_unknown_pattern_is_a_clear_error() -> None:
    result = runner.invoke(app, ["models", "convt_tiny"])
    assert result.exit_code == 2
    assert "did you mean convit_tiny" in result.output


def test_unknown_model_is_defined_once_in_errors() -> None:
    """Issue 23: `vitc train` imports it from vitc.errors; vitc._zoo no longer re-exports it."""
    import vitc.cli.train as train_cli
    from vitc import errors

    assert not hasattr(_zoo, "unknown_model") and train_cli.unknown_model is errors.unknown_model
