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


# Ops that move quantized codes without changing them: a weight layer's input quantizer sits behind them.
_PASS_THROUGH_MODULES = (nn.MaxPool2d, nn.Flatten, nn.Identity)
_PASS_THROUGH_FUNCTIONS = ("flatten", "reshape", "view", "permute", "max_pool2d")


def _producer(graph: torch.fx.GraphModule, node: torch.fx.Node) -> ActQuant | None:
    while True:
        if node.op == "call_module":
            module = graph.get_submodule(node.target)
            if isinstance(module, ActQuant):
                return module
            if not isinstance(module, _PASS_THROUGH_MODULES):
                return None
        elif not (node.op in ("call_function", "call_method") and
                  getattr(node.target, "__name__", str(node.target)) in _PASS_THROUGH_FUNCTIONS):
            return None
        node = node.args[0]


def link_input_quantizers(model: nn.Module) -> None:
    """Tell each quantized conv/linear layer which activation quantizer feeds it.

    The deployed kernels add the bias in the int32 accumulator, on the grid input_step *
    weight_scale; knowing the input quantizer lets the layer train with its bias on that grid,
    so PyTorch and ONNX Runtime add the same bias. Stored as a one-element tuple, so it is not a
    registered submodule and the state dict does not change.

    Example:
        >>> from edgefault.models import create_model
        >>> model = create_model("lenet5")  # create_model links them
        >>> model.fc1.input_quant[0] is model.act2
        True
    """
    graph = trace_model(model)
    for node in graph.graph.nodes:
        if node.op == "call_module" and isinstance(graph.get_submodule(node.target), QuantWeightLayer):
            producer = _producer(graph, node.args[0])
            if producer is not None:
                model.get_submodule(node.target).input_quant = (producer,)
