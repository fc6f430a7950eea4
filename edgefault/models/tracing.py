"""Symbolic tracing with the quantized layers kept as leaves, so an exporter sees the model's dataflow."""

from __future__ import annotations

import torch.fx
from torch import nn

from edgefault.models.layers import QuantWeightLayer
from edgefault.models.quant import ActQuant


class _QuantLeafTracer(torch.fx.Tracer):
    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return isinstance(module, (QuantWeightLayer, ActQuant)) or super().is_leaf_module(module, qualified_name)


def trace_model(model: nn.Module) -> torch.fx.GraphModule:
    """Trace ``model`` into an FX graph whose call_module nodes are quantized layers, quantizers and pools.

    Example:
        >>> from edgefault.models import create_model
        >>> graph = trace_model(create_model("lenet5"))
        >>> [n.target for n in graph.graph.nodes][:3]
        ['x', 'input_quant', 'conv1']
    """
    tracer = _QuantLeafTracer()
    graph = tracer.trace(model)
    return torch.fx.GraphModule(model, graph)
