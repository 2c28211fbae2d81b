"""`vitc compile`: rewrite GPSA, spatial priors and CvT projections into static inference modules.

    from vitc.compile import compile_model, CompileReport
    compiled, report = compile_model(model, target="cpu")

Each pass (one module each, framework in `_base`) matches one kind of research-time module and
replaces it by a static equivalent; `pipeline.PIPELINES` lists the passes per target.
`CUDAGraphs` replays a (compiled) model's forward from one CUDA graph per input shape.
"""

from vitc.compile._base import PASSES, Pass, register_pass
from vitc.compile.cuda_graph import CUDAGraphs
from vitc.compile.pipeline import PIPELINES, TARGETS, check_inputs, compile_model
from vitc.compile.report import TOLERANCE, CompileReport, PassRow

__all__ = [
    "PASSES",
    "PIPELINES",
    "TARGETS",
    "TOLERANCE",
    "CUDAGraphs",
    "CompileReport",
    "Pass",
    "PassRow",
    "check_inputs",
    "compile_model",
    "register_pass",
]
