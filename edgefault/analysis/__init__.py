"""Sharpness analysis of trained models: SAM sharpness, Hessian spectrum and trace, loss landscapes.

``analyze_sharpness`` measures a run directory (or a model) and writes metrics.json and the
landscape plots; the functions in :mod:`edgefault.analysis.curvature` and
:mod:`edgefault.analysis.landscape` take any loss closure and parameter list.
"""

from edgefault.analysis.curvature import (
    PowerIteration, SamSharpness, TraceEstimate, gradient, hessian_trace, hessian_vector_product, loss_value,
    sam_sharpness, top_eigenvalue,
)
from edgefault.analysis.landscape import filter_normalized_direction, landscape_1d, landscape_2d
from edgefault.analysis.objective import WEIGHT_SPACES, ModelObjective
from edgefault.analysis.report import Landscape, SharpnessConfig, SharpnessReport
from edgefault.analysis.sharpness import analyze_sharpness, check_output_dir, load_report

__all__ = [
    "Landscape", "ModelObjective", "PowerIteration", "SamSharpness", "SharpnessConfig", "SharpnessReport",
    "TraceEstimate", "WEIGHT_SPACES", "analyze_sharpness", "check_output_dir", "filter_normalized_direction",
    "gradient", "hessian_trace", "hessian_vector_product", "landscape_1d", "landscape_2d", "load_report",
    "loss_value", "sam_sharpness", "top_eigenvalue",
]
