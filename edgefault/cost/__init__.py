"""What activation sparsity buys: a zero-skipping accelerator modelled from a model's real integer activations.

``model_cost(model_path, data_spec, accelerator)`` runs the model's test images in ONNX
Runtime, reads every conv/linear layer's integer input, and gives cycles (dense, zero-gating,
zero-skipping ideal and with lane imbalance), activation storage per format and energy, per
layer and in total (:class:`CostReport`). See docs/cost-model.md.
"""

from edgefault.cost.accelerator import Accelerator, accelerator_from_dict, load_accelerator
from edgefault.cost.api import CostOptions, cost_of_inputs, model_cost
from edgefault.cost.report import CostReport, LayerCost

__all__ = [
    "Accelerator",
    "CostOptions",
    "CostReport",
    "LayerCost",
    "accelerator_from_dict",
    "cost_of_inputs",
    "load_accelerator",
    "model_cost",
]
