"""Benchmark results as a rich table, JSON and Markdown, several runners side by side.

Rows are (runner, batch). The ratio column compares each runner's throughput with the *first*
runner's at the same batch (2.00× = twice the images per second). Which time is which is stated
in the output: "e2e" is host-to-host (inputs copied in, outputs copied back), "gpu" is device
compute only (CUDA events around the launch).
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from typing import Any

from vitc._io import ReportKind, json_report, json_text, markdown_report
from vitc.bench.timing import NOISY_SPREAD, LatencyStats

FORMAT = "vitc.bench"  # the JSON report's "format"
TITLE = "vitc bench"  # the heading of the table and of the Markdown report
JSON_REPORT = ReportKind("vitc bench report", ".json", json_report("rows", fmt=FORMAT))
MARKDOWN_REPORT = ReportKind("vitc bench Markdown report", ".md", markdown_report(f"### {TITLE}"))

TIME_NOTES = {
    "e2e": "end to end per call: host inputs in, host outputs out",
    "copies": "for GPU runners this includes the H2D/D2H copies",
    "gpu": "GPU compute only, CUDA events around the launch (no transfers)",
    "vitc_compile_s": "vitc's compile passes and their check, once per runner",
    "first_call_s": "the first call at this batch, where torch.compile compiles and CUDA graphs are captured",
    "throughput": "batch / p50 latency",
}


@dataclass
class BenchRow:
    runner: str
    backend: str
    device: str
    precision: str
    batch: int
    e2e: LatencyStats
    gpu: LatencyStats | None = None
    accuracy: dict[str, Any] | None = None  # a DriftReport.to_dict() when --data was given
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "runner": self.runner,
            "backend": self.backend,
            "device": self.device,
            "precision": self.precision,
            "batch": self.batch,
            "e2e": self.e2e.to_dict(),
            "gpu": None if self.gpu is None else self.gpu.to_dict(),
            "accuracy": self.accuracy,
            "detail": self.detail,
        }


@dataclass
class BenchReport:
    rows: list[BenchRow] = field(default_factory=list)
    environment: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def runners(self) -> list[str]:
        seen: dict[str, None] = {}
        for row in self.rows:
            seen.setdefault(row.runner, None)
        return list(seen)

    def _base(self, row: BenchRow) -> BenchRow | None:
        """The first runner's row at `row`'s batch, what its ratio divides by."""
        return next((r for r in self.rows if r.runner == self.runners[0] and r.batch == row.batch), None)

    def ratio(self, row: BenchRow) -> float | None:
        """Throughput of `row` over the first runner's at the same batch (None when it has none)."""
        base = self._base(row)
        if base is None or base.e2e.throughput <= 0:
            return None
        return row.e2e.throughput / base.e2e.throughput

    def noisy_ratios(self) -> list[str]:
        """A warning for each ratio between two runners where either side's e2e timings spread around their median
        past NOISY_SPREAD, naming that side and its spread: the table printed such a ratio (`--compare`'s speed-up)
        as a figure. The spread, not the CV: the ratio divides p50s, which a few stalled calls do not move."""
        lines = []
        for row in self.rows:
            base, ratio = self._base(row), self.ratio(row)
            if base is None or base is row or ratio is None:
                continue
            noisy = [
                f"{r.runner}'s spread around the median is {100 * r.e2e.spread:.0f}%"
                for r in (row, base)
                if r.e2e.spread > NOISY_SPREAD
            ]
            if noisy:
                lines.append(
                    f"the ratio {ratio:.2f}x of {row.runner} at batch {row.batch} is not to be trusted: "
                    f"{' and '.join(noisy)}, over {100 * NOISY_SPREAD:.0f}% (spread = (p75 - p25) / p50); time it "
                    "again with more calls (-n, --duration) or --rounds, on a quieter machine"
                )
        return lines

    def to_dict(self) -> dict[str, Any]:
        rows = []
        for row in self.rows:
            record = row.to_dict()
            record["ratio_vs_first"] = self.ratio(row)
            rows.append(record)
        return {
            "format": FORMAT,
            "version": 1,
            "baseline": self.runners[0] if self.rows else None,
            "times": TIME_NOTES,
            "units": {"latency": "ms", "throughput": "images/s", "cv": "fraction", "spread": "fraction"},
            "settings": self.settings,
            "environment": self.environment,
            "warnings": self.warnings,
            "rows": rows,
        }

    def to_json(self) -> str:
        return json_text(self.to_dict())  # NaN and infinities as null, as every JSON vitc writes

    # -- shared cell formatting ----------------------------------------------------------------
    _HEAD = ("runner", "batch", "p50 ms", "mean ms", "p99 ms", "spread %", "img/s", "ratio", "GPU p50 ms", "top-1 %",
             "vitc compile s", "1st call s")  # fmt: skip

    def _cells(self, row: BenchRow) -> list[str]:
        ratio = self.ratio(row)
        accuracy = row.accuracy
        if accuracy is None:
            top1 = ""
        elif accuracy.get("top1") is None:  # a held-out set of generated inputs: no labels, agreement only
            top1 = f"- (agrees {accuracy['agreement']:.1f})"
        else:
            top1 = f"{accuracy['top1']:.2f} ({accuracy['delta_top1']:+.2f})"
        return [
            row.runner,
            str(row.batch),
            f"{row.e2e.p50:.3f}",
            f"{row.e2e.mean:.3f}",
            f"{row.e2e.p99:.3f}",
            f"{100 * row.e2e.spread:.1f}",
            f"{row.e2e.throughput:.1f}",
            "" if ratio is None else f"{ratio:.2f}x",
            "" if row.gpu is None else f"{row.gpu.p50:.3f}",
            top1,
            _seconds(row.detail.get("vitc_compile_s")),
            _seconds((row.detail.get("first_call_s") or {}).get(row.batch)),
        ]

    def _columns(self) -> list[int]:
        keep = list(range(8))
        if any(r.gpu is not None for r in self.rows):
            keep.append(8)
        if any(r.accuracy is not None for r in self.rows):
            keep.append(9)
        if any(r.detail.get("vitc_compile_s") is not None for r in self.rows):
            keep.append(10)
        if any(
            r.detail.get("torch_compile") or (r.backend == "torch" and r.detail.get("cuda_graph")) for r in self.rows
        ):
            keep.append(11)
        return keep

    def to_table(self, title: str = TITLE) -> Any:
        """The table at any console width: the runner folds, the figures stay whole (vitc._terminal.Fitted)."""
        from rich.table import Table

        from vitc._terminal import Fitted

        keep = self._columns()
        table = Table(title=title, caption=f"{self.how_timed()}\n{self._caption()}" if self.rows else self._caption())
        for i in keep:
            if i == 0:
                table.add_column(self._HEAD[i], overflow="fold")
            else:
                table.add_column(self._HEAD[i], justify="right", no_wrap=True)
        for row in self.rows:
            cells = self._cells(row)
            table.add_row(*(cells[i] for i in keep))
        return Fitted(table)

    def _caption(self) -> str:
        base = self.runners[0] if self.rows else "-"
        text = f"latency = {TIME_NOTES['e2e']}"
        if any(r.device != "cpu" for r in self.rows):  # a CPU runner copies nothing to a device
            text += f" ({TIME_NOTES['copies']})"
        text += f"; img/s = {TIME_NOTES['throughput']}; ratio = throughput / {base}'s at the same batch"
        if any(r.gpu is not None for r in self.rows):
            text += f"; GPU = {TIME_NOTES['gpu']}"
        keep = self._columns()
        if 10 in keep:
            text += f"; vitc compile s = {TIME_NOTES['vitc_compile_s']}"
        if 11 in keep:
            text += f"; 1st call s = {TIME_NOTES['first_call_s']}"
        return text

    def how_timed(self) -> str:
        """The settings a reader needs beside the figures, as trtexec prints its own: warm-up, the calls timed
        per row, the rounds, the CPU threads."""
        settings = self.settings
        warmup, rounds = settings.get("warmup"), settings.get("rounds") or 1
        calls = sorted({row.e2e.count for row in self.rows})
        text = f"timed: {'/'.join(map(str, calls))} calls per row"
        if rounds > 1:
            later = settings.get("warmup_later_rounds")
            text += f" in {rounds} interleaved rounds, after {_calls(warmup)} ({later} in each later round)"
        elif warmup is not None:
            text += f", after {_calls(warmup)}"
        threads = sorted(
            {str(row.detail.get("threads") or "the backend's default") for row in self.rows if row.device == "cpu"}
        )
        if threads:
            text += f"; CPU threads: {'/'.join(threads)}"
        return text

    def to_markdown(self, title: str = TITLE) -> str:
        keep = self._columns()
        lines = [f"### {title}", ""]
        env = ", ".join(f"{k}: {v}" for k, v in self.environment.items() if v not in (None, ""))
        if env:
            lines += [env, ""]
        if self.rows:
            lines += [self.how_timed(), ""]
        head = [self._HEAD[i] for i in keep]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|")
        for row in self.rows:
            cells = self._cells(row)
            lines.append("| " + " | ".join(cells[i].replace("|", "\\|") for i in keep) + " |")
        lines += ["", self._caption() + "."]
        lines += [f"\n> warning: {w}" for w in self.warnings]
        return "\n".join(lines) + "\n"


def _seconds(value: Any) -> str:
    return "" if value is None else f"{float(value):.1f}"


def base_environment() -> dict[str, Any]:
    """Host facts that belong with every figure (no optional imports)."""
    from vitc._device import cpu_cores
    from vitc.engines.platform import cpu_model

    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "cores": cpu_cores(),
    }


def _calls(warmup: Any) -> str:
    return f"{warmup} warm-up call{'s' * (warmup != 1)}"
