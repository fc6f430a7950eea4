"""Learned per-layer clipping ranges (WCAT-style; Chitsaz et al., TMLR 2023).

Each quantized layer gets a trained range ``a`` (one scalar per layer). Its quantizer uses the
per-channel scale ``s_c = min(max|w_c|, |a|) / qmax`` on the deployed (BatchNorm-folded)
weight, so channels wider than the range saturate at the top code. A decay ``decay * a^2 / 2``
per layer pulls the ranges down; the task loss pushes back where clipping hurts.

The straight-through gradient of ``q = round(clamp(w / s, -qmax, qmax)) * s`` with respect to
``a`` (through ``s = a / qmax`` on the clipped channels) is LSQ's (Esser et al. 2020): the
rounding passes gradients straight through, so dq/da = sign(w) for saturated weights
(|w| >= a) and (round(w/s) - w/s) / qmax inside the range; the weights themselves get
dq/dw = 1 inside and 0 where they saturate. Ranges start at each layer's deployed max|w|.

At the end of training :func:`bake_learned_clip` clips every layer's deployed weights to its
learned range (:class:`~edgefault.train.clipping.WeightClipper`'s projection) and removes the
range, so the checkpoint is a plain model whose quantizer computes the same codes and scales.
"""

from __future__ import annotations

import torch
from torch import nn

from edgefault.models.layers import QuantWeightLayer
from edgefault.train.clipping import WeightClipper, deployed_weight


def _layers(model: nn.Module) -> list[QuantWeightLayer]:
    return [m for m in model.modules() if isinstance(m, QuantWeightLayer)]


def enable_learned_clip(model: nn.Module) -> list[nn.Parameter]:
    """Give each quantized layer a trained range, started at its deployed max|w|; returns the new parameters.

    Call before the optimizer is built, so the ranges are among ``model.parameters()``.
    """
    ranges = []
    for layer in _layers(model):
        weight = deployed_weight(layer)
        layer.weight_range = nn.Parameter(weight.abs().max().clone().to(weight.device))
        ranges.append(layer.weight_range)
    return ranges


def range_penalty(model: nn.Module, decay: float) -> torch.Tensor | float:
    """The decay term ``decay / 2 * sum(a^2)`` over the learned ranges (0 when there are none).
    """
    ranges = [layer.weight_range for layer in _layers(model) if layer.weight_range is not None]
    if not ranges or decay == 0:
        return 0.0
    return decay / 2 * sum(r**2 for r in ranges)


@torch.no_grad()
def bake_learned_clip(model: nn.Module) -> list[float]:
    """Clip each layer's deployed weights to its learned range and drop the range; returns the ranges.
    """
    layers = [layer for layer in _layers(model) if layer.weight_range is not None]
    bounds = [float(layer.weight_range.abs().clamp_min(1e-8)) for layer in layers]
    for layer, bound in zip(layers, bounds):
        clipper = WeightClipper(nn.ModuleList([layer]), bound)
        clipper()
        layer.weight_range = None
    return bounds
