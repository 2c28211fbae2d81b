"""Issue 20's inference choices: CvT's k/v convs per target, pass options for measurements, torch.compile
over the compiled modules (SDPAAttention, StaticConvAttention, static GPSA and SP-SA)."""

from __future__ import annotations

import pytest
import torch

from vitc.compile import TARGETS, compile_model
from vitc.compile.fold_cvt_projections import StaticConvAttention
from vitc.errors import VitcError

from .conftest import MICRO, build, max_diff


def _cvt_attention(model: torch.nn.Module) -> list[StaticConvAttention]:
    return [m for m in model.modules() if isinstance(m, StaticConvAttention)]


@pytest.mark.parametrize("target", TARGETS)
def test_kv_convs_merged_for_cpu_and_onnx_apart_for_cuda_and_tensorrt(target: str) -> None:
    """The merged multiplier-2 conv made compiled cvt_13 slower than eager on an H200 (issue 20)."""
    model = build("cvt_micro")
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    compiled, report = compile_model(model, target=target)
    attentions = _cvt_attention(compiled)
    assert len(attentions) == 5
    merged = target in ("cpu", "onnx")
    assert all((a.conv_kv is not None) == merged and (a.conv_k is None) == merged for a in attentions)
    assert all(a.sdpa == (target != "onnx") for a in attentions)
    with torch.no_grad():
        assert report.max_abs_diff is not None and report.max_abs_diff <= 1e-5
        assert max_diff(compiled(x), model(x)) <= 1e-5


def test_pass_options_vary_a_target_for_measurements() -> None:
    model = build("cvt_micro")
    options = {"fold_cvt_projections": {"merge_kv": True}, "static_attention": None}
    compiled, report = compile_model(model, target="cuda", pass_options=options)
    assert all(a.conv_kv is not None and not a.sdpa for a in _cvt_attention(compiled))
    assert [r.name for r in report.rows] == [
        "static_gpsa", "static_spatial_prior", "fold_cvt_projections", "fold_stem_batchnorm"
    ]  # fmt: skip
    assert report.max_abs_diff is not None and report.max_abs_diff <= 1e-5
    with pytest.raises(VitcError, match="static_attention, not in the onnx pipeline"):
        compile_model(model, target="onnx", pass_options={"static_attention": {}})


@pytest.mark.parametrize("name", MICRO)
@pytest.mark.parametrize("target", ["cpu", "cuda", "tensorrt"])  # eager lowering with and without zero bias; sdpa
def test_torch_compile_traces_the_compiled_modules_whole(name: str, target: str) -> None:
    """AOTAutograd (what inductor compiles from) traces every compiled module in one graph, same logits.

    Inductor itself on these models: docs/benchmarks.md (first call 20-60 s per micro model on 2 cores).
    """
    compiled, _ = compile_model(build(name), target=target, check=False)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    graph = torch.compile(compiled, backend="aot_eager", fullgraph=True)  # a graph break is an error
    with torch.inference_mode():
        assert max_diff(graph(x), compiled(x)) <= 1e-5
