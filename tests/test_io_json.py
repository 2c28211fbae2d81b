"""JSON as vitc writes it is JSON: a NaN or infinite figure is written null, never Python's bare NaN."""

from __future__ import annotations

import json
import math

import pytest

from vitc._io import json_line, json_text


def _strict(text: str) -> object:
    """As JSON.parse, jq and serde read it: NaN, Infinity and -Infinity are not JSON."""

    def refuse(constant: str) -> object:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("write", [json_text, json_line])
def test_nan_and_infinities_are_written_null(write) -> None:  # type: ignore[no-untyped-def]
    """Eval's report held "loss": NaN for NaN logits, and a diverged run's metrics.jsonl "train_loss": NaN."""
    record = {"loss": math.nan, "nan_images": 3, "rows": [{"lr": math.inf}, (-math.inf, 1.5)], "ok": True, "top1": 60.0}
    assert _strict(write(record)) == {
        "loss": None, "nan_images": 3, "rows": [{"lr": None}, [None, 1.5]], "ok": True, "top1": 60.0,
    }  # fmt: skip


def test_numpy_floats_are_made_finite_too() -> None:
    np = pytest.importorskip("numpy")
    assert _strict(json_text({"loss": np.float64("nan"), "top1": np.float64(12.5)})) == {"loss": None, "top1": 12.5}


def test_a_diverged_run_writes_metrics_jsonl_that_is_json(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """metrics.jsonl held `"train_loss": NaN` for a diverged epoch: each line is JSON now, null there."""
    from vitc.train.report import write_metrics

    write_metrics([{"epoch": 1, "train_loss": math.nan, "val_top1": 10.0}], tmp_path / "metrics.jsonl")
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [_strict(line) for line in lines] == [{"epoch": 1, "train_loss": None, "val_top1": 10.0}]
