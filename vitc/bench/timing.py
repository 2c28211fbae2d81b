"""Latency statistics the way trtexec reports them (numpy only).

A measurement is warm-up calls (not recorded), then either a fixed number of iterations or as many
as fit in a duration (at least `min_iterations`). Each call reports one or more named times in
seconds ("e2e": host arrays in → host arrays out; "gpu": GPU compute from CUDA events); each name
gets its own statistics: min, max, mean, std, p50/p90/p95/p99, coefficient of variation, spread around
the median (interquartile range / p50), and throughput = batch / median latency (robust on shared,
noisy machines; trtexec divides by the mean).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Mapping, Optional

import numpy as np

from vitc.errors import VitcError
from vitc.limits import MAX_SECONDS

MAX_CALLS = 1_000_000

PERCENTILES = (50, 90, 95, 99)
# A spread around the median above this (the middle half of the calls spanning over half the median: timings
# in two modes, such as half the calls at 1 ms and half at 3 ms, which gives 67-200% whichever mode p50 falls in)
# leaves a p50-based ratio between runners no figure to trust: `vitc bench` says so. A few calls stalled many times
# over move neither quartile. On a busy 2-core VM, ONNX Runtime runs of one model spread 28-78% (CV 30-46%) while
# their p50 moved by up to 70% between back-to-back runs; a tiny model's runs there spread 2-30%.
NOISY_SPREAD = 0.5


@dataclass(frozen=True)
class LatencyStats:
    """Statistics of per-call latencies, in milliseconds; throughput in images per second."""

    count: int
    batch: int
    min: float
    max: float
    mean: float
    std: float
    p50: float
    p90: float
    p95: float
    p99: float
    cv: float  # coefficient of variation, std / mean (a fraction, not percent)
    spread: float  # (p75 - p25) / p50, a fraction: see `spread_around_median`
    throughput: float

    @classmethod
    def from_seconds(cls, seconds: Any, batch: int) -> LatencyStats:
        times = np.asarray(seconds, dtype=np.float64).ravel() * 1e3
        if times.size == 0:
            raise VitcError("no timings to summarise")
        if batch < 1:
            raise VitcError(f"batch must be >= 1, got {batch}")
        if not np.isfinite(times).all() or (times < 0).any():
            raise VitcError("timings must be finite and non-negative")
        mean = float(times.mean())
        std = float(times.std(ddof=1)) if times.size > 1 else 0.0
        p50, p90, p95, p99 = (float(v) for v in np.percentile(times, PERCENTILES))
        return cls(
            count=int(times.size),
            batch=batch,
            min=float(times.min()),
            max=float(times.max()),
            mean=mean,
            std=std,
            p50=p50,
            p90=p90,
            p95=p95,
            p99=p99,
            cv=std / mean if mean > 0 else 0.0,
            spread=spread_around_median(times),
            throughput=batch * 1e3 / p50 if p50 > 0 else float("inf"),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def spread_around_median(times: Any) -> float:
    """IQR / median, not the MAD: a second mode of over a quarter of the calls shows; the MAD stays 0 till half."""
    p25, p50, p75 = (float(v) for v in np.percentile(times, (25, 50, 75)))
    return (p75 - p25) / p50 if p50 > 0 else 0.0


@dataclass(frozen=True)
class TimingPlan:
    """How long to measure: warm-up calls, then `iterations` calls or `duration` seconds."""

    warmup: int = 5
    iterations: int = 30
    duration: float | None = None
    min_iterations: int = 5

    def __post_init__(self) -> None:
        if self.warmup < 0:
            raise VitcError(f"--warmup must be >= 0, got {self.warmup}")
        if self.duration is None and self.iterations < 1:
            raise VitcError(f"--iterations must be >= 1, got {self.iterations}")
        if self.duration is not None and not (math.isfinite(self.duration) and 0 < self.duration <= MAX_SECONDS):
            raise VitcError(f"--duration must be a number of seconds in (0, {MAX_SECONDS}], got {self.duration}")
        if self.warmup > MAX_CALLS or self.iterations > MAX_CALLS:
            raise VitcError(f"--warmup and --iterations must be at most {MAX_CALLS}")


Step = Callable[[], Mapping[str, Optional[float]]]  # evaluated at import: typing forms for Python 3.8


def collect(step: Step, plan: TimingPlan, clock: Callable[[], float] = time.perf_counter) -> dict[str, list[float]]:
    """Call `step` per the plan; gather each named time (None values are skipped)."""
    for _ in range(plan.warmup):
        step()
    samples: dict[str, list[float]] = {}
    start = clock()
    calls = 0
    while True:
        for name, value in step().items():
            if value is not None:
                samples.setdefault(name, []).append(float(value))
        calls += 1
        if plan.duration is None:
            if calls >= plan.iterations:
                break
        elif calls >= plan.min_iterations and clock() - start >= plan.duration:
            break
    return samples


def measure(step: Step, plan: TimingPlan, batch: int) -> dict[str, LatencyStats]:
    """Statistics per named time for a step that processes `batch` images per call."""
    return {name: LatencyStats.from_seconds(times, batch) for name, times in collect(step, plan).items()}


def interleaved_medians(
    calls: Mapping[str, Callable[[], object]], warmup: int, iterations: int, rounds: int
) -> dict[str, float]:
    """Median milliseconds per call, timed in `rounds` round-robin rounds so that load from other
    processes hits every candidate alike (the benchmark scripts in docs/ all time this way)."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for call in calls.values():
        for _ in range(warmup):
            call()
    for _ in range(rounds):
        for name, call in calls.items():
            for _ in range(max(1, iterations // rounds)):
                start = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - start)
    return {name: 1e3 * float(np.median(t)) for name, t in times.items()}
