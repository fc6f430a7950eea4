"""Export trained models to int8 QDQ ONNX that ONNX Runtime runs with integer kernels.

Example:
    >>> from edgefault.export import export_run
"""

from edgefault.export.api import ExportReport, ExportSettings, export_model, export_run, model_metadata
from edgefault.export.graph import INPUT_NAME, OUTPUT_NAME, build_onnx
from edgefault.export.verify import Parity, check_parity

__all__ = [
    "ExportReport", "ExportSettings", "INPUT_NAME", "OUTPUT_NAME", "Parity", "build_onnx", "check_parity",
    "export_model", "export_run", "model_metadata",
]
