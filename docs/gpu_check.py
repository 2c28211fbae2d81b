"""The GPU check: what a lent NVIDIA GPU measures and verifies for vitc, as one prepared run (~8 min).

    make gpu-check                                   # = PYTHONPATH=. python3 docs/gpu_check.py
    python3 docs/gpu_check.py --wheelhouse wheels/   # install missing pure-Python deps offline first
    python3 docs/gpu_check.py --dry-run              # the same plumbing on CPU with micro models (CI)

Through this workplace's device tool (15 min of device time a session, the machine's start included;
one command at most 10 min), one call: kind `nvidia-h200` (issue 20's machine; the first call otherwise
gets an H100), timeout_s 600, command `VITC_COMMIT=<git rev-parse HEAD> PYTHONPATH=. timeout 590 python3
docs/gpu_check.py --report-dir $OUT` (`make gpu-check` does the same where make is installed: it passes
$OUT from the environment). The tree travels without .git, hence VITC_COMMIT; only files under $OUT come
back: gpu_check.json and gpu_check.md (runs, photos and tables stay in train/runs/gpu_check there), both
rewritten after every section, so a run stopped at the limit keeps what it measured.

Sections, in the order they run (each is skipped, with the reason, when what it needs is missing;
issue 20's targets come first, so a section that overruns its share delays only the older checks):
1. environment: GPU, driver, torch/CUDA versions, vitc commit, CPU model, what is missing.
2. peers: docs/peer_timing.py, vitc beside timm (installed on the lent machine) in one process: training
   per GMAC vs timm's DeiT of the same size (bf16 and fp32, batch 128; vitc's GPSA/SP-SA in the
   formulation chosen on the GPU), inference (timm eager vs vitc compiled, batch 1/64), and with
   torch.compile DeiT-S/ConViT-S at batch 256 with their share of the H200's bf16 peak.
3. train: docs/feed_timing.py (would a worker thread hide DeiT's augmentation launches behind the
   step's?); `vitc train --device cuda` throughput per family (224×224 digits, bf16 AMP, and
   convit_tiny in fp32 for the AMP ratio; last, deit_tiny on 2,048 streamed JPEGs decoded by
   run.workers' default): step img/s, the feed's data wait, warm-up, evaluation, the chosen attention
   formulation; then the feed's GPU-only tests.
4. inference: docs/inference_ablation.py (~90 s): compiled cvt_13 with CvT's k/v convs merged or apart,
   ± SDPA, ± CUDA graphs, ± torch.compile while time lasts, fp16 and fp32, batch 8/64; compiled
   convit_tiny vs timm's deit_tiny_patch16_224 (± CUDA graphs) at batch 1/64.
5. train_ratios: issue 13's training-step throughput per GMAC and activations against DeiT of the
   same size (docs/training_timing.py: reference and fused GPSA/SP-SA, interleaved rounds; in bf16
   also fused_dense, flex and the formulation chosen on the GPU), 224×224, bf16 autocast and fp32.
6. torch_bench: `vitc bench --compare` of deit_tiny, convit_tiny, cvt_13 and spvit_s (uncompiled vs
   vitc-compiled, so each family is also compared with DeiT) on CUDA, fp32 and fp16 autocast,
   batch 1/8/64, runners interleaved round-robin (`--rounds`).
7. cuda_layer: vitc.engines.cuda on the real GPU: the bindings chosen for this driver, pinned buffers,
   copies of exactly nbytes (sentinels after them stay untouched), events, graph capture and replay.
8. tensorrt: `pytest -m tensorrt tests/engines` where TensorRT imports; skipped ("not run", with the reason)
   when pytest collects none of them or every one skips itself (no TensorRT or no GPU there).

Needs beyond CUDA PyTorch: numpy, typer, rich, safetensors (vitc's core, run from this checkout);
scikit-learn (digits, for train); cuda-python matching the driver (`cuda-python>=12.6,<13` for a
CUDA 12 driver, `>=13,<14` for CUDA 13) or pycuda (cuda_layer); tensorrt, onnx, onnxruntime and
onnxscript (tensorrt). The machine has no registry: download wheels where there is one
(`pip download -d wheels typer rich safetensors scikit-learn 'cuda-python>=12.6,<13'`) and pass
`--wheelhouse wheels` (the lent image has all but TensorRT). Writes gpu_check.json and gpu_check.md to
--report-dir (default --out, train/runs/gpu_check).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CORE = ("numpy", "typer", "rich", "safetensors")
NEEDS = {
    "torch_bench": ("torch", *CORE),
    "train": ("torch", "sklearn", *CORE),
    "train_ratios": ("torch", *CORE),
    "peers": ("torch", "timm", *CORE),
    "inference": ("torch", *CORE),  # its timm part is skipped, with the reason, where timm is missing
    "cuda_layer": CORE,
    "tensorrt": ("tensorrt", "onnx", "onnxruntime", "onnxscript", "pytest", *CORE),
}
WHEEL_NAMES = {"sklearn": "scikit-learn", "cuda": "cuda-python"}
MIN_SECTION_S = 20.0  # a section started with less would only be stopped
sys.path.insert(0, str(ROOT / "docs"))  # gpu_check_plans beside this file, also when loaded by path
from gpu_check_plans import DRY, FULL  # noqa: E402  (the plans: what each section runs, on a GPU and dry)
from gpu_check_report import markdown  # noqa: E402  (gpu_check.md from the result)


def has(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def missing(section: str) -> list[str]:
    return [m for m in NEEDS[section] if not has(m)]


def vitc_cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "vitc.cli.main", *args]


def run(cmd: list[str], timeout: float, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env, check=False)


# -- sections ----------------------------------------------------------------------------------------
def environment(plan: dict[str, Any], out: Path, budget: float) -> dict[str, Any]:
    from vitc.engines.platform import cpu_model

    facts: dict[str, Any] = {"python": platform.python_version(), "machine": platform.machine(), "cpu": cpu_model()}
    # the device tool sends the working tree without .git, and its image has no git: the command passes it
    git = run(["git", "rev-parse", "HEAD"], 10) if shutil.which("git") and (ROOT / ".git").exists() else None
    facts["vitc_commit"] = os.environ.get("VITC_COMMIT") or (git.stdout.strip() if git else None) or None
    if has("torch"):
        import torch

        facts["torch"] = torch.__version__
        facts["torch_cuda"] = torch.version.cuda
        if torch.cuda.is_available():
            facts["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            facts["compute_capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
    nvidia_smi = shutil.which("nvidia-smi") or next(
        (str(p) for p in (Path("/usr/local/nvidia/bin/nvidia-smi"),) if p.exists()), None
    )  # the lent machines mount the driver's folder at /usr/local/nvidia
    smi = run([nvidia_smi, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"], 20) if (
        nvidia_smi) else None  # fmt: skip
    facts["nvidia_smi"] = smi.stdout.strip() if smi else None
    if plan["device"] == "cuda":  # what the MFU figures' 790 TFLOP/s stands for on this GPU
        facts["bf16_matmul_tflops"] = round(bf16_matmul_tflops(), 1)
    facts["missing"] = {s: missing(s) for s in NEEDS if missing(s)}
    return facts


def bf16_matmul_tflops(n: int = 8192, reps: int = 10) -> float:
    """An n³ bf16 matrix product's rate on random data, mean of `reps` after three warm-ups (how this
    workplace measured 788 TFLOP/s on its H200 and 798 on its H100)."""
    import torch

    a, b = (torch.randn(n, n, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        a @ b
    end.record()
    torch.cuda.synchronize()
    return 2 * n**3 * reps / (start.elapsed_time(end) / 1e3) / 1e12


def torch_bench(plan: dict[str, Any], out: Path, budget: float) -> dict[str, Any]:
    results: dict[str, Any] = {}
    models = [a for m in plan["bench_models"] for a in ("-m", m)]
    deadline = time.monotonic() + budget
    for i, precision in enumerate(plan["precisions"]):
        stem = out / f"bench_{precision}"
        cmd = vitc_cli("bench", *models, "--compare", "--device", plan["device"], "--autocast", precision,
                       *plan["bench_args"], "--json", f"{stem}.json", "--markdown", f"{stem}.md")  # fmt: skip
        try:
            proc = run(cmd, (deadline - time.monotonic()) / (len(plan["precisions"]) - i))
        except subprocess.TimeoutExpired as exc:
            results[precision] = {"skipped": "time budget spent (the run was stopped)", "output": _tail(exc.stdout)}
            continue
        if proc.returncode != 0:
            raise RuntimeError(f"vitc bench ({precision}) exited {proc.returncode}: {proc.stderr.strip()[-600:]}")
        results[precision] = {"command": "vitc " + " ".join(cmd[3:]), "markdown": Path(f"{stem}.md").read_text(),
                              "figures": json.loads(Path(f"{stem}.json").read_text())}  # fmt: skip
    return results


def inference(plan: dict[str, Any], out: Path, budget: float) -> dict[str, Any]:
    """docs/inference_ablation.py in its own process: its cells get 60% of the budget (model loading, the
    compile checks and the timm import take more), a run stopped at 80% keeps what it wrote; then, in the
    time left, `vitc bench --cuda-graph` end to end (the PyTorch runner's CUDA-graph path)."""
    settings = plan["inference"]
    deadline = time.monotonic() + budget
    cells_s = min(settings["budget_s"], 0.6 * budget)
    args = ["--device", plan["device"], *settings["args"].split(), "--budget-s", f"{cells_s:.0f}"]
    path = out / "inference.json"
    path.unlink(missing_ok=True)
    cmd = [sys.executable, str(ROOT / "docs" / "inference_ablation.py"), *args, "--json", str(path)]
    stopped = None
    try:
        proc = run(cmd, 0.8 * budget)
        if proc.returncode != 0:
            raise RuntimeError(f"inference_ablation exited {proc.returncode}: {proc.stderr.strip()[-600:]}")
    except subprocess.TimeoutExpired:
        stopped = f"stopped at the section's budget ({budget:.0f} s)"
        if not path.exists():
            raise RuntimeError(f"inference_ablation {stopped}, before its first tables") from None
    figures = json.loads(path.read_text())
    markdown = figures["markdown"] + (f"\n({stopped}: the torch.compile cells are missing)\n" if stopped else "")
    section: dict[str, Any] = {"ablation": {"command": "python docs/inference_ablation.py " + " ".join(args),
                               "markdown": markdown, "cvt": figures["cvt"], "convit": figures.get("convit"),
                               "stopped": stopped}}  # fmt: skip
    if settings.get("bench"):
        stem = out / "bench_cuda_graph"
        cmd = vitc_cli("bench", *settings["bench"].split(), "--json", f"{stem}.json", "--markdown", f"{stem}.md")
        command = "vitc " + " ".join(cmd[3:])
        try:
            proc = run(cmd, max(1.0, deadline - time.monotonic()))
            if proc.returncode != 0:
                raise RuntimeError(f"{command} exited {proc.returncode}: {proc.stderr.strip()[-600:]}")
            section["cuda_graph_bench"] = {"command": command, "markdown": Path(f"{stem}.md").read_text(),
                                           "figures": json.loads(Path(f"{stem}.json").read_text())}  # fmt: skip
        except subprocess.TimeoutExpired:
            section["cuda_graph_bench"] = {"skipped": f"{command}: stopped at the section's budget"}
    return section


def train(plan: dict[str, Any], out: Path, budget: float) -> dict[str, Any]:
    import torch

    from vitc.train.config import load_config
    from vitc.train.device import pick_workers
    from vitc.train.loop import train as run_training

    rows = []
    deadline = time.monotonic() + budget
    try:  # first: 60 short steps, where the runs below may overrun the share; a failure here loses only its table
        feed = feed_timing(plan["feed_timing"])
    except Exception as exc:
        feed = {"command": f"python docs/feed_timing.py {plan['feed_timing']}", "error": f"{type(exc).__name__}: {exc}"}
    for i, (model, amp, *recipe) in enumerate(plan["train"]):
        settings = " ".join(recipe)
        label = model + (" (DeiT's augmentation)" if recipe else "")
        if "@photos" in settings:  # a JPEG folder that streams, decoded by run.workers' default for the device
            label = f"{model} (streamed JPEGs, {pick_workers(None, torch.device(plan['device']))} workers)"
        if time.monotonic() > deadline:
            rows.append({"model": label, "amp": amp, "skipped": "time budget spent"})
            continue
        if "@photos" in settings:
            settings = settings.replace("@photos", str(photo_folder(out, plan["photos"])))
        sets = dict(item.split("=", 1) for item in plan["train_set"] + settings.split())
        overrides: dict[str, Any] = {k: json.loads(v) for k, v in sets.items()}
        overrides |= {"model.name": model, "run.amp": amp, "run.device": plan["device"],
                      "run.out_dir": str(out / "runs"), "run.name": f"{model}_{amp}_{i}"}  # fmt: skip
        cfg = load_config(None, overrides)
        result = run_training(cfg, show_progress=False, force=True)
        # where the time goes (vitc.train.meter): the steps alone, the device's wait for the feed, the
        # first step (warm-up), evaluation; train_images_per_s counts the waits and the warm-up too
        timing = {k: round(v, 3) if isinstance(v, float) else v for k, v in result.timing.items()}
        rows.append({"model": label, "amp": amp, "train_images_per_s": round(result.train_images_per_s, 1),
                     "epochs": len(result.history), "seconds": round(result.seconds, 1),
                     "test_top1": result.test.get("top1"), **timing,
                     "attention": [row["chosen"] for row in result.attention or []]})  # fmt: skip
    section: dict[str, Any] = {"settings": plan["train_set"], "rows": rows, "feed_timing": feed}
    if plan["device"] == "cuda" and time.monotonic() < deadline:  # the feed's GPU-only tests (side stream, copies)
        section["feed_tests"] = "skipped: pytest is not installed"
        with contextlib.suppress(subprocess.TimeoutExpired):
            if has("pytest"):
                section["feed_tests"] = "timed out after 60 s"
                tests = ["-q", "-p", "no:cacheprovider", "-k", "cuda", "tests/train/test_feed_overlap.py",
                         "tests/data/test_colour_on_device.py"]  # fmt: skip
                proc = run([sys.executable, "-m", "pytest", *tests], 60)  # six short CUDA tests
                section["feed_tests"] = (proc.stdout.strip().splitlines() or [""])[-1] + f" (exit {proc.returncode})"
    return section


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


def train_ratios(plan: dict[str, Any], out: Path, budget: float) -> dict[str, Any]:
    timing = doc_script("training_timing")
    settings = plan["ratios"]
    groups, img = (timing.GROUPS_MICRO, 32) if settings["micro"] else (timing.GROUPS_224, 224)
    results: dict[str, Any] = {}
    deadline = time.monotonic() + budget
    for amp in settings["amps"]:
        if time.monotonic() > deadline:
            results[amp] = {"skipped": "time budget spent"}
            continue
        opts = argparse.Namespace(
            device=plan["device"], amp=amp, seed=0, every_form=amp in settings.get("every_form", ()),
            **{k: settings[k] for k in ("rounds", "steps", "warmup")},
        )  # fmt: skip
        rows = timing.measure(groups, img, settings["batch"], opts)
        micro = (" --micro" if settings["micro"] else "") + (" --every-form" if opts.every_form else "")
        command = (f"python docs/training_timing.py --device {plan['device']} --amp {amp} --batch {settings['batch']}"
                   f" --rounds {opts.rounds} --steps {opts.steps} --warmup {opts.warmup}{micro}")  # fmt: skip
        results[amp] = {
            "command": command,
            "markdown": timing.markdown(rows, img, settings["batch"], opts),
            "rows": rows,
        }
    return results


def peers(plan: dict[str, Any], out: Path, budget: float) -> dict[str, Any]:
    """docs/peer_timing.py runs, each in its own process with its share of the time left; then, if
    time is left, the operators of one step and one compiled forward counted on the device itself."""
    results: dict[str, Any] = {}
    deadline = time.monotonic() + budget
    for i, (key, share) in enumerate(plan["peers"]):
        args = key.split()
        left = deadline - time.monotonic()
        if left < 20:
            results[key] = {"skipped": "time budget spent"}
            continue
        stem = out / f"peers_{i}"
        cmd = [sys.executable, str(ROOT / "docs" / "peer_timing.py"), *args, "--json", f"{stem}.json"]
        Path(f"{stem}.json").unlink(missing_ok=True)
        try:
            proc = run(cmd, left * share)
        except subprocess.TimeoutExpired as exc:  # the training table survives a stop in the inference rows
            results[key] = {"skipped": "time budget spent (the run was stopped)", "output": _tail(exc.stdout)}
            if Path(f"{stem}.json").exists():
                figures = json.loads(Path(f"{stem}.json").read_text())
                results[key] |= {"markdown": figures["markdown"], "train": figures["train"], "infer": []}
            continue
        if proc.returncode != 0:
            raise RuntimeError(f"peer_timing {key} exited {proc.returncode}: {proc.stderr.strip()[-600:]}")
        figures = json.loads(Path(f"{stem}.json").read_text())
        results[key] = {"command": "python docs/peer_timing.py " + key, "markdown": figures["markdown"],
                        "equal_weights": [ln for ln in proc.stdout.splitlines() if "max |Δ logits|" in ln],
                        "operators": [ln for ln in proc.stdout.splitlines() if ln.startswith(("operators", "    "))],
                        "train": figures["train"], "infer": figures["infer"]}  # fmt: skip
    for i, args in enumerate(plan["operator_counts"]):  # beside the CPU's counts (docs/benchmarks.md)
        counts = ["--device", plan["device"], *args.split()]
        key, left = f"operators {i + 1}", deadline - time.monotonic()
        if left < 15:
            results[key] = {"skipped": "time budget spent"}
            continue
        try:
            proc = run([sys.executable, str(ROOT / "docs" / "operator_counts.py"), *counts], left / 2)
        except subprocess.TimeoutExpired:
            results[key] = {"skipped": "time budget spent (the run was stopped)"}
            continue
        if proc.returncode != 0:
            raise RuntimeError(f"operator_counts exited {proc.returncode}: {proc.stderr.strip()[-600:]}")
        results[key] = {"command": "python docs/operator_counts.py " + " ".join(counts), "markdown": proc.stdout}
    return results


def _tail(output: str | bytes | None, lines: int = 15) -> list[str]:
    """The last lines a stopped subprocess printed (what it had measured)."""
    text = output.decode(errors="replace") if isinstance(output, bytes) else output or ""
    return text.strip().splitlines()[-lines:]


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
        graph_ok: bool | str = "pycuda: no graphs"
        if cuda.kind == "cuda-python":
            graph = CudaGraph(stream)
            graph.begin()
            stream.htod(dev, src, used * 4)
            stream.dtoh(dst, dev, used * 4)
            graph.end()
            replays = []
            for value in (5.0, 7.0):  # each replay copies the host buffer's current contents
                src.array[:] = value
                graph.launch()
                stream.synchronize()
                replays.append(bool((dst.array[:used] == value).all() and (dst.array[used:] == -1.0).all()))
            graph.destroy()
            graph_ok = all(replays)
        for obj in (src, dst, dev):
            obj.free()
        for event in (start, end):
            event.destroy()
        stream.destroy()
    return {"bindings": choice, "copy_bytes": used * 4, "buffer_bytes": capacity * 4, "exact_nbytes": exact,
            "h2d_d2h_ms": round(copy_s * 1e3, 4), "graph_replay_ok": graph_ok, "note": note}  # fmt: skip


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


SECTIONS: dict[str, tuple[Callable[[dict[str, Any], Path, float], dict[str, Any]], float]] = {
    # name: (function, share of the time budget)
    # issue 20's targets first (peers, then the feed and the inference ablation), so that a section
    # that overruns its share takes time from the older checks rather than from them
    "environment": (environment, 0.02),
    "peers": (peers, 0.4),  # timm side by side (timm is on the lent machine; TensorRT is not)
    "train": (train, 0.14),
    "inference": (inference, 0.17),  # ~90 s of the 480
    "train_ratios": (train_ratios, 0.10),
    "torch_bench": (torch_bench, 0.14),
    "cuda_layer": (cuda_layer, 0.03),
    "tensorrt": (tensorrt, 0.25),  # builds engines of a freshly trained micro model
}


# -- driver -------------------------------------------------------------------------------------------
def install_wheels(folder: Path) -> list[str]:
    """pip install, from `folder` only, the pure-Python packages some section lacks."""
    wanted = sorted({WHEEL_NAMES.get(m, m) for s in NEEDS for m in missing(s) if m not in ("torch", "tensorrt")})
    if not (has("cuda") or has("pycuda")):
        wanted.append("cuda-python")  # the wheel carried in decides which (match it to the driver)
    if wanted:
        cmd = [sys.executable, "-m", "pip", "install", "--no-index", "--find-links", str(folder), *wanted]
        subprocess.run(cmd, check=False)
        importlib.invalidate_caches()
    return wanted


def gpu_ready() -> str | None:
    """None when CUDA PyTorch sees a GPU, else why not."""
    if not has("torch"):
        return "torch is not installed"
    import torch

    return None if torch.cuda.is_available() else f"torch {torch.__version__} sees no CUDA GPU"


def check(
    plan: dict[str, Any], out: Path, budget: float, only: list[str], report_dir: Path | None = None
) -> dict[str, Any]:
    """Each section in turn with its share of `budget` (1.5× while time is left; none once it is spent),
    the report rewritten after each, so that a run stopped at the device's limit keeps what it measured."""
    out.mkdir(parents=True, exist_ok=True)
    report_dir = report_dir or out
    report_dir.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    result: dict[str, Any] = {"dry_run": plan["device"] != "cuda", "budget_s": budget, "sections": {}}
    started = time.monotonic()
    for name, (fn, share) in SECTIONS.items():
        if only and name not in only:
            continue
        lacking = [] if name == "environment" else missing(name)
        if name == "cuda_layer" and plan["device"] == "cuda" and not (has("cuda") or has("pycuda")):
            lacking.append("cuda-python or pycuda")
        section: dict[str, Any] = {"status": "skipped", "reason": "needs " + ", ".join(lacking)} if lacking else {}
        left = budget - (time.monotonic() - started)
        if not lacking and left < MIN_SECTION_S and name != "environment":
            section = {"status": "skipped", "reason": f"time budget spent ({left:.0f} s of {budget:.0f} s left)"}
        elif not lacking:
            t0 = time.monotonic()
            try:
                section = {"status": "ok", **fn(plan, out, max(MIN_SECTION_S, min(left, share * budget * 1.5)))}
            except Exception as exc:  # one failing section must not lose the others' figures
                section = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}",
                           "traceback": traceback.format_exc()[-2000:]}  # fmt: skip
            section["seconds"] = round(time.monotonic() - t0, 1)
        result["sections"][name] = section
        print(f"{name}: {section['status']} {section.get('reason', '')}", flush=True)
        result["seconds"] = round(time.monotonic() - started, 1)
        write_report(result, report_dir)
    return result


def write_report(result: dict[str, Any], folder: Path) -> None:
    """gpu_check.json and gpu_check.md, each replaced whole (a stop mid-write leaves the last complete one)."""
    texts = {"gpu_check.json": json.dumps(result, indent=2, default=str), "gpu_check.md": markdown(result)}
    for name, text in texts.items():
        part = folder / f".{name}.part"
        part.write_text(text)
        part.replace(folder / name)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "train" / "runs" / "gpu_check", help="runs, photos, tables")
    ap.add_argument("--report-dir", type=Path, help="gpu_check.json and .md (default: --out); the device tool: $OUT")
    ap.add_argument("--budget-s", type=float, default=480.0, help="time for all sections (default 480 s)")
    ap.add_argument("--dry-run", action="store_true", help="CPU, micro models, fake CUDA bindings: the plumbing")
    ap.add_argument("--only", action="append", default=[], choices=list(SECTIONS), help="run only these sections")
    ap.add_argument("--wheelhouse", type=Path, help="install missing pure-Python deps from this folder first")
    args = ap.parse_args(argv)
    if args.wheelhouse:
        print("installed from the wheelhouse:", install_wheels(args.wheelhouse) or "nothing needed")
    if not args.dry_run and (why := gpu_ready()):
        print(f"gpu-check needs CUDA PyTorch and a GPU: {why} (--dry-run checks the plumbing on CPU)")
        return 2
    result = check(DRY if args.dry_run else FULL, args.out, args.budget_s, args.only, args.report_dir)
    print(f"wrote {(args.report_dir or args.out) / 'gpu_check.md'} and gpu_check.json ({result['seconds']} s)")
    return 1 if any(s["status"] == "failed" for s in result["sections"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
