"""Running ONNX models in ONNX Runtime: inputs, metadata, scoring, sparsity, timing and kernel counts.
"""

from edgefault.runtime.evaluate import EvalOptions, EvalReport, evaluate_model
from edgefault.runtime.graph import KernelCounts, count_kernels, optimized_kernel_counts, optimized_model
from edgefault.runtime.feed import check_classes, prepare_inputs
from edgefault.runtime.inputs import InputOptions, InputSpec, PreparedInputs, resolve_input_spec, resolve_model_input
from edgefault.runtime.modelio import ModelIO, model_io
from edgefault.runtime.metadata import ModelMetadata
from edgefault.runtime.session import Evaluator, Score, SessionSettings
from edgefault.runtime.sparsity import SparsityReport, measure_sparsity
from edgefault.runtime.timing import Timing, TimingSettings, measure_timing

__all__ = [
    "EvalOptions",
    "EvalReport",
    "Evaluator",
    "InputOptions",
    "InputSpec",
    "KernelCounts",
    "ModelIO",
    "ModelMetadata",
    "PreparedInputs",
    "Score",
    "SessionSettings",
    "SparsityReport",
    "Timing",
    "TimingSettings",
    "check_classes",
    "count_kernels",
    "evaluate_model",
    "measure_sparsity",
    "measure_timing",
    "model_io",
    "optimized_kernel_counts",
    "optimized_model",
    "prepare_inputs",
    "resolve_input_spec",
    "resolve_model_input",
]
