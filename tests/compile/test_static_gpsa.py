"""static_gpsa: GPSA → StaticGPSA (positional table, folded gate, fused qkv), every lowering."""

from __future__ import annotations

import pytest
import torch

from tests.doc_scripts import load_doc_script
from vitc.compile.static_gpsa import (
    LOWERINGS,
    StaticGPSA,
    StaticGPSAPass,
    kronecker,
    separable_positional_attention,
)
from vitc.models.convit import GPSA

from .conftest import build, max_diff, randomize

OPERATORS = load_doc_script("operator_counts")  # its OperatorCount


@pytest.mark.parametrize("lowering", LOWERINGS)
def test_structure(lowering: str) -> None:
    model = build("convit_micro")
    fired = StaticGPSAPass(lowering)(model)
    assert fired == model.local_up_to_layer == 4
    assert not any(isinstance(m, GPSA) for m in model.modules())
    static = [m for m in model.modules() if isinstance(m, StaticGPSA)]
    assert len(static) == 4 and all(m.lowering == lowering for m in static)
    keys = set(model.state_dict())
    for dropped in ("pos_proj", "rel_indices", "gating_param", "attn.qk.", "attn.v."):
        assert not any(dropped in k for k in keys), dropped
    wide = lowering == "heads"  # qkv writes [q, 0, k, v, v]; proj reads [content, positional] heads
    assert static[0].qkv.out_features == (5 if wide else 3) * 96  # qk and v fused into one GEMM
    assert static[0].proj.in_features == (2 if wide else 1) * 96
    assert static[0].qkv.bias is None  # convit_micro's GPSA has none, and none was asked for
    tables = {k: v.shape for k, v in static[0].state_dict().items() if not k.startswith(("qkv.", "proj."))}
    # mix keeps the dense (H, N, N) table; sdpa only its two (H, S, S) factors; eager repeats P_x per grid row;
    # heads a (1, 2·H, N, N) mask, its rows padded to 16 columns
    expected = {
        "mix": {"pos_attn": (4, 64, 64), "content_gate": (4, 1, 1)},
        "sdpa": {"pos_rows": (4, 8, 8), "pos_cols": (4, 8, 8), "content_gate": (4, 1, 1)},
        "eager": {"pos_rows": (4, 8, 8), "pos_cols": (32, 8, 8), "gate": (4, 1, 1)},
        "heads": {"head_logits": (1, 8, 64, 64), "gate": (4, 1, 1)},
    }
    assert tables == expected[lowering]
    assert StaticGPSAPass(lowering)(model) == 0  # idempotent: nothing left to match


@pytest.mark.parametrize("lowering", LOWERINGS)
def test_numbers(lowering: str) -> None:
    model = randomize(build("convit_micro"))
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        before = model(x)
        StaticGPSAPass(lowering)(model)
        assert max_diff(model(x), before) <= 1e-5


def test_eager_mix_is_read_by_proj_without_a_copy() -> None:
    """ "eager": lerp(content, P·v, g) takes SDPA's (B, N, H, d) layout, so proj's input is a view of it."""
    static = StaticGPSAPass("eager").rewrite(GPSA(dim=64, num_heads=4, grid=5).eval())
    seen = []
    static.proj.register_forward_pre_hook(lambda _module, args: seen.append(args[0]))
    with torch.no_grad():
        static(torch.randn(3, 25, 64))
    assert seen[0]._base is not None  # a reshape that had to copy returns a fresh tensor


def test_heads_runs_gpsa_as_one_attention_over_twice_the_heads() -> None:
    """ "heads": a zero query block makes heads H..2H−1 attend by their mask log P alone, so the block
    dispatches a plain attention's kernels, qkv GEMM, one SDPA, proj GEMM, and no copy."""
    torch.manual_seed(0)
    gpsa = GPSA(dim=64, num_heads=4, grid=5).eval()
    gpsa.local_init()
    static = StaticGPSAPass("heads").rewrite(gpsa)
    assert not static.qkv.weight[64:128].any()  # the positional heads' queries: exactly 0
    mask = static.head_logits
    assert mask.shape == (1, 8, 25, 32) and mask.stride(-2) % 16 == 0  # rows aligned: no per-call padding copy
    assert not mask[0, :4].any()  # content heads: no mask
    assert torch.allclose(mask[0, 4:, :, :25].softmax(-1), gpsa.positional_attention(), atol=1e-6)
    tokens = torch.randn(3, 25, 64)
    with torch.no_grad(), OPERATORS.OperatorCount() as ops:
        out = static(tokens)
    launched = {name: n for name, n in ops.counts.items() if name in ("mm", "addmm") or "attention" in name}
    assert launched == {"mm": 1, "_scaled_dot_product_flash_attention_for_cpu": 1, "addmm": 1}
    assert ops.kernels == 3
    with torch.no_grad():
        assert max_diff(out, gpsa(tokens)) <= 1e-5


def test_heads_under_autocast_stays_close_to_fp32() -> None:
    """Autocast casts the mask with q, k and v: log P in bfloat16 moves the output by bfloat16's rounding."""
    torch.manual_seed(0)
    gpsa = GPSA(dim=64, num_heads=4, grid=14).eval()
    gpsa.local_init()
    tokens = torch.randn(2, 196, 64)
    with torch.no_grad():
        static = StaticGPSAPass("heads").rewrite(gpsa)
        exact = static(tokens)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = static(tokens)
    assert low.dtype == torch.bfloat16
    assert max_diff(low.float(), exact) <= 0.01 * float(exact.abs().max())  # measured 0.0037 (eager lowering 0.0047)


def test_zero_qkv_bias_is_exact() -> None:
    """qkv_bias=True adds an all-zero bias (a faster GEMM on PyTorch CPU) and changes no number."""
    model = randomize(build("convit_micro"))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        StaticGPSAPass("eager")(model)
        without = model(x)
        biased = randomize(build("convit_micro"))
        StaticGPSAPass("eager", qkv_bias=True)(biased)
        static = [m for m in biased.modules() if isinstance(m, StaticGPSA)]
        assert all(m.qkv.bias is not None and not m.qkv.bias.any() for m in static)
        assert torch.equal(biased(x), without)


@pytest.mark.parametrize("lowering", LOWERINGS)
@pytest.mark.parametrize("gate", [-8.0, 0.0, 8.0])
def test_module_matches_gpsa_at_extreme_gates(lowering: str, gate: float) -> None:
    """One GPSA module, gates nearly closed/open: the rows stay stochastic without renormalisation."""
    torch.manual_seed(0)
    gpsa = GPSA(dim=64, num_heads=4, grid=5).eval()
    with torch.no_grad():
        gpsa.gating_param.fill_(gate)
        tokens = torch.randn(2, 25, 64)
        static = StaticGPSAPass(lowering).rewrite(gpsa)
        assert max_diff(static(tokens), gpsa(tokens)) <= 1e-5
        assert torch.allclose(
            gpsa.positional_attention() * torch.sigmoid(torch.tensor(gate)), static.positional_table(), atol=1e-6
        )


@pytest.mark.parametrize("heads", [1, 4, 9])
def test_positional_attention_is_separable(heads: int) -> None:
    """P = P_y ⊗ P_x for random pos_proj weights (local init or not), to float64 rounding."""
    torch.manual_seed(heads)
    gpsa = GPSA(dim=36 * heads, num_heads=heads, grid=6)
    with torch.no_grad():
        gpsa.pos_proj.weight.normal_(0.0, 2.0)
        gpsa.pos_proj.bias.normal_()
        rows, cols = separable_positional_attention(gpsa)
        dense = gpsa.positional_attention().double()
    assert rows.shape == cols.shape == (heads, 6, 6)
    assert torch.allclose(rows.sum(-1), torch.ones(heads, 6, dtype=torch.float64))  # each factor row-stochastic
    assert torch.allclose(kronecker(rows, cols), dense, atol=1e-6)  # dense came from the float32 module


def test_non_separable_table_is_refused() -> None:
    """A feature change that broke the identity would be caught, not compiled into wrong numbers."""
    gpsa = GPSA(dim=16, num_heads=4, grid=4)
    with torch.no_grad():
        gpsa.rel_indices[..., 2] = gpsa.rel_indices[..., 0] * gpsa.rel_indices[..., 1]  # dx·dy couples the axes
        gpsa.pos_proj.weight.normal_()
    with pytest.raises(ValueError, match="not separable"):
        separable_positional_attention(gpsa)


def test_unknown_lowering() -> None:
    with pytest.raises(ValueError, match="lowering"):
        StaticGPSAPass("fast")


@pytest.mark.parametrize("lowering", LOWERINGS)
def test_subnormal_table_entries_are_flushed(lowering: str) -> None:
    """At 14×14 the local init's exp(−δ²) tables reach float32's subnormals (δ ≥ 10); none stay in the
    module (each costs Intel CPUs a microcode assist per multiply), and the output does not move."""
    torch.manual_seed(0)
    gpsa = GPSA(dim=64, num_heads=4, grid=14).eval()
    gpsa.local_init()
    tiny = torch.finfo(torch.float32).tiny
    rows, _ = separable_positional_attention(gpsa)
    assert ((rows.float() != 0) & (rows.float().abs() < tiny)).any()  # the case this guards
    with torch.no_grad():
        static = StaticGPSAPass(lowering).rewrite(gpsa)
        for name, table in static.named_buffers():
            assert not ((table != 0) & (table.abs() < tiny)).any(), name
        tokens = torch.randn(3, 196, 64)
        assert max_diff(static(tokens), gpsa(tokens)) <= 1e-5
