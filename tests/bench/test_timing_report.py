"""Latency statistics and the table/JSON/Markdown report."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from vitc.bench.report import BenchReport, BenchRow
from vitc.bench.timing import NOISY_SPREAD, LatencyStats, TimingPlan, collect, measure
from vitc.errors import VitcError


def test_stats_numbers():
    stats = LatencyStats.from_seconds([0.001, 0.002, 0.003, 0.004], batch=8)
    assert stats.min == pytest.approx(1.0) and stats.max == pytest.approx(4.0) and stats.mean == pytest.approx(2.5)
    assert stats.p50 == pytest.approx(2.5) and stats.p99 == pytest.approx(np.percentile([1, 2, 3, 4], 99))
    assert stats.cv == pytest.approx(np.std([1, 2, 3, 4], ddof=1) / 2.5)
    assert stats.spread == pytest.approx((3.25 - 1.75) / 2.5)  # (p75 - p25) / p50
    assert stats.throughput == pytest.approx(8 / 0.0025)
    skewed = LatencyStats.from_seconds([0.001, 0.001, 0.001, 0.010], batch=8)  # one stall from a noisy neighbour
    assert skewed.throughput == pytest.approx(8 / 0.001)  # throughput follows the median, not the mean
    with pytest.raises(VitcError):
        LatencyStats.from_seconds([], 1)
    with pytest.raises(VitcError):
        TimingPlan(iterations=0)


def test_collect_iterations_duration_and_named_times():
    calls = []

    def step():
        calls.append(1)
        return {"e2e": 0.001, "gpu": None}

    samples = collect(step, TimingPlan(warmup=2, iterations=7))
    assert len(calls) == 9 and len(samples["e2e"]) == 7 and "gpu" not in samples
    clock = iter(range(1000)).__next__
    samples = collect(step, TimingPlan(warmup=0, duration=10, min_iterations=3), clock=lambda: float(clock()))
    assert 10 <= len(samples["e2e"]) <= 12  # the fake clock ticks once per read
    stats = measure(lambda: {"e2e": 0.002, "gpu": 0.001}, TimingPlan(warmup=0, iterations=3), batch=2)
    assert stats["gpu"].p50 == pytest.approx(1.0) and stats["e2e"].throughput == pytest.approx(1000)


STALLED = [0.001] * 199 + [0.05]  # one call of 200 stalled 50 times over by a neighbour on a shared machine


def _two_modes(fast: int, slow: int) -> list[float]:
    return [0.001] * fast + [0.003] * slow  # the machine switching between two states: 1 ms and 3 ms per call


def test_the_spread_around_the_median_ignores_a_stall_and_sees_two_modes() -> None:
    """The CV (std / mean) of one stalled call in 200 was 278%, over the 100% that warned, though p50 had not
    moved; the spread (IQR / p50) is 0 there, and over NOISY_SPREAD for calls in two modes whichever holds p50."""
    stalled = LatencyStats.from_seconds(STALLED, 1)
    assert stalled.p50 == pytest.approx(1.0) and stalled.cv > 1.0  # the CV warned of this
    assert stalled.spread == 0.0
    for fast, slow, spread in ((100, 100, 1.0), (101, 99, 2.0), (99, 101, 2 / 3), (140, 60, 2.0)):
        two = LatencyStats.from_seconds(_two_modes(fast, slow), 1)
        assert two.spread == pytest.approx(spread) and two.spread > NOISY_SPREAD, (fast, slow)
        assert two.cv < 1.0  # the CV did not warn of this (50-57%)
    assert LatencyStats.from_seconds(_two_modes(160, 40), 1).spread == 0.0  # a fifth: stalls, not a mode


def test_a_ratio_is_warned_of_when_the_middle_of_either_side_spreads() -> None:
    """A ratio of p50s is warned of by each side's spread around the median, named in the warning."""

    def report(base: list[float], other: list[float]) -> BenchReport:
        rows = [BenchRow(name, "onnxrt", "cpu", "fp32", 1, LatencyStats.from_seconds(times, 1))
                for name, times in (("a", base), ("b", other))]  # fmt: skip
        return BenchReport(rows=rows)

    steady = [0.001] * 200
    assert report(steady, STALLED).noisy_ratios() == []
    assert report(STALLED, steady).noisy_ratios() == []
    warned = report(steady, _two_modes(100, 100))
    assert warned.noisy_ratios() == [
        "the ratio 0.50x of b at batch 1 is not to be trusted: b's spread around the median is 100%, over 50% "
        "(spread = (p75 - p25) / p50); time it again with more calls (-n, --duration) or --rounds, on a quieter "
        "machine"
    ]
    both = report(_two_modes(101, 99), _two_modes(99, 101)).noisy_ratios()
    assert len(both) == 1 and "b's spread around the median is 67% and a's spread around the median is 200%" in both[0]
    record = json.loads(warned.to_json())
    assert record["rows"][1]["e2e"]["spread"] == pytest.approx(1.0) and record["units"]["spread"] == "fraction"
    assert record["rows"][1]["e2e"]["cv"] == pytest.approx(warned.rows[1].e2e.cv)  # the CV stays in the JSON


def _report() -> BenchReport:
    fast = LatencyStats.from_seconds([0.001] * 3, 4)
    slow = LatencyStats.from_seconds([0.002] * 3, 4)
    return BenchReport(
        rows=[
            BenchRow("deit", "onnxrt", "cpu", "fp32", 4, slow),
            BenchRow(
                "convit", "tensorrt", "cuda", "fp16", 4, fast, gpu=fast, accuracy={"top1": 90.0, "delta_top1": -0.5}
            ),
        ],
        environment={"cores": 2},
        warnings=["clocks not fixed"],
    )


def test_report_formats():
    report = _report()
    assert report.ratio(report.rows[1]) == pytest.approx(2.0)
    record = json.loads(report.to_json())
    assert record["baseline"] == "deit" and record["rows"][1]["ratio_vs_first"] == pytest.approx(2.0)
    assert record["rows"][1]["gpu"]["p50"] == pytest.approx(1.0) and "e2e" in record["times"]
    md = report.to_markdown()
    assert "| convit | 4 |" in md and "2.00x" in md and "90.00 (-0.50)" in md and "clocks not fixed" in md
    console = Console(record=True, width=200)
    console.print(report.to_table())
    text = console.export_text()
    assert "GPU p50 ms" in text and "2.00x" in text


def test_rounds_interleave_runners():
    from vitc.bench.runner import bench_runners
    from vitc.engines.base import BaseRunner, TensorMeta

    calls: list[str] = []

    class Fake(BaseRunner):
        backend = "fake"

        def activate_impl(self) -> None:
            pass

        def infer_impl(self, feed):
            calls.append(self.name)
            return {"logits": np.zeros((feed["input"].shape[0], 2), np.float32)}

        def get_input_metadata(self):
            return [TensorMeta("input", (None, 3))]

        def get_output_metadata(self):
            return [TensorMeta("logits", (None, 2))]

    report = bench_runners([Fake("a"), Fake("b")], [1], TimingPlan(warmup=0, iterations=6), rounds=3)
    assert calls == ["a", "a", "b", "b"] * 3  # two calls each per round, turn by turn
    assert [row.e2e.count for row in report.rows] == [6, 6] and report.settings["rounds"] == 3
    assert [row.precision for row in report.rows] == ["fp32", "fp32"]  # each runner's own (RunnerInfo)
    # what was timed is said beside the figures (it said none of it; its JSON gave the first round's warm-up)
    warm = bench_runners([Fake("a")], [1], TimingPlan(warmup=4, iterations=6), rounds=3)
    assert warm.settings["warmup"] == 4 and warm.settings["warmup_later_rounds"] == 1
    assert (
        warm.how_timed()
        == "timed: 6 calls per row in 3 interleaved rounds, after 4 warm-up calls (1 in each later round); "
        "CPU threads: the backend's default"
    )
    once = bench_runners([Fake("a")], [1], TimingPlan(warmup=1, iterations=2)).how_timed()
    assert once.startswith("timed: 2 calls per row, after 1 warm-up call;")  # "1 warm-up calls" before
    warm.settings["duration"] = float("nan")  # any non-finite figure: a bare NaN is no JSON (JSON.parse refuses)
    assert '"duration": null' in warm.to_json() and json.loads(warm.to_json())["settings"]["duration"] is None
    markdown = warm.to_markdown()
    assert warm.how_timed() in markdown and "img/s = batch / p50 latency" in markdown
    assert "precisions" not in inspect.signature(bench_runners).parameters  # issue 23: nothing passed it
    with pytest.raises(VitcError):
        bench_runners([Fake("a")], [1], TimingPlan(), rounds=0)


def test_the_cpu_is_named_as_lscpu_names_it() -> None:
    """platform.processor() is "x86_64" on Linux: the report named no CPU, where results differ by CPU."""
    from vitc.bench.report import base_environment

    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file() or "model name" not in cpuinfo.read_text():
        pytest.skip("no model name in /proc/cpuinfo here")
    name = next(
        line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")
    )
    assert base_environment()["cpu"] == name
