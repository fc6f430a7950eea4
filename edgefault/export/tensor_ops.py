"""The exporter's ops for transformers: reshapes and permutations of codes, products, softmax, LayerNorm, means.

Mixed into the graph writer of :mod:`edgefault.export.graph`. Reshapes and permutations move
quantization codes without changing them, so they act on the uint8 tensor and keep its scale;
everything else reads float (a fresh DequantizeLinear per consumer) and writes float, which the
next ``ActQuant`` quantizes. Laid out so ONNX Runtime 1.32 fuses (measured on x86, AVX-512 VNNI):
``DQ(a) @ DQ(b) -> Q`` becomes QLinearMatMul (activation by activation, as in attention),
``DQ -> Softmax -> Q`` becomes QLinearSoftmax; LayerNormalization and ReduceMean stay float.
"""

from __future__ import annotations

import operator

import numpy as np
import torch
import torch.fx
from torch import nn

from edgefault.errors import EdgefaultError

_RESHAPES = (torch.reshape, "reshape", "view")
_MATMULS = (torch.matmul, operator.matmul, "matmul")
_SOFTMAXES = (torch.softmax, torch.nn.functional.softmax, "softmax")
_MEANS = (torch.mean, "mean")


def _int_list(fx_node: torch.fx.Node, values) -> list[int]:
    flat = list(values[0]) if len(values) == 1 and isinstance(values[0], (tuple, list)) else list(values)
    if not flat or not all(isinstance(v, int) for v in flat):
        raise EdgefaultError(f"cannot export {fx_node.name!r}: its shape or dims must be constant integers "
                             "(write x.reshape(-1, n, ...) with Python ints, not sizes read from the tensor)")
    return flat


class TensorOps:
    """Export handlers for the tensor operations a vision transformer uses (see the module docstring)."""

    def parameter(self, fx_node: torch.fx.Node):
        """A model parameter or buffer read in ``forward`` (a position embedding): a float initializer."""
        value = self.module
        for part in fx_node.target.split("."):
            value = getattr(value, part)
        if not isinstance(value, torch.Tensor):
            raise EdgefaultError(f"cannot export {fx_node.name!r}: {fx_node.target} is not a tensor")
        name = self.constant(fx_node.target, value.detach().float().numpy())
        return self.float_value(name)

    def layer_norm(self, norm: nn.LayerNorm, x, out: str):
        if len(norm.normalized_shape) != 1 or not norm.elementwise_affine:
            raise EdgefaultError(f"cannot export {out!r}: LayerNorm over one axis with weight and bias is supported")
        weight = self.constant(f"{out}.weight", norm.weight.detach().float().numpy())
        bias = self.constant(f"{out}.bias", (norm.bias.detach() if norm.bias is not None
                                             else torch.zeros_like(norm.weight)).float().numpy())
        return self.float_value(self.node("LayerNormalization", [self.float_input(x), weight, bias], out,
                                          axis=-1, epsilon=float(norm.eps)))

    def tensor_op(self, fx_node: torch.fx.Node):
        """The ONNX nodes of one reshape/permute/matmul/softmax/mean FX node, or None if it is none of those."""
        target, out = fx_node.target, fx_node.name
        if target in _RESHAPES:
            shape = self.constant(f"{out}.shape", np.array(_int_list(fx_node, fx_node.args[1:]), np.int64))
            return self.move_codes(self.arg(fx_node), "Reshape", [shape], out)
        if target == "permute" or target is torch.permute:
            return self.move_codes(self.arg(fx_node), "Transpose", [], out, perm=_int_list(fx_node, fx_node.args[1:]))
        if target in _MATMULS and len(fx_node.args) == 2:
            a, b = self.float_input(self.arg(fx_node, 0)), self.float_input(self.arg(fx_node, 1))
            return self.float_value(self.node("MatMul", [a, b], out))
        if target in _SOFTMAXES:
            dim = fx_node.args[1] if len(fx_node.args) > 1 else fx_node.kwargs.get("dim")
            if not isinstance(dim, int):
                raise EdgefaultError(f"cannot export {out!r}: softmax needs an explicit integer dim")
            return self.float_value(self.node("Softmax", [self.float_input(self.arg(fx_node))], out, axis=dim))
        if target in _MEANS:
            dim = fx_node.args[1] if len(fx_node.args) > 1 else fx_node.kwargs.get("dim")
            if fx_node.kwargs.get("keepdim", False) or dim is None:
                raise EdgefaultError(f"cannot export {out!r}: only mean over given dims without keepdim is supported")
            axes = [dim] if isinstance(dim, int) else _int_list(fx_node, [dim])
            return self.float_value(self.node("ReduceMean", [self.float_input(self.arg(fx_node))], out,
                                              axes=axes, keepdims=0))
        return None

    def move_codes(self, x, op: str, inputs: list[str], out: str, **attributes):
        """Reshape/Transpose: on uint8 codes they keep the scale and zero point (no dequantization)."""
        return self.replace_name(x, self.node(op, [x.name, *inputs], out, **attributes))
