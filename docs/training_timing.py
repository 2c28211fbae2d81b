"""Training-step throughput and activation memory of ConViT, SP-ViT and CvT against DeiT of their size.

A measurement aid for docs/benchmarks.md ("Training throughput"), not part of vitc. One step is a
forward in training mode, cross-entropy, backward and an AdamW step, on fixed random images, fp32
unless `--amp bf16|fp16`, on `--device` (cpu or cuda; docs/gpu_check.py runs this on a lent GPU).
ConViT and SP-ViT run twice: `attn_impl="reference"` (the research formulation) and `"fused"` (the
default), with the same weights; `--every-form` adds GPSA's `fused_dense`, SP-SA's `flex` and
`chosen`, the formulation vitc.models.formulation picks on this device (what `vitc train` uses
on a GPU). Each round runs `--steps` steps of every variant in turn, so that load from other
processes hits all of them alike; img/s is batch over the median step time across
rounds. Per GMAC = (img/s × GMACs) / (DeiT's img/s × DeiT's GMACs), GMACs being one inference
forward at batch 1 (vitc.models._stats) of the reference formulation, for both formulations: the
architecture's cost, as in issue 13's table (the fused SP-SA skips 0.6 of SP-ViT-S's 7.16, so per
GMAC it actually performs, its ratio is 0.915× this).

With one thread (`--threads 1`), process CPU time per step is also reported: on a machine shared
with other processes it excludes the time the step waited for a core, so it varies less than the
wall clock (caches and memory bandwidth are still shared).

Activation memory is the size of the distinct storages autograd saves for backward during one
training forward (torch.autograd.graph.saved_tensors_hooks), parameters excluded: deterministic,
so it is measured once, outside the timed rounds.

    python docs/training_timing.py --threads 1 --batch 8 --rounds 5
    python docs/training_timing.py --threads 1 --batch 32 --rounds 3 --models spvit_s --fused-only
    python docs/training_timing.py --threads 1 --micro --batch 64 --rounds 7 --steps 3 --amp bf16
    python docs/training_timing.py --memory --batch 8

All variants of a run live in one process: at batch 32 split the models over several runs
(`--models`) and set MALLOC_MMAP_THRESHOLD_=65536 so that freed activations go back to the OS.
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext

import numpy as np
import torch
import torch.nn.functional as F

from vitc.models import convit, create_model
from vitc.models._stats import model_stats
from vitc.models.formulation import choose_formulations, describe
from vitc.train.setup import FUSED_ADAMW_ON

# (baseline, others) per size; the first of each group is the DeiT every ratio divides by.
GROUPS_224 = {"tiny": ("deit_tiny", "convit_tiny"), "small": ("deit_small", "convit_small", "spvit_s", "cvt_13")}
GROUPS_MICRO = {"micro": ("deit_micro", "convit_micro", "spvit_micro", "cvt_micro")}
TWO_FORMS = ("convit", "spvit")  # families with attn_impl


FORMS = ["reference", "fused"]  # --fused-only drops the reference runs (memory at batch 32)
# --every-form (gpu_check on CUDA) adds each module's other formulations and the one that
# vitc.models.formulation chooses on this device, at this batch and precision (as `vitc train` does).
EXTRA_FORMS = {"convit": ("fused_dense",), "spvit": ("flex",)}
CHOSEN = "chosen"


KEEP_SUBNORMALS = "keep_subnormals"  # --subnormals: a ConViT variant whose positional tables keep them


def variants(name: str, every_form: bool = False, device: str = "cpu") -> list[tuple[str, dict[str, object]]]:
    if not name.startswith(TWO_FORMS):
        return [(name, {})]
    extra = [*EXTRA_FORMS[name.split("_")[0]], CHOSEN] if every_form else []
    if device == "cpu":  # FlexAttention has no CPU backward
        extra = [form for form in extra if form != "flex"]
    forms: list[tuple[str, dict[str, object]]] = [
        (f"{name} {form}", {"attn_impl": form}) for form in [*FORMS, *extra] if form != KEEP_SUBNORMALS
    ]
    if KEEP_SUBNORMALS in FORMS and name.startswith("convit"):
        forms.append((f"{name} fused, subnormals kept", {"attn_impl": "fused", KEEP_SUBNORMALS: True}))
    return forms


@contextmanager
def subnormals_kept(keep: bool) -> Iterator[None]:
    """GPSA's tables as they were before vitc.models.layers.flush_subnormals (for --subnormals)."""
    if not keep:
        yield
        return
    flush = convit.flush_subnormals
    convit.flush_subnormals = lambda table: table
    try:
        yield
    finally:
        convit.flush_subnormals = flush


def architecture_gmacs(name: str, img: int) -> float:
    """GMACs of the reference formulation: one figure per architecture, as in the issue's table."""
    kwargs = {"attn_impl": "reference"} if name.startswith(TWO_FORMS) else {}
    return float(model_stats(name, img_size=img, **kwargs)["gmacs"])


PARTS = {
    "patch_embed": "stem",
    "attn": "attention",
    "mlp": "MLP",
    "norm1": "norms",
    "norm2": "norms",
    "pos_block": "PosCNN",
}


def saved_activation_bytes(model: torch.nn.Module, x: torch.Tensor) -> dict[str, int]:
    """Bytes of the distinct non-parameter storages saved for backward by one forward, by part.

    A storage counts once, for the innermost part (PARTS, by module name) that saved it first;
    the rest (position embedding, class token, final norm, head) is `other`.
    """
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, tuple[int, str]] = {}
    where = ["other"]
    for name, module in model.named_modules():
        part = PARTS.get(name.rsplit(".", 1)[-1])
        if part:
            module.register_forward_pre_hook(lambda m, a, part=part: where.append(part))
            module.register_forward_hook(lambda m, a, o: where.pop() and None)

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            seen.setdefault(storage.data_ptr(), (storage.nbytes(), where[-1]))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x).sum()
    parts = dict.fromkeys([*dict.fromkeys(PARTS.values()), "other"], 0)
    for nbytes, part in seen.values():
        parts[part] += nbytes
    return parts


class Variant:
    """One model in one formulation with its optimiser, input and a timed `step()`."""

    def __init__(
        self, name: str | torch.nn.Module, kwargs: dict[str, object], batch: int, img: int, opts: argparse.Namespace
    ) -> None:
        """`name` is a zoo name, or a model built elsewhere (docs/peer_timing.py: timm's), which is copied."""
        torch.manual_seed(opts.seed)
        kwargs = dict(kwargs)
        self.keep_subnormals = bool(kwargs.pop(KEEP_SUBNORMALS, False))
        choose = kwargs.get("attn_impl") == CHOSEN
        if choose:
            kwargs.pop("attn_impl")
        self.device = torch.device(opts.device)
        model = copy.deepcopy(name) if isinstance(name, torch.nn.Module) else create_model(name, img_size=img, **kwargs)
        self.model = model.train().to(self.device)
        # fused on CUDA, as `vitc train` steps (vitc.train.setup): the ratios are of the step it runs
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=1e-4, fused=self.device.type in FUSED_ADAMW_ON or None
        )
        self.x = torch.randn(batch, 3, img, img, device=self.device)
        self.y = torch.randint(0, self.model.num_classes, (batch,), device=self.device)
        self.amp = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[opts.amp]
        self.chosen = choose_formulations(self.model, batch, self.autocast()) if choose else []
        for row in self.chosen:
            print(f"{name}: {describe(row)}", flush=True)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp == torch.float16)
        self.times: list[float] = []  # wall-clock seconds per step, one sample per round
        self.cpu_times: list[float] = []  # process CPU seconds per step (see --threads)

    def autocast(self) -> torch.autocast | nullcontext[None]:
        return torch.autocast(self.device.type, dtype=self.amp) if self.amp else nullcontext()

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def step(self) -> tuple[float, float]:
        """(wall, CPU) seconds of one training step."""
        self.sync()
        start, cpu = time.perf_counter(), time.process_time()
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast(), subnormals_kept(self.keep_subnormals):
            loss = F.cross_entropy(self.model(self.x), self.y)
            self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.sync()
        return time.perf_counter() - start, time.process_time() - cpu

    def sample(self, steps: int) -> None:
        wall, cpu = np.mean([self.step() for _ in range(steps)], axis=0)
        self.times.append(float(wall))
        self.cpu_times.append(float(cpu))

    def memory(self) -> dict[str, int]:
        with self.autocast():
            return saved_activation_bytes(copy.deepcopy(self.model), self.x)  # the copy takes the hooks

    def total_memory(self) -> float:
        """Saved activation bytes, or NaN where the hooks cannot follow a compiled kernel (flex)."""
        try:
            return float(sum(self.memory().values()))
        except Exception as exc:  # one formulation must not lose the others' figures
            print(f"activation memory not measured: {type(exc).__name__}: {exc}"[:200], flush=True)
            return float("nan")


def interleave(
    runs: Iterable[Variant],
    opts: argparse.Namespace,
    deadline: float | None = None,
    stopped: list[str] | None = None,
    after_round: Callable[[], None] | None = None,
) -> None:
    """`opts.warmup` steps of each (allocator, AdamW state, kernels), then `opts.rounds` rounds in which
    every variant samples `opts.steps` steps in turn, so that load from other processes hits all alike.
    Past `deadline` (time.monotonic) it warms up no more variants (the first always is: a warm-up can be a
    compile of a minute, and the process is stopped at its end with nothing kept) and stops between variants
    and rounds once each warmed one has one sample, and says so in `stopped`; a variant not warmed up has no
    sample. `after_round` runs after each round (docs/peer_timing.py writes its rows)."""
    runs, warmed = list(runs), []
    for variant in runs:
        if warmed and _past(deadline):
            _say(stopped, f"{len(runs) - len(warmed)} of {len(runs)} variants not warmed up, at the deadline")
            break
        for _ in range(opts.warmup):
            variant.step()
        warmed.append(variant)
    for done in range(opts.rounds):
        for variant in warmed:
            if done and _past(deadline):
                _say(stopped, f"{done} of {opts.rounds} rounds, the last one partial, at the deadline")
                return
            variant.sample(opts.steps)
        if after_round is not None:
            after_round()


def _past(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() > deadline


def _say(stopped: list[str] | None, why: str) -> None:
    if stopped is not None:
        stopped.append(why)


def measure(
    groups: dict[str, tuple[str, ...]],
    img: int,
    batch: int,
    opts: argparse.Namespace,
    deadline: float | None = None,
    stopped: list[str] | None = None,
) -> list[dict]:
    """One row per variant: img/s (wall and CPU time), per-GMAC ratios and activations vs its group's DeiT.
    Past `deadline` no more variant is built (rows of those built) and no more round started (interleave)."""
    gmacs = {name: architecture_gmacs(name, img) for names in groups.values() for name in names}
    every_form = getattr(opts, "every_form", False)
    runs: dict[str, Variant] = {}
    for names in groups.values():
        for name in names:
            for label, kwargs in variants(name, every_form, opts.device):
                if runs and _past(deadline):
                    _say(stopped, f"{label} not built")
                    continue
                runs[label] = Variant(name, kwargs, batch, img, opts)
    memory = {label: v.total_memory() for label, v in runs.items()}
    interleave(runs.values(), opts, deadline, stopped)
    runs = {label: variant for label, variant in runs.items() if variant.times}  # those warmed up in time
    rows = []
    for names in groups.values():
        base = names[0]
        if base not in runs:  # every ratio of the group divides by its DeiT
            continue
        base_ips = batch / float(np.median(runs[base].times))
        base_cpu = batch / float(np.median(runs[base].cpu_times))
        for name in names:
            for label in (label for label, _ in variants(name, every_form, opts.device) if label in runs):
                ips = batch / float(np.median(runs[label].times))
                cpu_ips = batch / float(np.median(runs[label].cpu_times))
                rows.append({
                    "model": label, "gmacs": gmacs[name], "img_s": ips, "vs_deit": ips / base_ips,
                    "per_gmac": ips * gmacs[name] / (base_ips * gmacs[base]), "cpu_img_s": cpu_ips,
                    "cpu_per_gmac": cpu_ips * gmacs[name] / (base_cpu * gmacs[base]),
                    "activations_mib": memory[label] / 2**20, "activations_vs_deit": memory[label] / memory[base],
                    "chosen": [describe(row) for row in runs[label].chosen], "rounds": len(runs[label].times),
                })  # fmt: skip
    return rows


def markdown(rows: list[dict], img: int, batch: int, opts: argparse.Namespace) -> str:
    lines = [
        f"{img}×{img}, batch {batch}, {opts.device}, {opts.amp}, {opts.rounds} rounds × {opts.steps} steps, "
        "median step time",
        "| model | GMACs | img/s | vs DeiT | per GMAC | CPU-time img/s | per GMAC | activations MiB | vs DeiT |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['model']} | {r['gmacs']:.3g} | {r['img_s']:.3g} | {r['vs_deit']:.2f}× | {r['per_gmac']:.2f}× "
        f"| {r['cpu_img_s']:.3g} | {r['cpu_per_gmac']:.2f}× | {r['activations_mib']:.0f} "
        f"| {r['activations_vs_deit']:.2f}× |"
        for r in rows
    ]
    return "\n".join(lines)


def run(groups: dict[str, tuple[str, ...]], img: int, batch: int, opts: argparse.Namespace) -> None:
    print("\n" + markdown(measure(groups, img, batch, opts), img, batch, opts))


# Same-shape references for the memory table: where SP-ViT-S's activations come from.
SHAPES = {
    "deit_small": [("deit_small at SP-ViT-S's shape (16 blocks, MLP ratio 3)", {"depth": 16, "mlp_ratio": 3.0})],
    "spvit_s": [("spvit_s, plain attention in every block", {"local_up_to_layer": 0})],
}


def memory_table(groups: dict[str, tuple[str, ...]], img: int, batch: int, args: argparse.Namespace) -> None:
    """Activation MiB by part (no timing), each model against the first DeiT of its group."""
    print(f"\n{img}×{img}, batch {batch}, {args.amp}: activations saved for backward, MiB")
    columns = [*dict.fromkeys(PARTS.values()), "other"]
    print(f"| model | GMACs | total | vs DeiT | per GMAC vs DeiT | {' | '.join(columns)} |")
    print("|---|---:|---:|---:|---:|" + "---:|" * len(columns))
    for names in groups.values():
        base_bytes = base_per_gmac = 0.0
        for name in names:
            rows = [(label, kwargs, architecture_gmacs(name, img)) for label, kwargs in variants(name)]
            rows += [
                (label, kw, float(model_stats(name, img_size=img, **kw)["gmacs"])) for label, kw in SHAPES.get(name, [])
            ]
            for label, kwargs, gmacs in rows:
                parts = Variant(name, kwargs, batch, img, args).memory()
                total = sum(parts.values())
                if not base_bytes:
                    base_bytes, base_per_gmac = total, total / gmacs
                cells = " | ".join(f"{parts[c] / 2**20:.0f}" for c in columns)
                print(
                    f"| {label} | {gmacs:.3g} | {total / 2**20:.0f} | {total / base_bytes:.2f}× "
                    f"| {total / gmacs / base_per_gmac:.2f}× | {cells} |"
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", default="8", help="comma-separated batch sizes")
    parser.add_argument("--micro", action="store_true", help="the 32×32 micro models instead of 224×224")
    parser.add_argument("--models", default="", help="comma-separated subset (a group keeps its DeiT)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=1, help="steps per variant per round (their mean is one sample)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument(
        "--amp", choices=("off", "bf16", "fp16"), default="off", help="autocast dtype (fp16: with GradScaler)"
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda (process CPU time is then the host's)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fused-only", action="store_true", help="skip the reference formulation")
    parser.add_argument(
        "--every-form", action="store_true", help="add fused_dense, flex and the formulation chosen on this device"
    )
    parser.add_argument("--memory", action="store_true", help="activation memory by part only, no timing")
    parser.add_argument(
        "--subnormals", action="store_true", help="add ConViT's fused form with its subnormal table entries kept"
    )
    args = parser.parse_args()
    if args.fused_only:
        FORMS.remove("reference")
    if args.subnormals:
        FORMS.append(KEEP_SUBNORMALS)
    if args.threads:
        torch.set_num_threads(args.threads)
    groups, img = (GROUPS_MICRO, 32) if args.micro else (GROUPS_224, 224)
    if args.models:
        wanted = set(args.models.split(","))
        groups = {k: (g[0], *(n for n in g[1:] if n in wanted)) for k, g in groups.items() if wanted & set(g)}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for batch in (int(b) for b in args.batch.split(",")):
        (memory_table if args.memory else run)(groups, img, batch, args)


if __name__ == "__main__":
    main()
