"""Per-device formulations: the new variants compute the reference's function, and the chooser
keeps only exact candidates that are faster without keeping more activations.

GPU speed itself is measured by `make gpu-check` (docs/gpu_check.py), not here.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

import vitc.train.device
from tests.doc_scripts import load_doc_script
from tests.processes import killed_on_exit, popen
from vitc._lazy import torch_before
from vitc.cli.main import app
from vitc.errors import VitcError
from vitc.models import create_model, formulation, layers, prior_attention
from vitc.models.convit import GPSA, DensePositional, dense_product
from vitc.models.cvt import ConvAttention
from vitc.models.formulation import MARGIN, Trial, choose_formulations, describe, pick
from vitc.models.layers import Attention, content_attention, qk_v_heads
from vitc.models.spvit import SPSA

from .test_attn_impl import GRAD_TOL, LOGIT_TOL, NULL_GRADIENTS, _logits_and_grads, _perturb

ROOT = Path(__file__).resolve().parents[2]
OPERATORS = load_doc_script("operator_counts")  # its OperatorCount
SMALL = {"depth": 3, "local_up_to_layer": 2, "img_size": 40}  # a 10×10 grid: fused uses the separable form


def test_fused_dense_matches_the_reference_logits_and_every_gradient() -> None:
    torch.manual_seed(0)
    reference = create_model("convit_micro", attn_impl="reference", drop_path_rate=0.0, **SMALL)
    _perturb(reference)
    dense = create_model("convit_micro", attn_impl="fused_dense", drop_path_rate=0.0, **SMALL)
    dense.load_state_dict(reference.state_dict())
    gpsa = [m for m in dense.modules() if isinstance(m, GPSA)]
    assert gpsa and all(m.grid > m.dense_positional_grid for m in gpsa)  # `fused` would be separable here
    x, y = torch.randn(3, 3, 40, 40), torch.tensor([0, 3, 7])
    ref_logits, ref_grads = _logits_and_grads(reference, x, y)
    logits, grads = _logits_and_grads(dense, x, y)
    assert (logits - ref_logits).abs().max().item() <= LOGIT_TOL
    scale = max(g.abs().max().item() for g in ref_grads.values())
    for key, ref in ref_grads.items():
        floor = 1e-3 * scale if key.endswith(NULL_GRADIENTS) else 0.0
        rel = (grads[key] - ref).abs().max().item() / max(ref.abs().max().item(), floor)
        assert rel <= GRAD_TOL, f"{key}: {rel:.2e}"


def test_dense_positional_backward_is_autograds() -> None:
    torch.manual_seed(0)
    v = torch.randn(2, 3, 9, 4, dtype=torch.float64, requires_grad=True)
    table = torch.randn(3, 9, 9, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(DensePositional.apply, (v, table))
    assert torch.equal(DensePositional.apply(v, table), dense_product(v, table))


def test_dense_positional_keeps_v_not_a_per_head_copy() -> None:
    """The custom backward saves v (shared with the content attention) instead of its (H, N, B·d) copy."""
    v = torch.randn(4, 3, 16, 8, requires_grad=True)
    table = torch.softmax(torch.randn(3, 16, 16), -1).requires_grad_(True)
    saved: list[torch.Tensor] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        DensePositional.apply(v, table)
    storages = {t.untyped_storage().data_ptr() for t in saved}
    assert storages == {v.untyped_storage().data_ptr(), table.untyped_storage().data_ptr()}


def _has_flex() -> bool:
    return importlib.util.find_spec("torch.nn.attention.flex_attention") is not None


@pytest.mark.skipif(not _has_flex(), reason="FlexAttention arrived in torch 2.5")
def test_spsa_flex_forward_matches_the_reference() -> None:
    """FlexAttention with the prior as a score modification; its backward needs a GPU (gpu_check)."""
    torch.manual_seed(0)
    attn = SPSA(dim=32, num_heads=4, grid=5, attn_impl="reference")
    _perturb(attn)
    x = torch.randn(2, 25, 32)
    with torch.no_grad():
        want = attn(x)
        attn.attn_impl = "flex"
        with warnings.catch_warnings():  # eager flex on CPU: torch 2.13 warns, 2.5 to 2.7 do not
            warnings.filterwarnings("ignore", "flex_attention called without torch.compile")
            got = attn(x)
    assert (got - want).abs().max().item() <= 1e-5


def test_flex_on_a_torch_without_it_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch 2.4 has no FlexAttention: a pinned attn_impl='flex' names the torch it needs (simulated on newer)."""
    monkeypatch.setitem(sys.modules, "torch.nn.attention.flex_attention", None)  # import fails as on torch 2.4
    prior_attention._flex_attention.cache_clear()
    attn = SPSA(dim=32, num_heads=4, grid=5, attn_impl="flex")
    try:
        with pytest.raises(VitcError, match=r"attn_impl 'flex' \(FlexAttention\) needs torch >= 2\.5"):
            attn(torch.randn(2, 25, 32))
    finally:
        prior_attention._flex_attention.cache_clear()


@pytest.mark.skipif(not _has_flex(), reason="FlexAttention arrived in torch 2.5")
def test_flex_on_a_torch_that_takes_power_of_two_head_widths_only_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch 2.5 to 2.7 refuse spvit_micro's head width 24 with a ValueError (simulated on newer)."""
    monkeypatch.setattr(prior_attention, "_FLEX_POWER_OF_TWO_ONLY", True)
    x = torch.randn(2, 25, 48)
    with torch.no_grad():  # forward only: the CPU has no FlexAttention backward on every torch
        with pytest.raises(VitcError, match=r"attn_impl 'flex' \(FlexAttention\) on torch .* this model's are 24: use"):
            SPSA(dim=48, num_heads=2, grid=5, attn_impl="flex")(x)
        assert SPSA(dim=32, num_heads=2, grid=5, attn_impl="flex")(x[..., :32]).shape == (2, 25, 32)  # 16 runs


@pytest.mark.parametrize("scale_queries", [True, False])
def test_plain_attention_through_sdpa_equals_the_written_form(
    monkeypatch: pytest.MonkeyPatch, scale_queries: bool
) -> None:
    """The GPU branch (scaled_dot_product_attention), run on the CPU, against the CPU's written form."""
    torch.manual_seed(0)
    attn = Attention(32, 4, qkv_bias=True, scale_queries=scale_queries)
    _same_both_ways(monkeypatch, attn, torch.randn(2, 17, 32, requires_grad=True))


def test_cvt_attention_through_sdpa_equals_the_written_form(monkeypatch: pytest.MonkeyPatch) -> None:
    """CvT's queries (every token) and strided keys/values (a quarter): two lengths, one SDPA call."""
    torch.manual_seed(0)
    model = create_model("cvt_micro")
    block = next(m for m in model.modules() if isinstance(m, ConvAttention) and m.with_cls_token)
    grid = 8
    x = torch.randn(2, 1 + grid * grid, block.proj.in_features, requires_grad=True)
    _same_both_ways(monkeypatch, block, x, grid, grid)


def _same_both_ways(monkeypatch: pytest.MonkeyPatch, module: torch.nn.Module, x: torch.Tensor, *args: int) -> None:
    outputs = []
    for written_on in [("cpu",), ()]:
        monkeypatch.setattr(layers, "WRITTEN_ATTENTION_ON", written_on)
        out = module(x, *args)
        grads = torch.autograd.grad(out.pow(2).sum(), [x, *module.parameters()])
        outputs.append([out, *grads])
    for written, fused in zip(*outputs, strict=True):
        assert (written - fused).abs().max().item() <= 1e-5 * max(1.0, written.abs().max().item())


class TimmFusedAttention(torch.nn.Module):
    """timm 1.0's `Attention.forward` on its fused path (timm/layers/attention.py; q/k norms and
    gate off, as in DeiT), transcribed: the peer a GPU step is measured against."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.qkv = torch.nn.Linear(dim, dim * 3, bias=True)
        self.proj = torch.nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape  # timm's names
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        x = torch.nn.functional.scaled_dot_product_attention(q, k, v, dropout_p=0.0)
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


def test_the_gpu_attention_step_dispatches_exactly_timms_operators(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forward and backward of DeiT's attention on the GPU branch launch the same operators as timm's.

    Splitting q, k, v by indexing made three `select_backward`s (each a zero-filled qkv-sized
    gradient) and two adds per block where timm's `unbind` has one `stack`.
    """
    monkeypatch.setattr(layers, "WRITTEN_ATTENTION_ON", ())
    torch.manual_seed(0)
    ours, peer = Attention(32, 4, qkv_bias=True), TimmFusedAttention(32, 4)
    peer.load_state_dict(ours.state_dict())
    x = torch.randn(2, 17, 32)
    results = []
    for module in (ours, peer):
        with OPERATORS.OperatorCount() as ops:
            out = module(x)
            grads = torch.autograd.grad(out.pow(2).sum(), list(module.parameters()))
        results.append((ops.counts, out, grads))
    (ours_ops, ours_out, ours_grads), (peer_ops, peer_out, peer_grads) = results
    assert ours_ops == peer_ops
    assert ours_ops["select_backward"] == 0
    assert torch.equal(ours_out, peer_out)
    assert all(torch.equal(a, b) for a, b in zip(ours_grads, peer_grads, strict=True))


@pytest.mark.parametrize("kind", ["gpsa", "gpsa_dense", "gpsa_bias", "spsa"])
def test_gpsa_and_spsa_gpu_branches_equal_the_cpu_form(monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    """On a GPU q, k, v come from one GEMM over the concatenated qk and v weights, the content
    attention goes through SDPA and the tables keep their subnormals: the same function."""
    torch.manual_seed(0)
    if kind == "spsa":
        block = SPSA(32, 4, 6)
    else:
        impl = "fused_dense" if kind == "gpsa_dense" else "fused"
        block = GPSA(32, 4, 6, qkv_bias=kind == "gpsa_bias", attn_impl=impl)
    _perturb(block)
    monkeypatch.setattr(layers, "FLUSH_SUBNORMALS_ON", ())
    _same_both_ways(monkeypatch, block, torch.randn(2, 36, 32, requires_grad=True))


class _Casts(OPERATORS.OperatorCount):
    """The shapes of the tensors autocast casts."""

    def __init__(self) -> None:
        super().__init__()
        self.cast_shapes: list[tuple[int, ...]] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if func.overloadpacket.__name__ == "_to_copy":
            self.cast_shapes.append(tuple(args[0].shape))
        return super().__torch_dispatch__(func, types, args, kwargs)


@pytest.mark.parametrize("impl", ["fused", "fused_dense"])
def test_under_autocast_the_positional_tables_are_built_in_fp32_without_casts(impl: str) -> None:
    """rel_indices, the offsets and the prior MLP's or pos_proj's weights are never cast: the tables
    are batch-independent and small, and each cast would be a kernel in the forward and the backward."""
    torch.manual_seed(0)
    for block in (GPSA(32, 4, 6, attn_impl=impl), SPSA(32, 4, 6)):
        small = {tuple(t.shape) for t in (block.rel_indices, *block.parameters()) if t.shape[-1] < 32}
        with _Casts() as casts, torch.autocast("cpu", dtype=torch.bfloat16):
            out = block(torch.randn(2, 36, 32))
        with _Casts() as backward_casts:
            torch.autograd.grad(out.float().sum(), list(block.parameters()), allow_unused=True)
        assert not small & set(casts.cast_shapes + backward_casts.cast_shapes), type(block).__name__


@pytest.mark.parametrize(
    ("name", "impl"),
    [("deit_tiny", None), ("convit_tiny", "fused"), ("convit_tiny", "fused_dense"), ("convit_tiny", "reference"),
     ("spvit_s", "fused"), ("spvit_s", "reference"), ("cvt_13", None)],
)  # fmt: skip
def test_the_gpu_branches_train_off_the_cpu(name: str, impl: str | None) -> None:
    """A training step of every family on the meta device, which takes the GPU branches (SDPA, one qkv
    GEMM, no flush): a CPU tensor left in them would fail here, not first on a GPU."""
    with torch.device("meta"):
        model = create_model(name, num_classes=10, **({"attn_impl": impl} if impl else {}))
        x, y = torch.randn(2, 3, 224, 224), torch.zeros(2, dtype=torch.long)
    torch.nn.functional.cross_entropy(model.train()(x), y).backward()
    assert all(p.grad is not None and p.grad.device.type == "meta" for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("name", ["deit_micro", "convit_micro", "spvit_micro", "cvt_micro"])
@pytest.mark.parametrize("branches", ["cpu", "gpu"])
def test_run_compile_traces_each_training_model_whole(
    name: str, branches: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`run.compile` gets one graph per model, forward under autocast and backward: a graph break at
    every block costs the fusion it is for (torch 2.11's dynamo broke at `torch.amp.is_autocast_available`)."""
    if branches == "gpu":  # SDPA, one qkv GEMM, no flush: what a GPU run compiles
        monkeypatch.setattr(layers, "WRITTEN_ATTENTION_ON", ())
        monkeypatch.setattr(layers, "FLUSH_SUBNORMALS_ON", ())
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = create_model(name).train()
    whole = torch.compile(model, fullgraph=True, backend="eager")  # fullgraph: a graph break is an error
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = whole(torch.randn(2, 3, 32, 32))
    out.float().sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_an_unknown_variant_names_each_modules_choices() -> None:
    with pytest.raises(Exception, match="fused_dense"):
        create_model("convit_micro", attn_impl="flex")
    with pytest.raises(Exception, match="flex"):
        create_model("spvit_micro", attn_impl="fused_dense")


# -- the chooser ---------------------------------------------------------------------------------------
def test_pick_keeps_the_default_unless_a_usable_candidate_beats_it() -> None:
    fused = Trial("fused", ms=10.0, saved_mib=100.0)
    faster = Trial("fused_dense", ms=8.0, saved_mib=101.0)
    assert pick([fused, faster]) == "fused_dense"
    assert pick([fused, Trial("fused_dense", ms=10.0 * (1 - MARGIN / 2), saved_mib=100.0)]) == "fused"  # noise
    assert pick([fused, Trial("reference", ms=5.0, saved_mib=250.0)]) == "fused"  # keeps more activations
    assert pick([fused, Trial("flex", ms=5.0, saved_mib=90.0, error="differs from the reference by 1e-2")]) == "fused"
    assert pick([fused, faster, Trial("flex", ms=6.0, saved_mib=90.0)]) == "flex"


def test_choose_formulations_measures_every_candidate_and_sets_the_modules() -> None:
    torch.manual_seed(0)
    model = create_model("spvit_micro", depth=3, local_up_to_layer=2, img_size=40, stem_chans=16)
    record = choose_formulations(model, batch=4, rounds=2, warmup=1)
    assert len(record) == 1 and record[0]["module"] == "SPSA" and record[0]["blocks"] == 2
    trials = {t["impl"]: t for t in record[0]["trials"]}
    assert set(trials) == {"fused", "flex", "reference"}
    if not _has_flex():
        flex_error = "needs torch >= 2.5"
    elif torch_before(2, 8):  # spvit_micro's head width 24: FlexAttention before 2.8 takes powers of two only
        flex_error = "takes power-of-two head widths"
    elif torch_before(2, 11):  # 2.8 to 2.10 run the CPU's reference loop backward too (pytorch#169646 ended it)
        flex_error = None
    else:
        flex_error = "NotImplementedError"  # no backward on the CPU
    if flex_error is None:
        assert trials["flex"]["error"] is None and trials["flex"]["max_rel_diff"] <= 1e-4
    else:
        assert flex_error in trials["flex"]["error"]
    for impl in ("fused", "reference"):
        assert trials[impl]["error"] is None and trials[impl]["ms"] > 0 and trials[impl]["max_rel_diff"] <= 1e-4
    assert trials["reference"]["saved_mib"] > trials["fused"]["saved_mib"]  # (B, H, N, N) probabilities
    assert all(m.attn_impl == record[0]["chosen"] for m in model.modules() if isinstance(m, SPSA))
    assert "SPSA 10×10 ×2" in describe(record[0])


def test_a_formulation_that_is_wrong_on_this_device_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    real = GPSA._positional

    def off_by_a_percent(self: GPSA, v: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        out = real(self, v, gate)
        return out * 1.01 if self.attn_impl == "fused_dense" else out

    monkeypatch.setattr(GPSA, "_positional", off_by_a_percent)
    torch.manual_seed(0)
    model = create_model("convit_micro", depth=2, local_up_to_layer=1, img_size=40)
    model.eval()  # the chooser measures the training forward whatever mode the model is in
    record = choose_formulations(model, batch=2, rounds=1, warmup=0, impls=("fused_dense",))
    trials = {t["impl"]: t for t in record[0]["trials"]}
    assert set(trials) == {"fused", "fused_dense"}
    assert trials["fused_dense"]["error"].startswith("differs from the reference by")
    assert record[0]["chosen"] == "fused"


def test_pick_never_chooses_a_formulation_that_failed_the_default_included() -> None:
    """Without a usable `fused` the fastest that passed runs, whatever it keeps; `reference` where none did."""
    inexact = Trial("fused", error="differs from the reference by 2e-3")
    dense, reference = Trial("fused_dense", ms=9.0, saved_mib=120.0), Trial("reference", ms=12.0, saved_mib=300.0)
    assert pick([inexact, dense, reference]) == "fused_dense"
    assert pick([inexact, Trial("fused_dense", error="RuntimeError: no kernel"), reference]) == "reference"
    assert pick([inexact, Trial("fused_dense", error="differs from the reference by 1e-3")]) == "reference"


def test_when_fused_fails_here_the_chooser_runs_one_that_passed_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tolerances of 0: only the reference, compared with itself, passes; `fused` used to be kept anyway."""
    monkeypatch.setattr(formulation, "OUTPUT_TOL", 0.0)
    monkeypatch.setattr(formulation, "GRAD_TOL", 0.0)
    torch.manual_seed(0)
    model = create_model("convit_micro", depth=2, local_up_to_layer=1, img_size=40)
    (row,) = choose_formulations(model, batch=2, rounds=1, warmup=0)
    trials = {t["impl"]: t for t in row["trials"]}
    assert trials["fused"]["error"].startswith("differs from the reference by")
    assert row["chosen"] == "reference"
    assert all(m.attn_impl == "reference" for m in model.modules() if isinstance(m, GPSA))
    assert describe(row).startswith("GPSA 10×10 ×1: reference, as fused failed here (fused unusable (differs")


def test_a_gradient_zero_in_exact_arithmetic_is_measured_against_the_blocks_gradients() -> None:
    """ConViT-S at 448 (28×28): pos_proj.bias's gradient, which the softmax cancels, is rounding noise
    ~1e-7 of the block's largest gradient in either form; against a floor of 1e-3 of it, `fused` and
    `fused_dense` differed by 1.5e-4 and were refused though every real gradient agrees to ~1e-6."""
    torch.manual_seed(0)
    model = create_model("convit_small", depth=2, local_up_to_layer=1, img_size=448).train()
    (row,) = choose_formulations(model, batch=1, rounds=1, warmup=0, impls=("fused",))
    (fused,) = row["trials"]
    assert fused["error"] is None and fused["max_rel_diff"] <= 1e-5
    assert row["chosen"] == "fused"


class _GateGradOff(torch.autograd.Function):
    """The identity, whose backward makes the gate's gradient 1e-3 too large."""

    @staticmethod
    def forward(ctx: Any, gate: torch.Tensor) -> torch.Tensor:
        return gate.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad * (1 + 1e-3)


def test_a_real_gradient_off_by_a_thousandth_is_still_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """`fused` with the same output and a gating_param gradient 1e-3 off (relative): refused at 448 as at 40."""

    def wrong_gate_gradient(self: GPSA, x: torch.Tensor) -> torch.Tensor:  # GPSA._forward_fused, one change
        batch, tokens, dim = x.shape
        q, k, v = qk_v_heads(x, self.qk, self.v, self.num_heads)
        content = content_attention(q, k, v, self.scale)
        gate = _GateGradOff.apply(torch.sigmoid(self.gating_param)).view(-1, 1, 1)
        out = torch.addcmul(self._positional(v, gate), content, 1.0 - gate)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))

    monkeypatch.setattr(GPSA, "_forward_fused", wrong_gate_gradient)
    for name, size in (("convit_micro", 40), ("convit_small", 448)):
        torch.manual_seed(0)
        model = create_model(name, depth=2, local_up_to_layer=1, img_size=size).train()
        (row,) = choose_formulations(model, batch=1, rounds=1, warmup=0, impls=("fused",))
        (fused,) = row["trials"]
        assert fused["error"] is not None and 5e-4 < fused["max_rel_diff"] < 2e-3, (size, fused)
        assert row["chosen"] == "reference", size


def test_vitc_train_measures_and_records_the_formulations_on_a_tuned_device(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """On a GPU `vitc train` chooses; the CPU stands in for it here (its CPU default is not tuned)."""
    monkeypatch.setattr(vitc.train.device, "TUNED_DEVICES", ("cpu",))
    args = ["train", "--model", "convit_micro", "--epochs", "1", "--set", f"run.out_dir={tmp_path}",
            "--set", 'model.args={"depth": 2, "local_up_to_layer": 1}', "--set", "data.image_size=16",
            "--set", "run.amp=off", "--name", "tuned"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "attention: GPSA 4×4 ×1:" in result.output
    attention = json.loads((tmp_path / "tuned" / "summary.json").read_text())["attention"]
    assert attention[0]["module"] == "GPSA" and attention[0]["chosen"] in GPSA.ATTN_IMPLS
    pin = 'model.args={"depth": 2, "local_up_to_layer": 1, "attn_impl": "reference"}'
    pinned = [*args[:-1], "pinned", "--set", pin]
    result = CliRunner().invoke(app, pinned)
    assert result.exit_code == 0, result.output
    assert "attention:" not in result.output
    assert json.loads((tmp_path / "pinned" / "summary.json").read_text())["attention"] is None


def test_on_a_cpu_vitc_train_keeps_the_measured_default() -> None:
    model = create_model("convit_micro", depth=2, local_up_to_layer=1)
    assert vitc.train.device.choose_attention(model, False, 8, torch.autocast("cpu"), print) is None
    assert all(m.attn_impl == "fused" for m in model.modules() if isinstance(m, GPSA))


def test_under_ddp_every_process_runs_the_main_processs_choice(tmp_path: Path) -> None:
    """Two gloo processes (tests/models/ddp_choice.py): rank 1 takes rank 0's choice, measuring nothing."""
    script = Path(__file__).with_name("ddp_choice.py")
    procs = [popen([sys.executable, str(script), str(rank), str(tmp_path / "store"), str(tmp_path)]) for rank in (0, 1)]
    with killed_on_exit(*procs):  # a timeout left rank 0 running (hung leaving the group, on torch 2.5.1)
        assert [proc.wait(timeout=120) for proc in procs] == [0, 0]
    main, other = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert main["chosen"] == other["chosen"] == ["fused_dense"]
    assert main["record"] == other["record"] and main["lines"] == other["lines"]
