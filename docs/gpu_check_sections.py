"""The sections of docs/gpu_check.py (`make gpu-check`): what each measures on a lent GPU, in its budget.

Each section is `fn(plan, out, budget_s) -> dict` and is made of sub-runs (a peer run, a training run, a
precision, an amp): a sub-run that fails becomes `{"failed": why, ...}` (with the tail of its stderr or
traceback) and the next one runs; every finished sub-run goes to `progress`, which docs/gpu_check.py turns
into a rewritten report, so a run stopped by the device's limit keeps all it measured.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FEED_TESTS_S = 60.0  # the feed's six short CUDA tests: started only with this much of the section left
listener: Callable[[dict[str, Any]], None] | None = None  # set by docs/gpu_check.py's check()


def progress(partial: dict[str, Any]) -> None:
    """The running section's results so far (check() writes them to the report)."""
    if listener is not None:
        listener(partial)


def has(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def vitc_cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "vitc.cli.main", *args]


def run(cmd: list[str], timeout: float, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env, check=False)


def _tail(output: str | bytes | None, lines: int = 15) -> list[str]:
    """The last lines a subprocess printed (what it had measured, or why it failed)."""
    text = output.decode(errors="replace") if isinstance(output, bytes) else output or ""
    return text.strip().splitlines()[-lines:]


def exited(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """A sub-run whose process exited non-zero."""
    return {"failed": f"exited {proc.returncode}", "stderr_tail": _tail(proc.stderr)}


def failed(exc: BaseException) -> dict[str, Any]:
    """A sub-run that raised in this process (the check goes on with the next one)."""
    return {"failed": f"{type(exc).__name__}: {exc}"[:600], "traceback": _tail(traceback.format_exc(), 12)}


STOPPED = "time budget spent (the run was stopped)"


def sub_run(
    cmd: list[str],
    timeout: float,
    read: Callable[[subprocess.CompletedProcess[str]], dict[str, Any]],
    stopped: str = STOPPED,
) -> dict[str, Any]:
    """One sub-run in its own process: what `read` takes from it, or why there is nothing (it exited non-zero,
    was stopped at `timeout` (its last lines kept), or reading its output raised); the check goes on."""
    try:
        proc = run(cmd, timeout)
        return exited(proc) if proc.returncode != 0 else read(proc)
    except subprocess.TimeoutExpired as exc:
        return {"skipped": stopped, "output": _tail(exc.stdout)}
    except Exception as exc:
        return failed(exc)


def bench_report(stem: Path) -> Callable[[subprocess.CompletedProcess[str]], dict[str, Any]]:
    """How a `vitc bench --json STEM.json --markdown STEM.md` sub-run is read."""

    def read(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
        return {"markdown": Path(f"{stem}.md").read_text(), "figures": json.loads(Path(f"{stem}.json").read_text())}

    return read


def stopping(exc: BaseException) -> bool:
    """A stop signal taken inside a sub-run (vitc train's TrainingInterrupted): it ends the check, not the run."""
    interrupt = sys.modules.get("vitc.train.interrupt")
    return interrupt is not None and isinstance(exc, interrupt.TrainingInterrupted)


def torch_bench(plan: dict[str, Any], out: Path, budget: float) -> dict[str, Any]:
    results: dict[str, Any] = {}
    models = [a for m in plan["bench_models"] for a in ("-m", m)]
    deadline = time.monotonic() + budget
    for i, precision in enumerate(plan["precisions"]):
        stem = out / f"bench_{precision}"
        cmd = vitc_cli("bench", *models, "--compare", "--device", plan["device"], "--autocast", precision,
                       *plan["bench_args"], "--json", f"{stem}.json", "--markdown", f"{stem}.md")  # fmt: skip
        timeout = max(1.0, (deadline - time.monotonic()) / (len(plan["precisions"]) - i))
        results[precision] = {"command": "vitc " + " ".join(cmd[3:]), **sub_run(cmd, timeout, bench_report(stem))}
        progress(results)
    return results


def inference(plan: dict[str, Any], out: Path, budget: float) -> dict[str, Any]:
    """docs/inference_ablation.py in its own process: its cells get 70% of the budget (model loading and the
    timm import take more), the plan's torch.compile reserve among them; a run stopped at 85% keeps what it
    wrote; then, in the time left, `vitc bench --cuda-graph` end to end (the PyTorch runner's CUDA-graph path)."""
    settings = plan["inference"]
    deadline = time.monotonic() + budget
    reserve = settings.get("compile_reserve_s", 0)
    cells_s = min(settings["budget_s"] + reserve, 0.7 * budget)
    args = ["--device", plan["device"], *settings["args"].split(), "--budget-s", f"{cells_s:.0f}",
            "--compile-reserve-s", f"{reserve:.0f}"]  # fmt: skip
    path = out / "inference.json"
    path.unlink(missing_ok=True)
    cmd = [sys.executable, str(ROOT / "docs" / "inference_ablation.py"), *args, "--json", str(path)]
    ablation: dict[str, Any] = {"command": "python docs/inference_ablation.py " + " ".join(args), "stopped": None}
    try:
        proc = run(cmd, 0.85 * budget)
        if proc.returncode != 0:
            ablation |= exited(proc)
    except subprocess.TimeoutExpired:
        ablation["stopped"] = f"stopped at the section's budget ({budget:.0f} s)"
    if path.exists():  # written after each part: a stopped or failed run keeps the parts it finished
        figures = json.loads(path.read_text())
        note = f"\n({ablation['stopped']}: the parts after these are missing)\n" if ablation["stopped"] else ""
        ablation |= {"markdown": figures["markdown"] + note, "cvt": figures.get("cvt"), "convit": figures.get("convit")}
    elif ablation["stopped"]:
        ablation["failed"] = f"inference_ablation {ablation['stopped']}, before its first tables"
    section: dict[str, Any] = {"ablation": ablation}
    progress(section)
    if settings.get("bench"):
        stem = out / "bench_cuda_graph"
        cmd = vitc_cli("bench", *settings["bench"].split(), "--json", f"{stem}.json", "--markdown", f"{stem}.md")
        command = "vitc " + " ".join(cmd[3:])
        stopped = f"{command}: stopped at the section's budget"
        done = sub_run(cmd, max(1.0, deadline - time.monotonic()), bench_report(stem), stopped)
        section["cuda_graph_bench"] = {"command": command, **done}
    return section


def train(plan: dict[str, Any], out: Path, budget: float) -> dict[str, Any]:
    """The feed measurement, then `vitc train` per plan row, each in its own process stopped at the section's
    deadline; a run starts only while at least the last run's time is left, the GPU feed tests only with
    FEED_TESTS_S left."""
    import torch

    from vitc.train.device import pick_workers

    rows: list[dict[str, Any]] = []
    deadline = time.monotonic() + budget
    section: dict[str, Any] = {"settings": plan["train_set"], "rows": rows}
    try:  # first: 60 short steps; a failure here loses only its table
        section["feed_timing"] = feed_timing(plan["feed_timing"])
    except Exception as exc:
        if stopping(exc):
            raise
        section["feed_timing"] = {"command": f"python docs/feed_timing.py {plan['feed_timing']}",
                                  "error": f"{type(exc).__name__}: {exc}"}  # fmt: skip
    progress(section)
    last_s = 0.0
    for i, (model, amp, *recipe) in enumerate(plan["train"]):
        settings = " ".join(recipe)
        label = model + (" (DeiT's augmentation)" if recipe else "")
        if "@photos" in settings:  # a JPEG folder that streams, decoded by run.workers' default for the device
            label = f"{model} (streamed JPEGs, {pick_workers(None, torch.device(plan['device']))} workers)"
        left = deadline - time.monotonic()
        if left <= last_s:
            rows.append({"model": label, "amp": amp, "skipped": f"time budget spent ({left:.0f} s left)"})
            continue
        started = time.monotonic()
        if "@photos" in settings:  # written once, by this process, and counted in the run's time
            settings = settings.replace("@photos", str(photo_folder(out, plan["photos"])))
        job = {"plan": {k: plan[k] for k in ("train_set", "device")}, "out": str(out), "i": i, "model": model,
               "amp": amp, "settings": settings}  # fmt: skip
        rows.append({"model": label, "amp": amp, **own_process("train-row", job, out / f"train_{i}.json", left)})
        last_s = time.monotonic() - started
        progress(section)
    if plan["device"] == "cuda":  # the feed's GPU-only tests (side stream, copies)
        section["feed_tests"] = _feed_tests(deadline - time.monotonic())
    return section


def own_process(job: str, args: dict[str, Any], path: Path, timeout: float) -> dict[str, Any]:
    """JOBS[job](**args) in a process of its own (this file run as a script), stopped at `timeout`
    (sub_run): what it wrote to `path`, or why there is nothing. A training run or a FlexAttention
    compile that overruns cannot take the next sections' time."""
    path.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), job, json.dumps(args), str(path)]
    return sub_run(cmd, timeout, lambda proc: json.loads(path.read_text()))


def _train_row(plan: dict[str, Any], out: str, i: int, model: str, amp: str, settings: str) -> dict[str, Any]:
    """One `vitc train` run (JOBS["train-row"]): its throughput, where its time went, what it chose."""
    from vitc.train.config import load_config
    from vitc.train.loop import train as run_training

    sets = dict(item.split("=", 1) for item in plan["train_set"] + settings.split())
    overrides: dict[str, Any] = {k: json.loads(v) for k, v in sets.items()}
    overrides |= {"model.name": model, "run.amp": amp, "run.device": plan["device"],
                  "run.out_dir": str(Path(out) / "runs"), "run.name": f"{model}_{amp}_{i}"}  # fmt: skip
    result = run_training(load_config(None, overrides), show_progress=False, force=True)
    # where the time goes (vitc.train.meter): the steps alone, the device's wait for the feed, the
    # first step (warm-up), evaluation; train_images_per_s counts the waits and the warm-up too
    timing = {k: round(v, 3) if isinstance(v, float) else v for k, v in result.timing.items()}
    return {"train_images_per_s": round(result.train_images_per_s, 1), "epochs": len(result.history),
            "seconds": round(result.seconds, 1), "test_top1": result.test.get("top1"), **timing,
            "attention": [row["chosen"] for row in result.attention or []]}  # fmt: skip


def _feed_tests(left: float) -> str:
    if left < FEED_TESTS_S:
        return f"skipped: {left:.0f} s of the section left, the tests need {FEED_TESTS_S:.0f}"
    if not has("pytest"):
        return "skipped: pytest is not installed"
    tests = ["-q", "-p", "no:cacheprovider", "-k", "cuda", "tests/train/test_feed_overlap.py",
             "tests/data/test_colour_on_device.py"]  # fmt: skip
    try:
        proc = run([sys.executable, "-m", "pytest", *tests], FEED_TESTS_S)  # six short CUDA tests
    except subprocess.TimeoutExpired:
        return f"timed out after {FEED_TESTS_S:.0f} s"
    return (proc.stdout.strip().splitlines() or [""])[-1] + f" (exit {proc.returncode})"


def photo_folder(out: Path, images: int) -> Path:
    """train/ and val/ (a tenth as many) of 320×256 JPEGs in four classes (docs/eval_memory.py's), once."""
    root = out / f"photos{images}"
    if not root.exists():
        write = doc_script("eval_memory").write_folder
        write(root / "train", images)
        write(root / "val", max(4, images // 10))
    return root


def feed_timing(args: str) -> dict[str, Any]:
    """docs/feed_timing.py in this process: the step, the augmentation, both from one thread or two."""
    feed = doc_script("feed_timing")
    figures = feed.measure(feed.parser().parse_args(args.split()))
    return {"command": f"python docs/feed_timing.py {args}", "markdown": feed.markdown(figures), **figures}


def doc_script(name: str) -> Any:
    """docs/<name>.py as a module."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "docs" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RATIOS_DEADLINE = 0.75  # of an amp's time: then training_timing stops building variants and starting rounds


def train_ratios(plan: dict[str, Any], out: Path, budget: float) -> dict[str, Any]:
    """docs/training_timing.py per amp, each in its own process with a share of the time left by its count of
    variants, stopped at its end; at RATIOS_DEADLINE of it, it stops building variants, warming them up (SP-ViT's
    FlexAttention compile) and starting rounds (rows of what it measured). A warm-up begun in time cannot overrun
    the section."""
    timing = doc_script("training_timing")
    settings = plan["ratios"]
    groups = timing.GROUPS_MICRO if settings["micro"] else timing.GROUPS_224
    every = settings.get("every_form", ())
    weights = [
        sum(len(timing.variants(n, amp in every, plan["device"])) for names in groups.values() for n in names)
        for amp in settings["amps"]
    ]
    results: dict[str, Any] = {}
    deadline = time.monotonic() + budget
    for i, amp in enumerate(settings["amps"]):
        left = deadline - time.monotonic()
        if left <= 0:
            results[amp] = {"skipped": "time budget spent"}
            continue
        given = left * weights[i] / sum(weights[i:])
        job = {"device": plan["device"], "amp": amp, "every_form": amp in every, "seconds": RATIOS_DEADLINE * given,
               **{k: settings[k] for k in ("micro", "batch", "rounds", "steps", "warmup")}}  # fmt: skip
        flags = (" --micro" if settings["micro"] else "") + (" --every-form" if job["every_form"] else "")
        command = (f"python docs/training_timing.py --device {plan['device']} --amp {amp} --batch {settings['batch']}"
                   f" --rounds {job['rounds']} --steps {job['steps']} --warmup {job['warmup']}{flags}")  # fmt: skip
        results[amp] = {"command": command, **own_process("ratios", job, out / f"ratios_{amp}.json", given)}
        progress(results)
    return results


def _ratios(device: str, amp: str, every_form: bool, seconds: float, micro: bool, batch: int, **counts: int) -> dict:
    """docs/training_timing.py's table for one amp (JOBS["ratios"]), stopping at `seconds`."""
    timing = doc_script("training_timing")
    groups, img = (timing.GROUPS_MICRO, 32) if micro else (timing.GROUPS_224, 224)
    opts = argparse.Namespace(device=device, amp=amp, seed=0, every_form=every_form, **counts)
    stopped: list[str] = []
    rows = timing.measure(groups, img, batch, opts, deadline=time.monotonic() + seconds, stopped=stopped)
    notes = "".join(f"\n\n(deadline: {s})" for s in stopped)
    return {"markdown": timing.markdown(rows, img, batch, opts) + notes, "rows": rows,
            **({"stopped": stopped} if stopped else {})}  # fmt: skip


PEER_RUN_MIN_S = 30.0  # a peer run handed less yields no row (timm's import, the builds, the warm-ups)
OPERATOR_RUN_MIN_S = 15.0  # a docs/operator_counts.py run handed less is not started


def peers(plan: dict[str, Any], out: Path, budget: float) -> dict[str, Any]:
    """docs/peer_timing.py runs, then docs/operator_counts.py's counts on the device itself, each in its own
    process with its share of the time left then; one whose share is under its minimum is skipped."""
    results: dict[str, Any] = {}
    deadline = time.monotonic() + budget
    for i, (key, share) in enumerate(plan["peers"]):
        entry: dict[str, Any] = {"command": "python docs/peer_timing.py " + key}
        given = _share(deadline, share, PEER_RUN_MIN_S)
        if isinstance(given, str):
            results[key] = entry | {"skipped": given}
            continue
        path = out / f"peers_{i}.json"
        path.unlink(missing_ok=True)
        cmd = [sys.executable, str(ROOT / "docs" / "peer_timing.py"), *key.split(), "--json", str(path)]
        entry |= sub_run(cmd, given, _peer_lines)  # stopped: the rows written so far survive, read below
        with contextlib.suppress(Exception):  # written as it measures: what a stop or failure left is kept
            figures = json.loads(path.read_text())
            entry |= {"markdown": figures["markdown"], "train": figures["train"], "infer": figures.get("infer", [])}
        results[key] = entry
        progress(results)
    for i, (args, share) in enumerate(plan["operator_counts"]):  # beside the CPU's counts (docs/benchmarks.md)
        counts = ["--device", plan["device"], *args.split()]
        key, given = f"operators {i + 1}", _share(deadline, share, OPERATOR_RUN_MIN_S)
        entry = {"command": "python docs/operator_counts.py " + " ".join(counts)}
        if isinstance(given, str):
            results[key] = entry | {"skipped": given}
            continue
        cmd = [sys.executable, str(ROOT / "docs" / "operator_counts.py"), *counts]
        results[key] = entry | sub_run(cmd, given, lambda proc: {"markdown": proc.stdout})
        progress(results)
    return results


def _share(deadline: float, share: float, minimum: float) -> float | str:
    """A sub-run's seconds: its `share` of the time left; why it is skipped where that is under `minimum`."""
    left = deadline - time.monotonic()
    if left * share < minimum:
        return f"time budget spent ({share:.0%} of the {max(left, 0):.0f} s left is under {minimum:.0f} s)"
    return left * share


def _peer_lines(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """What a peer run printed besides its JSON: the equal-weights check and the operator-count diff."""
    lines = proc.stdout.splitlines()
    return {
        "equal_weights": [ln for ln in lines if "max |Δ logits|" in ln],
        "operators": [ln for ln in lines if ln.startswith(("operators", "    "))],
    }


def cuda_layer(plan: dict[str, Any], out: Path, budget: float) -> dict[str, Any]:
    import numpy as np

    from vitc.engines.cuda import Cuda, CudaGraph, choose_bindings

    with _fake_cuda(plan) as note:
        choice = choose_bindings().to_dict()
        cuda = Cuda()
        capacity = int(np.prod(plan["copy_shape"]))
        used = capacity * 3 // 8  # 3 of 8 images
        src, dst = cuda.pinned((capacity,), np.float32), cuda.pinned((capacity,), np.float32)
        dev = cuda.malloc(capacity * 4)
        stream, start, end = cuda.stream(), cuda.event(), cuda.event()
        src.array[:] = np.arange(capacity, dtype=np.float32)
        dst.array[:] = -1.0
        start.record(stream)
        stream.htod(dev, src, used * 4)
        stream.dtoh(dst, dev, used * 4)
        end.record(stream)
        stream.synchronize()
        exact = bool((dst.array[:used] == src.array[:used]).all() and (dst.array[used:] == -1.0).all())
        copy_s = end.seconds_since(start)
        graph: dict[str, Any] = {"graph_replay_ok": "pycuda: no graphs"}
        if cuda.kind == "cuda-python":
            graph = _graph_replay(CudaGraph(stream), stream, src, dst, dev, used)
        for obj in (src, dst, dev):
            obj.free()
        for event in (start, end):
            event.destroy()
        stream.destroy()
    return {"bindings": choice, "copy_bytes": used * 4, "buffer_bytes": capacity * 4, "exact_nbytes": exact,
            "h2d_d2h_ms": round(copy_s * 1e3, 4), **graph, "note": note}  # fmt: skip


def _graph_replay(graph: Any, stream: Any, src: Any, dst: Any, dev: Any, used: int) -> dict[str, Any]:
    """Capture the two copies, replay them twice with new host contents; a graph that cannot be
    instantiated (CudaGraph.end() False) says why instead of being launched."""
    graph.begin()
    stream.htod(dev, src, used * 4)
    stream.dtoh(dst, dev, used * 4)
    if not graph.end():
        return {"graph_replay_ok": False, "instantiate_error": graph.instantiate_error or "capture failed"}
    replays = []
    for value in (5.0, 7.0):  # each replay copies the host buffer's current contents
        src.array[:] = value
        graph.launch()
        stream.synchronize()
        replays.append(bool((dst.array[:used] == value).all() and (dst.array[used:] == -1.0).all()))
    graph.destroy()
    return {"graph_replay_ok": all(replays)}


@contextlib.contextmanager
def _fake_cuda(plan: dict[str, Any]) -> Iterator[str]:
    """--dry-run: the strict cuda-python 12.9 fake of the test suite stands in for the GPU."""
    if plan["device"] == "cuda":
        yield "real GPU"
        return
    sys.path.insert(0, str(ROOT))
    import pytest

    from tests.engines.fakes.cuda_fakes import install_cuda

    with pytest.MonkeyPatch.context() as mp:
        install_cuda(mp, cuda_python="12.9", driver=12060)
        yield "dry run: tests/engines/fakes cuda-python 12.9 fake, not a GPU"


def tensorrt(plan: dict[str, Any], out: Path, budget: float) -> dict[str, Any]:
    """`pytest -m tensorrt tests/engines` (collected only in a dry run). A run that tested nothing is
    reported as skipped ("not run: ..."), not ok: pytest exits 5 when it collects nothing, and 0 when
    every test skipped itself (no TensorRT, no GPU)."""
    junit = out / "tensorrt_junit.xml"
    junit.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "pytest", "-m", "tensorrt", "tests/engines", "-q", "-rs", "-p", "no:cacheprovider",
           f"--junitxml={junit}"]  # fmt: skip
    if plan["device"] != "cuda":
        cmd.append("--collect-only")
    proc = run(cmd, budget)
    tail = proc.stdout.strip().splitlines()[-15:]
    if proc.returncode not in (0, 5):  # 5: nothing collected
        raise RuntimeError(f"pytest -m tensorrt exited {proc.returncode}: " + " | ".join(tail[-5:]))
    section = {"command": " ".join(cmd[2:]), "exit_code": proc.returncode, "summary": tail[-1] if tail else "",
               "tail": tail}  # fmt: skip
    why = _tensorrt_not_run(proc.returncode, junit if plan["device"] == "cuda" else None)
    return {"status": "skipped", "reason": f"not run: {why}", **section} if why else section


def _tensorrt_not_run(returncode: int, junit: Path | None) -> str | None:
    """Why `pytest -m tensorrt` tested nothing (None when it tested something): from its exit code and its
    JUnit report (the -q of pyproject's addopts and the command's make pytest print no count line)."""
    if returncode == 5:
        return "pytest collected no test marked tensorrt (exit code 5)"
    if junit is None or not junit.is_file():
        return None
    import xml.etree.ElementTree as ET

    root = ET.parse(junit).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    tests = sum(int(suite.get("tests", 0)) for suite in suites)
    skipped = sum(int(suite.get("skipped", 0)) for suite in suites)
    if tests == 0 or skipped < tests:
        return None
    reasons = sorted({str(s.get("message", "")) for s in root.iter("skipped") if s.get("message")})
    return f"all {tests} tests marked tensorrt were skipped ({'; '.join(reasons) or 'no reason given'})"


JOBS: dict[str, Callable[..., dict[str, Any]]] = {"train-row": _train_row, "ratios": _ratios}  # own_process's


if __name__ == "__main__":  # own_process: `python docs/gpu_check_sections.py JOB ARGS_JSON RESULT_PATH`
    sys.path.insert(0, str(ROOT))
    job, args, result = sys.argv[1:]
    Path(result).write_text(json.dumps(JOBS[job](**json.loads(args)), default=str))
