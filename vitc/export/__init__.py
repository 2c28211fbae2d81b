"""`vitc export`: checkpoint → compiled model → ONNX with the precision baked in, checked and measured.

Heavy packages (torch, onnx, onnxruntime, onnxscript) are imported lazily inside the functions.
"""

from vitc.artifacts.precision import PRECISIONS
from vitc.export.pipeline import ExportOptions, ExportResult, export_checkpoint

__all__ = ["PRECISIONS", "ExportOptions", "ExportResult", "export_checkpoint"]
