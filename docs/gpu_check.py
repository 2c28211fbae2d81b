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
rewritten after every sub-run (a peer run, a training run, a precision), so a run stopped at the limit
keeps what it measured; `timeout`'s SIGTERM writes them once more, the section it stopped marked "killed".

Sections, in the order they run (each is skipped, with the reason, when what it needs is missing; the
cheap, decisive check first, then issue 20's targets; docs/gpu_check_sections.py has their code). Each
gets its share of the budget (the shares of the sections that will run, normalised to the budget), plus
what the sections before it left unused, never the shares reserved for the sections after it:
1. environment: GPU, driver, torch/CUDA versions, vitc commit, CPU model, what is missing.
2. cuda_layer: vitc.engines.cuda on the real GPU (under a second): the bindings chosen for this driver,
   pinned buffers, copies of exactly nbytes (sentinels after them stay untouched), events, graph capture
   and replay (or why the graph could not be instantiated).
3. peers: docs/peer_timing.py, vitc beside timm (installed on the lent machine), each run in its own
   process with its share of the section's time left (skipped where that is under 30 s): training per
   GMAC vs timm's DeiT of the same size in bf16, then fp32 (batch 128; vitc's GPSA/SP-SA in the
   formulation chosen on the GPU), then with torch.compile DeiT-S/ConViT-S at batch 256 with their share
   of the H200's bf16 peak, then the Ti models under CUDA graphs; last, docs/operator_counts.py on the GPU.
4. train: docs/feed_timing.py (would a worker thread hide DeiT's augmentation launches behind the
   step's?); `vitc train --device cuda` throughput per family, each run in its own process (stopped at
   the section's end): 224×224 digits, bf16 AMP; second, deit_tiny on 2,048 streamed JPEGs decoded by
   run.workers' default (the only real-decode feed); convit_tiny in fp32 for the AMP ratio; last, where
   time is left, DeiT's augmentation recipe: step img/s, the feed's data wait, warm-up, evaluation, the
   chosen attention formulation; then the feed's GPU-only tests.
5. inference: docs/inference_ablation.py: first compiled convit_tiny vs timm's deit_tiny_patch16_224
   (± CUDA graphs) at batch 1/64 (issue 20's ConViT-Ti target); then compiled cvt_13 with CvT's k/v convs
   merged or apart, ± SDPA, ± CUDA graphs, fp16 and fp32, batch 8/64; last, cvt_13 ± torch.compile
   (fp16, batch 64) in its reserved time.
6. train_ratios: issue 13's training-step throughput per GMAC and activations against DeiT of the
   same size (docs/training_timing.py, a process per precision stopped at the end of its share:
   reference and fused GPSA/SP-SA, interleaved rounds; in bf16 also fused_dense, flex and the
   formulation chosen on the GPU), 224×224, bf16 autocast and fp32.
7. torch_bench: `vitc bench --compare` of deit_tiny, convit_tiny, cvt_13 and spvit_s (uncompiled vs
   vitc-compiled, so each family is also compared with DeiT) on CUDA, fp32 and fp16 autocast,
   batch 1/8/64, runners interleaved round-robin (`--rounds`).
8. tensorrt: `pytest -m tensorrt tests/engines` where TensorRT imports; skipped ("not run", with the reason)
   when pytest collects none of them or every one skips itself (no TensorRT or no GPU there).

A section reads "ok" only where none of its sub-runs failed: "partial" where some did, "failed" where
every one that ran did (the check then exits 1), the first failure as its reason.

Needs beyond CUDA PyTorch: numpy, typer, rich, safetensors (vitc's core, run from this checkout);
scikit-learn (digits) and matplotlib (vitc train's curves.png) for train; cuda-python
matching the driver (`cuda-python>=12.6,<13` for a CUDA 12 driver, `>=13,<14` for CUDA 13) or pycuda
(cuda_layer); tensorrt, onnx, onnxruntime and onnxscript (tensorrt). The machine has no registry:
download wheels where there is one (`pip download -d wheels typer rich safetensors scikit-learn
matplotlib 'cuda-python>=12.6,<13'`) and pass `--wheelhouse wheels` (the lent image has all but
TensorRT). Writes gpu_check.json and gpu_check.md to
--report-dir (default --out, train/runs/gpu_check).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CORE = ("numpy", "typer", "rich", "safetensors")
NEEDS = {
    "torch_bench": ("torch", *CORE),
    "train": ("torch", "sklearn", "matplotlib", *CORE),  # vitc train draws curves.png (and checks at its start)
    "train_ratios": ("torch", *CORE),
    "peers": ("torch", "timm", *CORE),
    "inference": ("torch", *CORE),  # its timm part is skipped, with the reason, where timm is missing
    "cuda_layer": CORE,
    "tensorrt": ("tensorrt", "onnx", "onnxruntime", "onnxscript", "pytest", *CORE),
}
WHEEL_NAMES = {"sklearn": "scikit-learn", "cuda": "cuda-python"}
# the device command's `timeout 590` less 60 s: the in-process parts a section cannot stop (the feed
# measurement, writing the photos, the report) and Python's start; every sub-run is stopped at its time
BUDGET_S = 530.0
MIN_SECTION_S = 20.0  # a section handed less (and less than its share) would only be stopped
sys.path.insert(0, str(ROOT / "docs"))  # the modules beside this file, also when loaded by path
import gpu_check_sections as sections  # noqa: E402  (what each section runs)
from gpu_check_plans import DRY, FULL  # noqa: E402  (the plans: what each section runs, on a GPU and dry)
from gpu_check_report import markdown  # noqa: E402  (gpu_check.md from the result)
from gpu_check_sections import has, run  # noqa: E402


def missing(section: str) -> list[str]:
    return [m for m in NEEDS[section] if not has(m)]


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


def bf16_matmul_tflops(n: int = 8192, groups: int = 7, reps: int = 5, warmup_s: float = 0.1) -> float:
    """An n³ bf16 matrix product's rate on random data (how this workplace measured 788 TFLOP/s on its H200
    and 798 on its H100): after `warmup_s` of products (clocks up, cuBLAS's kernel chosen), the median of
    `groups` event-timed groups of `reps`, so that one stalled group or a clock change moves no figure."""
    import torch

    a, b = (torch.randn(n, n, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    warm_until = time.monotonic() + warmup_s
    while time.monotonic() < warm_until:
        a @ b
        torch.cuda.synchronize()
    rates = []
    for _ in range(groups):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(reps):
            a @ b
        end.record()
        end.synchronize()
        rates.append(2 * n**3 * reps / (start.elapsed_time(end) / 1e3) / 1e12)
    return statistics.median(rates)


SECTIONS: dict[str, tuple[Callable[[dict[str, Any], Path, float], dict[str, Any]], float]] = {
    # name: (function, share of the time budget; the shares of the sections that run are normalised)
    # the cheap, decisive check first, then issue 20's targets (peers, the feed, the inference ablation)
    "environment": (environment, 0.02),
    "cuda_layer": (sections.cuda_layer, 0.04),  # under a second; the only real-driver check of vitc.engines.cuda
    "peers": (sections.peers, 0.30),  # timm side by side (timm is on the lent machine; TensorRT is not)
    "train": (sections.train, 0.14),
    "inference": (sections.inference, 0.24),  # the ablation's cells, its torch.compile cell's reserve, the graph bench
    "train_ratios": (sections.train_ratios, 0.11),
    "torch_bench": (sections.torch_bench, 0.15),
    "tensorrt": (sections.tensorrt, 0.20),  # builds engines of a freshly trained micro model
}


def section_budget(left: float, cap: float, reserved: float) -> float:
    """What a section may take: all that is `left` but the caps `reserved` for the sections after it (so
    its own cap plus what earlier sections left unused); once an overrun has eaten into those, its
    proportional share of what is left."""
    return max(left - reserved, left * cap / (cap + reserved)) if cap + reserved > 0 else left


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


def _lacking(name: str, plan: dict[str, Any]) -> list[str]:
    lacking = [] if name == "environment" else missing(name)
    if name == "cuda_layer" and plan["device"] == "cuda" and not (has("cuda") or has("pycuda")):
        lacking.append("cuda-python or pycuda")
    return lacking


class _Running:
    """The section running now and what it has reported, for the report a stop signal writes."""

    def __init__(self, result: dict[str, Any], folder: Path) -> None:
        self.result, self.folder, self.name, self.t0 = result, folder, "", 0.0
        self.check_t0 = time.monotonic()  # the check's start: the report's total

    def start(self, name: str) -> None:
        self.name, self.t0 = name, time.monotonic()

    def progress(self, partial: dict[str, Any]) -> None:
        """A sub-run finished: the report gets the section so far."""
        self.result["sections"][self.name] = {"status": "running", **partial, "seconds": self.elapsed()}
        save(self.result, self.folder)

    def elapsed(self) -> float:
        return round(time.monotonic() - self.t0, 1)

    def killed(self, why: str) -> None:
        """The report once more, the running section marked with what stopped it."""
        name = self.name or "the check"
        section = self.result["sections"].get(self.name, {})
        marked = {**section, "status": "killed", "reason": f"{why} during {name}", "seconds": self.elapsed()}
        if self.name:
            self.result["sections"][self.name] = marked
        self.result["killed"] = marked["reason"]
        self.result["seconds"] = round(time.monotonic() - self.check_t0, 1)  # the header's total, to the stop
        save(self.result, self.folder)

    def on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: a second one must not cut this report short
        self.killed(f"killed by {signal.Signals(signum).name}")
        raise SystemExit(128 + signum)


def check(
    plan: dict[str, Any], out: Path, budget: float, only: list[str], report_dir: Path | None = None
) -> dict[str, Any]:
    """Each section in turn with its budget (section_budget), the report rewritten after each sub-run, so
    that a run stopped at the device's limit keeps what it measured; SIGTERM writes it once more."""
    out.mkdir(parents=True, exist_ok=True)
    report_dir = report_dir or out
    report_dir.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    result: dict[str, Any] = {"dry_run": plan["device"] != "cuda", "budget_s": budget, "sections": {}}
    wanted = [name for name in SECTIONS if not only or name in only]
    runnable = [name for name in wanted if not _lacking(name, plan)]
    total = sum(SECTIONS[name][1] for name in runnable) or 1.0
    caps = {name: SECTIONS[name][1] / total * budget for name in runnable}
    running = _Running(result, report_dir)
    main_thread = threading.current_thread() is threading.main_thread()
    before = signal.signal(signal.SIGTERM, running.on_sigterm) if main_thread else None
    sections.listener = running.progress
    started = running.check_t0
    try:
        for name in wanted:
            _run_section(name, plan, out, budget, started, caps, running)
            running.start("")  # between sections: a stop marks none of them
            print(f"{name}: {result['sections'][name]['status']} {result['sections'][name].get('reason', '')}",
                  flush=True)  # fmt: skip
            result["seconds"] = round(time.monotonic() - started, 1)
            save(result, report_dir)
    finally:
        sections.listener = None
        if main_thread and before is not None:  # None: a handler set outside Python, which stays
            signal.signal(signal.SIGTERM, before)
    return result


def _run_section(
    name: str, plan: dict[str, Any], out: Path, budget: float, started: float, caps: dict[str, float], running: _Running
) -> None:
    fn = SECTIONS[name][0]
    lacking = _lacking(name, plan)
    section: dict[str, Any] = {"status": "skipped", "reason": "needs " + ", ".join(lacking)} if lacking else {}
    later = list(caps)[list(caps).index(name) + 1 :] if name in caps else []
    left = budget - (time.monotonic() - started)
    given = section_budget(left, caps.get(name, 0.0), sum(caps[n] for n in later))
    if not lacking and given < min(MIN_SECTION_S, caps[name]) and name != "environment":
        section = {"status": "skipped", "reason": f"time budget spent ({left:.0f} s of {budget:.0f} s left)"}
    elif not lacking:
        running.start(name)
        running.result["sections"][name] = {"status": "running", "budget_s": round(given, 1)}
        save(running.result, running.folder)  # even a SIGKILL then leaves which section it stopped
        try:
            section = {"status": "ok", **fn(plan, out, given)}
            failures = failed_sub_runs(section) if section["status"] == "ok" else None
            if failures:
                section["status"], section["reason"] = failures
        except KeyboardInterrupt:
            running.killed("interrupted (Ctrl-C)")
            raise
        except Exception as exc:  # one failing section must not lose the others' figures
            if sections.stopping(exc):  # vitc train took the signal itself and saved its run
                running.killed(f"killed ({exc})")
                raise SystemExit(getattr(exc, "exit_code", 143)) from exc
            partial = running.result["sections"].get(name, {})
            section = {**partial, "status": "failed", "reason": f"{type(exc).__name__}: {exc}",
                       "traceback": traceback.format_exc()[-2000:]}  # fmt: skip
        section["budget_s"] = round(given, 1)
        section["seconds"] = running.elapsed()
    running.result["sections"][name] = section


def failed_sub_runs(section: dict[str, Any]) -> tuple[str, str] | None:
    """("failed", why) where every sub-run that ran failed (a peer run, a precision, a training row, the feed
    measurement), ("partial", why) where some did; None where none did: such a section is not "ok"."""
    runs = [part for part in section.values() if isinstance(part, dict) and "command" in part]
    ran = [part for part in runs + list(section.get("rows", [])) if not part.get("skipped")]
    bad = [part.get("failed") or part.get("error") for part in ran if part.get("failed") or part.get("error")]
    if not bad:
        return None
    why = f"{len(bad)} of {len(ran)} sub-runs failed; the first: {bad[0]}"
    return ("failed" if len(bad) == len(ran) else "partial"), why


def save(result: dict[str, Any], folder: Path) -> None:
    """write_report that never ends the check: a report that cannot be written says why in the JSON."""
    try:
        write_report(result, folder)
    except Exception as exc:
        result["report_error"] = f"{type(exc).__name__}: {exc}"
        print(f"the report could not be written: {result['report_error']}", flush=True)


def write_report(result: dict[str, Any], folder: Path) -> None:
    """gpu_check.json and gpu_check.md, each replaced whole (a stop mid-write leaves the last complete one);
    a markdown that fails leaves the JSON whole, with the error in it."""
    try:
        text = markdown(result)
    except Exception as exc:
        result["report_error"] = f"gpu_check.md: {type(exc).__name__}: {exc}"
        text = f"# vitc GPU check\n\n{result['report_error']}; gpu_check.json has every figure.\n"
    texts = {"gpu_check.json": json.dumps(result, indent=2, default=str), "gpu_check.md": text}
    for name, text in texts.items():
        part = folder / f".{name}.part"
        part.write_text(text)
        part.replace(folder / name)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "train" / "runs" / "gpu_check", help="runs, photos, tables")
    ap.add_argument("--report-dir", type=Path, help="gpu_check.json and .md (default: --out); the device tool: $OUT")
    ap.add_argument("--budget-s", type=float, default=BUDGET_S, help=f"for all sections (default {BUDGET_S:.0f} s)")
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
