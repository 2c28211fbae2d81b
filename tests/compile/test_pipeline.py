"""compile_model end to end: every zoo model and target, static shapes, a trained checkpoint, the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from vitc._numerics import precision_flags
from vitc.compile import PIPELINES, TARGETS, CompileReport, compile_model
from vitc.compile._base import PASSES
from vitc.compile.program import export_with_free_batch
from vitc.errors import CheckFailed, VitcError

from .conftest import MICRO, ZOO, build, max_diff

EXPECTED_FIRED = {  # cpu target: static_gpsa, static_spatial_prior, fold_cvt_projections, fold_stem_batchnorm,
    # static_attention
    "convit_micro": (4, 0, 0, 0, 2),
    "spvit_micro": (0, 4, 0, 1, 2),
    "cvt_micro": (0, 0, 5, 0, 5),
    "deit_micro": (0, 0, 0, 0, 6),
}


@pytest.mark.parametrize("name", ZOO)
def test_every_zoo_model_every_target(name: str) -> None:
    model = build(name)
    x = torch.randn(3, *model.vitc_cfg.input_size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(x)
        for target in TARGETS:
            compiled, report = compile_model(model, target=target)
            assert report.max_abs_diff is not None and report.max_abs_diff <= 1e-4
            assert max_diff(compiled(x), expected) <= 1e-4, target  # a batch size the check did not use
            assert [row.name for row in report.rows] == [step for step, _ in PIPELINES[target]]
            if not (name.startswith("deit") and target == "onnx"):  # DeiT keeps plain attention for ORT
                assert sum(row.fired for row in report.rows) > 0
            assert not any(type(m).__name__ in ("GPSA", "SPSA", "ConvAttention") for m in compiled.modules())


@pytest.mark.parametrize("name", MICRO)
def test_counts_fired(name: str) -> None:
    _, report = compile_model(build(name), target="cpu")
    assert tuple(report.fired.values()) == EXPECTED_FIRED[name]


def test_source_model_is_untouched_and_attributes_are_kept() -> None:
    model = build("convit_micro").train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    compiled, report = compile_model(model)
    assert model.training and all(m.training for m in model.modules())
    assert type(model.blocks[0].attn).__name__ == "GPSA"
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert not compiled.training
    assert (compiled.vitc_name, compiled.vitc_args, compiled.vitc_cfg) == (
        model.vitc_name,
        model.vitc_args,
        model.vitc_cfg,
    )
    assert report.input_size == (3, 32, 32) and report.check_batch == 1


def test_report_to_dict_is_json() -> None:
    _, report = compile_model(build("spvit_micro"), target="onnx")
    record = json.loads(json.dumps(report.to_dict()))
    assert record["target"] == "onnx" and record["model"] == "spvit_micro"
    names = ["static_gpsa", "static_spatial_prior", "fold_cvt_projections", "fold_stem_batchnorm"]
    assert [r["name"] for r in record["rows"]] == names
    assert record["max_abs_diff"] <= 1e-4


def test_unknown_target_and_missing_input_size() -> None:
    model = build("deit_micro")
    with pytest.raises(VitcError, match="unknown compile target"):
        compile_model(model, target="tpu")
    with pytest.raises(VitcError, match="input_size"):
        compile_model(nn.Sequential(nn.Flatten(), nn.LazyLinear(2)))


def test_check_catches_a_wrong_rewrite(monkeypatch: pytest.MonkeyPatch) -> None:
    cls = PASSES["static_spatial_prior"]
    real = cls.rewrite

    def broken(self: object, module: nn.Module) -> nn.Module:
        static = real(self, module)  # type: ignore[arg-type]
        static.prior.normal_()  # a wrong table, and a projection that amplifies it
        static.proj.weight.mul_(10.0)
        return static

    monkeypatch.setattr(cls, "rewrite", broken)
    model = build("spvit_micro")
    with pytest.raises(CheckFailed, match="changed the logits"):
        compile_model(model, target="cpu")
    _compiled, report = compile_model(model, target="cpu", check=False)
    assert report.max_abs_diff is None and all(row.max_abs_diff is None for row in report.rows)
    assert isinstance(report, CompileReport)


# -- static shapes: export with a free batch, trace, torch.compile(fullgraph) ---------------------------------------

EXPORT_CASES = [(name, "cpu") for name in MICRO] + [
    ("convit_micro", "cuda"),  # GPSA's "eager" lowering, as on the cpu target
    ("convit_micro", "tensorrt"),
    ("convit_micro", "onnx"),
    ("convit_base", "tensorrt"),
]


@pytest.mark.parametrize(("name", "target"), EXPORT_CASES)
def test_export_and_trace_with_free_batch(name: str, target: str) -> None:
    compiled, _ = compile_model(build(name), target=target, check=False)
    size = compiled.vitc_cfg.input_size
    x2, x5 = torch.randn(2, *size), torch.randn(5, *size)
    with torch.no_grad():
        expected = compiled(x5)
        exported = export_with_free_batch(compiled, x2)
        assert max_diff(exported.module()(x5), expected) <= 1e-5
        assert max_diff(exported.module()(x5[:1]), compiled(x5[:1])) <= 1e-5
        traced = torch.jit.trace(compiled, x2, check_trace=False)
        assert max_diff(traced(x5), expected) <= 1e-5


@pytest.mark.parametrize("name", ["convit_micro", "cvt_micro"])
def test_torch_compile_fullgraph(name: str) -> None:
    compiled, _ = compile_model(build(name), target="cpu", check=False)
    x = torch.randn(2, 3, 32, 32)
    graph = torch.compile(compiled, fullgraph=True, backend="eager")  # fullgraph: any graph break is an error
    with torch.no_grad():
        assert max_diff(graph(x), compiled(x)) <= 1e-5


# -- a trained checkpoint: identical top-1 on the digits test set ---------------------------------------------------


def test_trained_checkpoint_identical_top1(trained_ckpt: Path) -> None:
    """The session's trained convit_micro (tests/conftest.py): gates, pos_proj and weights carry learned values."""
    from vitc.checkpoint import read_checkpoint
    from vitc.data import eval_transform, load_dataset

    model, _ = read_checkpoint(trained_ckpt)
    cfg = model.vitc_cfg
    test = load_dataset("digits", "test", image_size=cfg.input_size[1])
    x = eval_transform(test.images, cfg.mean, cfg.std)
    with torch.no_grad():
        logits = model(x)
        for target in TARGETS:
            compiled, _report = compile_model(model, target=target)
            out = compiled(x)
            assert max_diff(out, logits) <= 1e-4
            assert torch.equal(out.argmax(-1), logits.argmax(-1)), target
    accuracy = float((logits.argmax(-1) == test.labels).float().mean())
    assert accuracy > 0.5  # trained well past chance (0.1)


# -- issue 20: compiled models under autocast, and a check that ignores the user's TF32 settings ------------
@pytest.mark.parametrize("name", MICRO)
@pytest.mark.parametrize("target", ["cpu", "cuda", "tensorrt"])  # eager lowering with and without zero bias; sdpa
def test_compiled_models_run_under_cpu_autocast(name: str, target: str) -> None:
    """The cpu lowering's lerp took a float32 gate beside bf16 operands: 'expected dtype BFloat16 for weight'."""
    model = build(name)
    compiled, _ = compile_model(model, target=target)
    x = torch.randn(2, *model.vitc_cfg.input_size, generator=torch.Generator().manual_seed(2))
    for dtype, tolerance in ((torch.bfloat16, 0.1), (torch.float16, 0.02)):
        with torch.no_grad(), torch.autocast("cpu", dtype=dtype):
            got, expected = compiled(x), model(x)
        assert got.dtype == expected.dtype == dtype, (dtype, got.dtype)
        assert max_diff(got.float(), expected.float()) <= tolerance * max(1.0, float(expected.float().abs().max()))


@pytest.mark.parametrize(("name", "target"), [(name, "cpu") for name in MICRO] + [("convit_micro", "cuda")])
def test_exported_programs_run_under_cpu_autocast(name: str, target: str) -> None:
    """A program exported in fp32 (`vitc compile --out`'s model.pt2) run under autocast: ConViT's lerp got
    autocast's bf16 operands beside the float32 gate, since the export keeps no casts that were no-ops."""
    model = build(name)
    compiled, _ = compile_model(model, target=target)
    x = torch.randn(2, *model.vitc_cfg.input_size, generator=torch.Generator().manual_seed(2))
    program = export_with_free_batch(compiled, x).module()
    for dtype, tolerance in ((torch.bfloat16, 0.1), (torch.float16, 0.02)):
        with torch.no_grad(), torch.autocast("cpu", dtype=dtype):
            got, expected = program(x), model(x)
        assert max_diff(got.float(), expected.float()) <= tolerance * max(1.0, float(expected.float().abs().max()))


def test_torch_2_4s_exporting_flag_records_the_same_program(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch 2.4 has no torch.compiler.is_exporting; vitc's own flag, forced here on a newer torch, must
    give the program torch's flag gives: the same ops (addcmul, not lerp) and the same logits."""
    from vitc.compile import _exporting, static_gpsa

    compiled, _ = compile_model(build("convit_micro"), target="cpu")
    x = torch.randn(2, *compiled.vitc_cfg.input_size, generator=torch.Generator().manual_seed(3))

    def ops(program: torch.export.ExportedProgram) -> list[str]:
        return [str(node.target) for node in program.graph.nodes if node.op == "call_function"]

    native = export_with_free_batch(compiled, x)
    monkeypatch.setattr(static_gpsa, "is_exporting", _exporting._own_flag)
    own = export_with_free_batch(compiled, x)
    assert ops(own) == ops(native) and any("addcmul" in op for op in ops(own))
    assert not _exporting.is_exporting() and not _exporting._own_flag()  # lowered after the export
    for size in (1, 3):
        batch = torch.randn(size, *compiled.vitc_cfg.input_size, generator=torch.Generator().manual_seed(size))
        assert torch.equal(own.module()(batch), native.module()(batch))


class ClassToken(nn.Module):
    """The pooling every zoo family ends with (x[:, 0]): on torch 2.5 to 2.7 its full slice over the batch
    guarded it against sys.maxsize, which an unbounded Dim failed."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0]


def test_a_full_slice_over_the_free_batch_exports() -> None:
    x = torch.randn(5, 3, 4)
    program = export_with_free_batch(ClassToken(), x[:2])
    for size in (1, 5):
        assert torch.equal(program.module()(x[:size]), x[:size, 0])


def test_the_compile_check_runs_in_full_fp32_and_restores_the_users_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """With TF32 on (a common global setting) the check failed on CUDA: 'changed the logits by 0.000445'."""
    from vitc.compile import pipeline

    seen = []
    real = pipeline._max_abs_diff

    def spy(a: torch.Tensor, b: torch.Tensor) -> float:
        seen.append(
            (
                torch.get_float32_matmul_precision(),
                [getattr(owner, name) for owner, name in precision_flags()],
                torch.is_autocast_enabled("cpu"),
            )
        )
        return real(a, b)

    monkeypatch.setattr(pipeline, "_max_abs_diff", spy)
    before_matmul = torch.get_float32_matmul_precision()
    before = [getattr(owner, name) for owner, name in precision_flags()]
    try:
        torch.backends.cuda.matmul.allow_tf32 = True  # what users write; torch 2.9+ maps it onto fp32_precision
        torch.set_float32_matmul_precision("medium")  # oneDNN bf16 matmuls on CPU, TF32 on CUDA
        user = [getattr(owner, name) for owner, name in precision_flags()]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            _, report = compile_model(build("convit_micro"), target="cpu")
        assert report.max_abs_diff is not None and report.max_abs_diff <= 1e-5
        assert seen and all(
            matmul == "highest" and all(v in (False, "ieee") for v in flags) and not autocast
            for matmul, flags, autocast in seen
        ), seen
        assert torch.get_float32_matmul_precision() == "medium"
        assert [getattr(owner, name) for owner, name in precision_flags()] == user
        assert torch.backends.cuda.matmul.allow_tf32  # the legacy read still works after the restore
    finally:
        torch.set_float32_matmul_precision(before_matmul)
        for (owner, name), value in zip(precision_flags(), before, strict=True):
            setattr(owner, name, value)


@pytest.mark.parametrize("name", MICRO)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_half_precision_model_is_rewritten_in_fp32_and_returned_in_its_dtype(name: str, dtype: torch.dtype) -> None:
    """compile_model(model.to(torch.bfloat16)) stopped in the check ('Input type (float) and bias type
    (c10::BFloat16) should be the same'): the check's inputs were float32. The rewrite and its check run
    in float32 now, and the model comes back in its dtype, the user's model untouched."""
    model = build(name).to(dtype)
    compiled, report = compile_model(model, target="cpu")
    assert report.max_abs_diff is not None and report.max_abs_diff <= 1e-4
    assert {p.dtype for p in compiled.parameters()} == {dtype} == {p.dtype for p in model.parameters()}
    x = torch.randn(2, *model.vitc_cfg.input_size, generator=torch.Generator().manual_seed(2)).to(dtype)
    with torch.no_grad():
        got, expected = compiled(x), model(x)
    scale = max(1.0, float(expected.abs().max()))
    assert got.dtype == dtype and max_diff(got.float(), expected.float()) <= 0.02 * scale
