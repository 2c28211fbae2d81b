"""docs/gpu_check.py keeps every figure it measured in its one device call: a stopped or failing sub-run,
a report bug, a SIGTERM at the limit, and its budget shared so that every section runs. Subprocess results
and the clock are simulated (no GPU, no long runs)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.doc_scripts import load_doc_script

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def gpu_check(monkeypatch: pytest.MonkeyPatch) -> Any:
    module = load_doc_script("gpu_check")
    monkeypatch.setattr(module, "missing", lambda section: [])
    monkeypatch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))  # check() extends it for its subprocesses
    return module


def _only(gpu_check: Any, monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    monkeypatch.setattr(gpu_check, "SECTIONS", {name: gpu_check.SECTIONS[name] for name in names})


def _peer_run(script: list, seen: list | None = None):
    """A stand-in for sections.run: the n-th peer_timing run does script[n] (a callable of its JSON path)."""
    calls: list[list[str]] = []

    def run(cmd: list[str], timeout: float, env: dict | None = None) -> subprocess.CompletedProcess:
        if "peer_timing.py" not in " ".join(cmd):
            return subprocess.CompletedProcess(cmd, 0, "| table |", "")
        calls.append(cmd)
        return script[len(calls) - 1](cmd, Path(cmd[cmd.index("--json") + 1]))

    return run


def _writes(markdown: str, code: int = 0, stderr: str = "") -> Any:
    def act(cmd: list[str], path: Path) -> subprocess.CompletedProcess:
        path.write_text(json.dumps({"markdown": markdown, "train": [1], "infer": [2]}))
        return subprocess.CompletedProcess(cmd, code, "", stderr)

    return act


def test_a_peer_run_stopped_after_its_training_json_keeps_it(gpu_check: Any, monkeypatch, tmp_path: Path) -> None:
    """The reviewer's timeout_json.py: a run stopped at its timeout had `markdown` but no `command`, and
    gpu_check_report's part['command'] raised KeyError outside any try: the whole check died, no report."""

    def stopped(cmd: list[str], path: Path) -> subprocess.CompletedProcess:
        path.write_text(json.dumps({"markdown": "TRAIN TABLE", "train": [1], "infer": [], "stopped_before": "x"}))
        raise subprocess.TimeoutExpired(cmd, 1.0, output=b"vitc deit_tiny: ...\n")

    monkeypatch.setattr(gpu_check.sections, "run", _peer_run([stopped]))
    _only(gpu_check, monkeypatch, "peers", "cuda_layer")
    plan = {**gpu_check.DRY, "peers": [("--a", 0.5)], "operator_counts": []}
    result = gpu_check.check(plan, tmp_path, 480.0, [], tmp_path)
    peers = result["sections"]["peers"]["--a"]
    assert peers["command"] == "python docs/peer_timing.py --a" and peers["train"] == [1]
    assert result["sections"]["cuda_layer"]["status"] == "ok"
    text = (tmp_path / "gpu_check.md").read_text()
    assert "TRAIN TABLE" in text and "skipped: time budget spent (the run was stopped)" in text


def test_a_failing_peer_run_keeps_the_earlier_ones(gpu_check: Any, monkeypatch, tmp_path: Path) -> None:
    """The reviewer's fail_later.py: the second run's exit 1 discarded the first run's table."""
    failing = _writes("TABLE 2 (partial)", 1, "Traceback ...\nRuntimeError: compile failed")
    monkeypatch.setattr(gpu_check.sections, "run", _peer_run([_writes("TABLE 1"), failing, _writes("TABLE 3")]))
    _only(gpu_check, monkeypatch, "peers")
    plan = {**gpu_check.DRY, "peers": [("--a", 0.3), ("--b", 0.5), ("--c", 1.0)], "operator_counts": []}
    section = gpu_check.check(plan, tmp_path, 480.0, [], tmp_path)["sections"]["peers"]
    assert section["status"] == "partial" and section["--a"]["markdown"] == "TABLE 1"
    assert (
        section["--b"]["failed"] == "exited 1" and section["--b"]["stderr_tail"][-1] == "RuntimeError: compile failed"
    )
    assert section["--b"]["markdown"] == "TABLE 2 (partial)" and section["--c"]["markdown"] == "TABLE 3"
    assert "failed: exited 1" in (tmp_path / "gpu_check.md").read_text()


def test_the_report_is_rewritten_after_each_sub_run(gpu_check: Any, monkeypatch, tmp_path: Path) -> None:
    """A SIGKILL during a section's third run still leaves the first two in $OUT."""
    seen: list[dict] = []

    def look(cmd: list[str], path: Path) -> subprocess.CompletedProcess:
        seen.append(json.loads((tmp_path / "gpu_check.json").read_text())["sections"]["peers"])
        return _writes("TABLE")(cmd, path)

    monkeypatch.setattr(gpu_check.sections, "run", _peer_run([look, look, look]))
    _only(gpu_check, monkeypatch, "peers")
    plan = {**gpu_check.DRY, "peers": [("--a", 0.3), ("--b", 0.5), ("--c", 1.0)], "operator_counts": []}
    gpu_check.check(plan, tmp_path, 480.0, [], tmp_path)
    assert [sorted(k for k in s if k.startswith("--")) for s in seen] == [[], ["--a"], ["--a", "--b"]]
    assert seen[2]["status"] == "running" and seen[2]["--b"]["markdown"] == "TABLE"


def test_a_failing_torch_bench_precision_keeps_the_others(gpu_check: Any, monkeypatch, tmp_path: Path) -> None:
    def run(cmd: list[str], timeout: float, env: dict | None = None) -> subprocess.CompletedProcess:
        if "fp32" in cmd:
            return subprocess.CompletedProcess(cmd, 1, "", "error: out of memory")
        stem = Path(cmd[cmd.index("--json") + 1]).with_suffix("")
        Path(f"{stem}.json").write_text("[]")
        Path(f"{stem}.md").write_text("| fp16 table |")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(gpu_check.sections, "run", run)
    section = gpu_check.sections.torch_bench({**gpu_check.DRY, "precisions": ("fp32", "fp16")}, tmp_path, 100.0)
    assert section["fp32"]["failed"] == "exited 1" and section["fp32"]["stderr_tail"] == ["error: out of memory"]
    assert section["fp16"]["markdown"] == "| fp16 table |"


def _jobs(act: Any) -> Any:
    """A stand-in for sections.run where only own_process's jobs may run: `act(job, args, timeout)` returns
    what the job wrote (a dict) or its CompletedProcess, or raises (TimeoutExpired: stopped at `timeout`)."""

    def run(cmd: list[str], timeout: float, env: dict | None = None) -> subprocess.CompletedProcess:
        if not cmd[1].endswith("gpu_check_sections.py"):
            pytest.fail(f"not an own_process job: {cmd}")
        done = act(cmd[2], json.loads(cmd[3]), timeout)
        if isinstance(done, subprocess.CompletedProcess):
            return done
        Path(cmd[4]).write_text(json.dumps(done))
        return subprocess.CompletedProcess(cmd, 0, "", "")

    return run


def test_a_failing_training_run_keeps_the_others(gpu_check: Any, monkeypatch, tmp_path: Path) -> None:
    sections = gpu_check.sections

    def row(job: str, args: dict, timeout: float) -> Any:
        assert job == "train-row" and args["plan"]["device"] == "cpu"
        if args["i"] == 1:
            return subprocess.CompletedProcess([], 1, "", "Traceback ...\ntorch.OutOfMemoryError: CUDA out of memory")
        return {"train_images_per_s": 10.0 + args["i"]}

    monkeypatch.setattr(sections, "feed_timing", lambda args: {"command": "feed", "markdown": "FEED"})
    monkeypatch.setattr(sections, "run", _jobs(row))
    plan = {**gpu_check.DRY, "train": [("a", "off"), ("b", "off"), ("c", "off")]}
    rows = sections.train(plan, tmp_path, 100.0)["rows"]
    assert [r.get("train_images_per_s") for r in rows] == [10.0, None, 12.0]
    assert rows[1]["failed"] == "exited 1"
    assert rows[1]["stderr_tail"][-1] == "torch.OutOfMemoryError: CUDA out of memory"
    text = gpu_check.markdown({"dry_run": True, "seconds": 1.0, "sections": {"train": {"status": "ok", "rows": rows}}})
    assert "| b | off | failed: exited 1 |" in text


def test_train_starts_no_run_it_cannot_finish_nor_the_feed_tests(gpu_check: Any, monkeypatch, tmp_path: Path) -> None:
    """A run starts only with the last run's time left, and may take all that is left; the feed's GPU
    tests (60 s) only with 60 s left."""
    sections, clock, given = gpu_check.sections, [0.0], []
    monkeypatch.setattr(sections.time, "monotonic", lambda: clock[0])

    def row(job: str, args: dict, timeout: float) -> dict:
        given.append(timeout)
        clock[0] += 40.0
        return {"train_images_per_s": 1.0}

    monkeypatch.setattr(sections, "feed_timing", lambda args: {"command": "feed", "markdown": "FEED"})
    monkeypatch.setattr(sections, "run", _jobs(row))  # the feed tests are no job: they would fail the test
    plan = {**gpu_check.DRY, "device": "cuda", "train": [("a", "off"), ("b", "off"), ("c", "off")]}
    section = sections.train(plan, tmp_path, 100.0)
    assert [r.get("skipped", "ran") for r in section["rows"]] == ["ran", "ran", "time budget spent (20 s left)"]
    assert given == [100.0, 60.0] and section["feed_tests"] == "skipped: 20 s of the section left, the tests need 60"


def test_a_training_run_that_overruns_is_stopped(gpu_check: Any, monkeypatch, tmp_path: Path) -> None:
    """vitc train ran in the check's own process and a started run was never stopped: one that overran
    took the next sections' time. Each runs in its own process, stopped at the section's deadline."""
    sections, clock = gpu_check.sections, [0.0]
    monkeypatch.setattr(sections.time, "monotonic", lambda: clock[0])

    def hangs(job: str, args: dict, timeout: float) -> dict:
        clock[0] += timeout
        raise subprocess.TimeoutExpired(["vitc", "train"], timeout, output=b"epoch 1/2 ...\n")

    monkeypatch.setattr(sections, "feed_timing", lambda args: {"command": "feed", "markdown": "FEED"})
    monkeypatch.setattr(sections, "run", _jobs(hangs))
    plan = {**gpu_check.DRY, "train": [("a", "off"), ("b", "off")]}
    rows = sections.train(plan, tmp_path, 100.0)["rows"]
    assert rows[0]["skipped"] == sections.STOPPED and rows[0]["output"] == ["epoch 1/2 ..."]
    assert rows[1]["skipped"] == "time budget spent (0 s left)" and clock[0] == 100.0


def test_a_report_that_cannot_render_ends_nothing(gpu_check: Any, monkeypatch, tmp_path: Path) -> None:
    def broken(result: dict) -> str:
        raise KeyError("command")

    monkeypatch.setattr(gpu_check, "markdown", broken)
    _only(gpu_check, monkeypatch, "environment", "cuda_layer")
    result = gpu_check.check(gpu_check.DRY, tmp_path, 100.0, [], tmp_path)
    assert result["sections"]["cuda_layer"]["status"] == "ok"
    saved = json.loads((tmp_path / "gpu_check.json").read_text())
    assert saved["report_error"] == "gpu_check.md: KeyError: 'command'" and saved["sections"]["cuda_layer"]
    assert "gpu_check.json has every figure" in (tmp_path / "gpu_check.md").read_text()


def test_every_section_gets_time_and_the_total_stays_in_budget(gpu_check: Any, monkeypatch, tmp_path: Path) -> None:
    """The reviewer's budget.py: 1.5 × share caps summed to 900 s of 480; peers, train and inference took it
    all and the later sections were skipped. Each section here spends all it is handed (train 40 s more)."""
    clock = [0.0]
    monkeypatch.setattr(gpu_check.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(gpu_check, "has", lambda name: True)  # cuda-python, tensorrt: every section runs

    def spends(name: str, over: float):
        def fn(plan: dict, out: Path, budget: float) -> dict:
            clock[0] += (8.0 if name == "environment" else budget) + over
            return {"given": budget}

        return fn

    shares = {name: share for name, (_, share) in gpu_check.SECTIONS.items()}
    for overrun in (0.0, 40.0):
        clock[0] = 0.0
        fns = {name: (spends(name, overrun if name == "train" else 0.0), share) for name, share in shares.items()}
        monkeypatch.setattr(gpu_check, "SECTIONS", fns)
        result = gpu_check.check(gpu_check.FULL, tmp_path, 480.0, [], tmp_path)["sections"]
        assert [name for name, s in result.items() if s["status"] == "ok"] == list(shares)  # cuda_layer second
        assert clock[0] <= 480.0 + overrun + 1e-6
        # each gets its share of 480 s (the shares normalised to the budget); after train's overrun, the
        # sections after it lose at most its 40 s between them
        caps = {name: share / sum(shares.values()) * 480.0 for name, share in shares.items()}
        assert all(s["given"] >= caps[n] - (overrun * caps[n] / 200 if overrun else 1e-6) for n, s in result.items())


def test_in_process_ratios_stop_at_their_deadline() -> None:
    """training_timing.measure checks its deadline between variants and rounds: past it, it builds no
    more variants and starts no more rounds, and says so (each variant built keeps one sample)."""
    import argparse

    timing = load_doc_script("training_timing")
    opts = argparse.Namespace(device="cpu", amp="off", seed=0, every_form=False, rounds=3, steps=1, warmup=0)
    stopped: list[str] = []
    rows = timing.measure(timing.GROUPS_MICRO, 32, 2, opts, deadline=0.0, stopped=stopped)  # long past
    assert [r["model"] for r in rows] == ["deit_micro"] and rows[0]["rounds"] == 1
    assert stopped[0] == "convit_micro reference not built" and stopped[-1].startswith("1 of 3 rounds")


def test_no_warm_up_starts_past_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    """training_timing.interleave warmed every variant up before looking at its deadline: past it, a compile's
    minute-long warm-up still started, and the process, stopped at its end, kept no row. Now the first variant is
    warmed up and sampled, the others are not, and it says so."""
    import argparse

    timing = load_doc_script("training_timing")
    clock = [0.0]
    monkeypatch.setattr(timing, "_past", lambda deadline: deadline is not None and clock[0] > deadline)

    class Compiled:
        def __init__(self) -> None:
            self.times: list[float] = []

        def step(self) -> None:
            clock[0] += 10.0  # a warm-up step that compiles

        def sample(self, steps: int) -> None:
            self.times.append(1.0)

    runs, stopped = [Compiled(), Compiled(), Compiled()], []
    timing.interleave(runs, argparse.Namespace(warmup=2, rounds=3, steps=1), deadline=15.0, stopped=stopped)
    assert [len(run.times) for run in runs] == [1, 0, 0] and clock[0] == 20.0
    assert stopped == [
        "2 of 3 variants not warmed up, at the deadline",
        "1 of 3 rounds, the last one partial, at the deadline",
    ]


def test_the_timed_step_s_adamw_is_vitc_train_s(monkeypatch: pytest.MonkeyPatch) -> None:
    """training_timing's AdamW was torch's default where `vitc train` runs the fused one (on CUDA): the
    ratios timed another step. It is fused wherever vitc.train.setup's FUSED_ADAMW_ON says (CPU here)."""
    import argparse

    timing = load_doc_script("training_timing")
    opts = argparse.Namespace(device="cpu", amp="off", seed=0)
    assert timing.Variant("deit_micro", {}, 2, 32, opts).optimizer.defaults["fused"] is None  # not on CPU
    monkeypatch.setattr(timing, "FUSED_ADAMW_ON", ("cpu",))
    assert timing.Variant("deit_micro", {}, 2, 32, opts).optimizer.defaults["fused"] is True


SIGTERM_SCRIPT = """
import os, signal, sys
from pathlib import Path
sys.path[:0] = [{root!r}, {root!r} + "/docs"]
import gpu_check, gpu_check_sections as sections
from vitc.train.interrupt import CtrlC

def train(plan, out, budget):  # what vitc train does in-process: its own handlers, then the signal
    sections.progress({{"rows": [{{"model": "first run", "train_images_per_s": 123.0}}]}})
    with CtrlC().installed():
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(10**8):
            pass
    return {{}}

gpu_check.SECTIONS = {{"train": (train, 1.0), "torch_bench": (lambda p, o, b: {{}}, 1.0)}}
gpu_check.missing = lambda section: []
gpu_check.check(gpu_check.DRY, Path(sys.argv[1]), 100.0, [], Path(sys.argv[1]))
"""


def test_sigterm_writes_the_report_with_what_it_killed(tmp_path: Path) -> None:
    """`timeout 590` sends SIGTERM: the report says which section it stopped and keeps that section's
    finished sub-runs; the process ends 143 (128 + SIGTERM) at once, not after the next section."""
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(SIGTERM_SCRIPT.format(root=str(ROOT))))
    proc = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr[-2000:]
    saved = json.loads((tmp_path / "gpu_check.json").read_text())
    train = saved["sections"]["train"]
    assert train["status"] == "killed" and train["reason"] == "killed by SIGTERM during train"
    assert train["rows"][0]["train_images_per_s"] == 123.0 and "torch_bench" not in saved["sections"]
    text = (tmp_path / "gpu_check.md").read_text()
    assert "**killed by SIGTERM during train**" in text and "| first run |" in text


def test_a_training_interrupted_still_marks_the_report(gpu_check: Any, monkeypatch, tmp_path: Path) -> None:
    """Where vitc train took the SIGTERM itself (its own handler), it saves its run and raises
    TrainingInterrupted: the report is marked and the check ends with the run's exit code."""
    from vitc.train.interrupt import TrainingInterrupted

    def train(plan: dict, out: Path, budget: float) -> dict:
        gpu_check.sections.progress({"rows": [{"model": "first run"}]})
        stopped = TrainingInterrupted("stopped by SIGTERM: saved at step 3")
        stopped.exit_code = 143
        raise stopped

    monkeypatch.setattr(gpu_check, "SECTIONS", {"train": (train, 1.0), "torch_bench": (lambda p, o, b: {}, 1.0)})
    with pytest.raises(SystemExit) as ended:
        gpu_check.check(gpu_check.DRY, tmp_path, 100.0, [], tmp_path)
    assert ended.value.code == 143
    saved = json.loads((tmp_path / "gpu_check.json").read_text())
    assert saved["sections"]["train"]["status"] == "killed" and saved["sections"]["train"]["rows"]
    assert saved["killed"] == "killed (stopped by SIGTERM: saved at step 3) during train"
    assert "torch_bench" not in saved["sections"]


def test_a_failing_amp_keeps_the_other_ratios(gpu_check: Any, monkeypatch, tmp_path: Path) -> None:
    """train_ratios was all-or-nothing: bf16's failure lost the fp32 table measured beside it. Each amp runs
    in its own process, stopped at the end of its share; its own deadline comes before (rows, not a kill)."""
    clock, jobs = [0.0], []
    monkeypatch.setattr(gpu_check.sections.time, "monotonic", lambda: clock[0])

    def ratios(job: str, args: dict, timeout: float) -> Any:
        jobs.append((args, timeout))
        clock[0] += timeout
        if args["amp"] == "bf16":
            return subprocess.CompletedProcess([], 1, "", "RuntimeError: flex: out of resources")
        return {"markdown": "| fp32 table |", "rows": []}

    monkeypatch.setattr(gpu_check.sections, "run", _jobs(ratios))
    plan = {**gpu_check.DRY, "ratios": {**gpu_check.DRY["ratios"], "amps": ("bf16", "off")}}
    section = gpu_check.sections.train_ratios(plan, tmp_path, 100.0)
    assert section["bf16"]["failed"] == "exited 1" and section["off"]["markdown"] == "| fp32 table |"
    assert section["bf16"]["stderr_tail"] == ["RuntimeError: flex: out of resources"]
    assert [args["amp"] for args, _ in jobs] == ["bf16", "off"] and sum(t for _, t in jobs) == 100.0
    assert all(args["seconds"] == gpu_check.sections.RATIOS_DEADLINE * timeout < timeout for args, timeout in jobs)


def test_a_graph_that_cannot_be_instantiated_says_why(gpu_check: Any) -> None:
    """CudaGraph.end() returns False (instantiate_error set) where the capture cannot be instantiated: the
    section launched the graph regardless."""

    class Graph:
        instantiate_error = "cudaGraphInstantiateWithFlags: cudaErrorNotSupported"

        def begin(self) -> None: ...

        def end(self) -> bool:
            return False

        def launch(self) -> None:
            raise AssertionError("launched a graph that was not instantiated")

    class Stream:
        def htod(self, *args: Any) -> None: ...

        dtoh = htod

    replay = gpu_check.sections._graph_replay(Graph(), Stream(), None, None, None, 3)
    assert replay == {"graph_replay_ok": False, "instantiate_error": Graph.instantiate_error}


def test_a_train_only_peer_run_writes_each_model_s_rows(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The MFU run (--train-only --compile) wrote its JSON only at the end: a timeout in a later model's
    cold compile lost every row. Each model's rows are written once it is built, compiled and timed."""
    import torch

    from vitc.models import create_model

    peer_timing = load_doc_script("peer_timing")
    monkeypatch.setitem(peer_timing.PAIRS, "micro", (("deit_micro", "deit_micro"), (None, "convit_micro")))
    compiles, real_compile = [], torch.compile

    def compile_once(model: Any, **kwargs: Any) -> Any:
        compiles.append(model)
        if len(compiles) == 2:
            raise RuntimeError("stopped in the second cold compile")
        return real_compile(model, **kwargs)

    monkeypatch.setattr(torch, "compile", compile_once)
    path = tmp_path / "peers.json"
    args = ["--device", "cpu", "--amp", "off", "--batch", "2", "--img", "32", "--sizes", "micro", "--rounds", "2",
            "--steps", "1", "--warmup", "0", "--train-only", "--compile", "--compile-backend", "eager",
            "--compile-side", "vitc", "--json", str(path)]  # fmt: skip
    with pytest.raises(RuntimeError, match="second cold compile"):
        peer_timing.measure(peer_timing.parser().parse_args(args), peer=lambda name, img: create_model(name))
    saved = json.loads(path.read_text())
    assert [row["model"] for row in saved["train"]] == ["timm deit_micro", "vitc deit_micro",
                                                       "vitc deit_micro +compile", "vitc convit_micro"]  # fmt: skip
    assert all(row["rounds"] == 1 and row["img_s"] > 0 for row in saved["train"]) and saved["stopped_before"]


def test_train_needs_matplotlib(gpu_check: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """vitc train draws curves.png: without matplotlib every row failed (now at its start, before an epoch)."""
    module = load_doc_script("gpu_check")
    monkeypatch.setattr(module, "has", lambda name: name != "matplotlib")
    assert module.missing("train") == ["matplotlib"]


ROW_A = {"model": "a", "amp": "off", "train_images_per_s": 9.0}
ROW_B = {"model": "b", "amp": "off", "failed": "exited 1 (b)"}
FEED_FAILED = {"command": "feed", "error": "RuntimeError: oom"}
ALL_FAILED = {"feed_timing": FEED_FAILED, "rows": [{**ROW_A, "failed": "exited 1 (a)"}, ROW_B]}
ONE_FAILED = {"rows": [ROW_A, ROW_B, {"model": "c", "amp": "off", "skipped": "time budget spent"}]}


@pytest.mark.parametrize(
    ("ran", "status", "reason", "exit_code"),
    [
        (ALL_FAILED, "failed", "3 of 3 sub-runs failed; the first: RuntimeError: oom", 1),
        (ONE_FAILED, "partial", "1 of 2 sub-runs failed; the first: exited 1 (b)", 0),
    ],
)
def test_a_section_whose_runs_failed_is_not_ok(
    gpu_check: Any, monkeypatch, tmp_path: Path, ran: dict, status: str, reason: str, exit_code: int
) -> None:
    """Every training row failed (matplotlib missing) and the train section still read "ok": it reads
    failed when every sub-run that ran failed (the check exits 1), partial when some did (a skipped one
    is not a failure), and its table says which."""
    monkeypatch.setattr(gpu_check, "SECTIONS", {"train": (lambda plan, out, budget: ran, 1.0)})
    assert gpu_check.main(["--dry-run", "--out", str(tmp_path), "--only", "train"]) == exit_code
    section = json.loads((tmp_path / "gpu_check.json").read_text())["sections"]["train"]
    assert section["status"] == status and section["reason"] == reason
    text = (tmp_path / "gpu_check.md").read_text()
    assert f"## train: {status}\n\n{reason}" in text and "| b | off | failed: exited 1 (b) |" in text


def test_every_peer_run_that_starts_gets_its_minimum(gpu_check: Any, monkeypatch, tmp_path: Path) -> None:
    """The reviewer's budget run: the fp32 run (issue 20's fp32 ratios) was third and handed ~15 s (its share
    of what was left, past a `left < 20` guard), and the last run's share of 1.0 left the operator counts
    nothing. bf16 then fp32 come first, training only; a run starts only with its minimum; the counts run."""
    sections, clock, given = gpu_check.sections, [0.0], []
    monkeypatch.setattr(sections.time, "monotonic", lambda: clock[0])

    def run(cmd: list[str], timeout: float, env: dict | None = None) -> subprocess.CompletedProcess:
        given.append((" ".join(cmd[1:]), timeout))
        clock[0] += timeout  # each run takes all it is handed
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(sections, "run", run)
    section = sections.peers(gpu_check.FULL, tmp_path, 180.0)
    first, second = given[0][0], given[1][0]
    assert "--amp bf16 --batch 128" in first and "--train-only" in first and given[0][1] >= 60
    assert "--amp off" in second and "--train-only" in second and given[1][1] >= sections.PEER_RUN_MIN_S
    for command, seconds in given:
        minimum = sections.OPERATOR_RUN_MIN_S if "operator_counts" in command else sections.PEER_RUN_MIN_S
        assert seconds >= minimum, (command, seconds)
    assert any("operator_counts" in command for command, _ in given) and clock[0] <= 180.0
    skipped = [part["skipped"] for part in section.values() if "skipped" in part]
    assert all(why.startswith("time budget spent (") for why in skipped) and len(given) + len(skipped) == 6


def test_the_matmul_peak_is_a_median_after_a_warm_up(gpu_check: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """bf16_matmul_tflops was one event-timed group after three products: a stall (or clocks still rising)
    in that group was the figure. A stand-in torch: each product takes 2 ms of a simulated clock, events
    count products, and the first group timed stalls (5× slower)."""
    import types

    clock, products, elapsed = [0.0], [], [50.0]  # ms of the first group timed; 10 ms (5 × 2 ms) after

    class Tensor:
        def __matmul__(self, other: Any) -> Tensor:
            products.append(clock[0])
            clock[0] += 0.002
            return self

    class Event:
        def __init__(self, enable_timing: bool) -> None: ...

        def record(self) -> None:
            self.at = len(products)

        def synchronize(self) -> None: ...

        def elapsed_time(self, end: Event) -> float:
            return elapsed.pop() if elapsed else (end.at - self.at) * 2.0

    cuda = types.SimpleNamespace(Event=Event, synchronize=lambda: None)
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(randn=lambda *a, **k: Tensor(), bfloat16=None,
                                                                    cuda=cuda))  # fmt: skip
    monkeypatch.setattr(gpu_check.time, "monotonic", lambda: clock[0])
    tflops = gpu_check.bf16_matmul_tflops(n=1000)
    assert tflops == pytest.approx(2 * 1000**3 / 2e-3 / 1e12)  # 1 TFLOP/s: the stalled group is not the figure
    assert products[0] == 0.0 and len([t for t in products if t < 0.1]) >= 50  # ~100 ms of products first


def test_a_stop_writes_the_total_to_that_moment(gpu_check: Any, monkeypatch, tmp_path: Path) -> None:
    """killed() marked the section but left the header's total at the last finished section's."""
    clock = [0.0]
    monkeypatch.setattr(gpu_check.time, "monotonic", lambda: clock[0])

    def spends(seconds: float) -> Any:
        def fn(plan: dict, out: Path, budget: float) -> dict:
            clock[0] += seconds
            if seconds > 20:
                raise KeyboardInterrupt
            return {}

        return fn

    monkeypatch.setattr(gpu_check, "SECTIONS", {"cuda_layer": (spends(12.0), 1.0), "train": (spends(30.0), 1.0)})
    with pytest.raises(KeyboardInterrupt):
        gpu_check.check(gpu_check.DRY, tmp_path, 100.0, [], tmp_path)
    saved = json.loads((tmp_path / "gpu_check.json").read_text())
    assert saved["seconds"] == 42.0 and saved["killed"] == "interrupted (Ctrl-C) during train"
    assert "Total 42.0 s." in (tmp_path / "gpu_check.md").read_text()


def test_the_default_budget_leaves_the_report_its_margin(gpu_check: Any) -> None:
    """The device command is `timeout 590`: the budget leaves at least 45 s for what no sub-run's limit
    covers (Python's start, the feed measurement, the report), now that every sub-run is stopped at its time."""
    outer = int(gpu_check.__doc__.split("timeout ")[1].split()[0])
    assert outer == 590 and outer - 60 <= gpu_check.BUDGET_S <= outer - 45
    assert (
        f"(default {gpu_check.BUDGET_S:.0f} s)"
        in subprocess.run(
            [sys.executable, str(ROOT / "docs" / "gpu_check.py"), "--help"], capture_output=True, text=True, check=True
        ).stdout
    )


def test_a_torchvision_that_does_not_import_is_stood_in_for(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A torchvision built for another torch is installed but fails to import: timm's import failed with
    it; the stand-in is used, as where torchvision is missing."""
    packages = {
        "torchvision": "raise ImportError('undefined symbol: _ZN3c10 (built for another torch)')",
        "timm": "from torchvision.transforms import InterpolationMode\nMODE = InterpolationMode",
    }
    for name, code in packages.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))
    for name in [m for m in sys.modules if m.split(".")[0] in ("timm", "torchvision")]:
        monkeypatch.delitem(sys.modules, name)
    timm = load_doc_script("operator_counts").import_timm()
    assert timm.__file__ == str(tmp_path / "timm" / "__init__.py") and timm.MODE.__name__ == "InterpolationMode"
    for name in [m for m in sys.modules if m.split(".")[0] in ("timm", "torchvision")]:
        monkeypatch.delitem(sys.modules, name)  # the stand-in and the fake timm: not for later tests
