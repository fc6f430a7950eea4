"""Weight clipping on the deployed weights (Stutz et al., MLSys 2021): |code x scale| <= w_max after every step.

The bound acts on the weights *as deployed*: for a convolution with BatchNorm that is the
folded weight ``w * gain`` with ``gain = gamma / sqrt(running_var + eps)`` (eval-mode folding,
what export stores), for every other layer the latent weight itself. The projection after each
optimizer step is elementwise, ``w <- clamp(w * gain, -w_max, w_max) / gain``, which is the
Euclidean projection of the folded weight onto the box, carried out on the latent weight.

Why BatchNorm needs no reparameterization here: Stutz et al. clip weights that are stored
next to separately stored normalization scales, so the scales can grow and undo the clipping,
and clipping or decaying those scales drives them towards zero; they reparameterize the scales
to stop that. edgefault folds BatchNorm into the int8 weights before they are stored, so the
clipped quantity *is* the stored one: gamma cannot grow around the bound (a larger gamma just
makes the projection shrink the latent weight more), and gamma itself is never clipped, so
nothing pushes it towards zero. Because the per-channel scale is ``max|w| / 127``, clipping also
shrinks the quantization step, which is where its robustness comes from: a flipped high bit
moves a weight by at most about ``2 w_max``.

With ``per_layer=True`` the bound is relative: each layer's bound is ``w_max`` times its
largest deployed |w| at the first projection (its initial range).
"""

from __future__ import annotations

import torch
from torch import nn

from edgefault.models.layers import QuantConv2d, QuantWeightLayer
from edgefault.models.quant import EPS

# Folding (w * gain) and dequantizing (code * scale) each round in float32; projecting a hair inside
# the bound keeps every deployed value at or below it exactly, not just up to rounding.
MARGIN = 1 - 2**-20


def deployed_gain(layer: QuantWeightLayer) -> torch.Tensor | None:
    """Per-output-channel factor that eval-mode BatchNorm folding multiplies into the weight (None: no BatchNorm).

    Example:
        >>> conv = QuantConv2d(1, 2, 3, batchnorm=True)
        >>> deployed_gain(conv)
        tensor([1.0000, 1.0000])
    """
    bn = layer.bn if isinstance(layer, QuantConv2d) else None
    if bn is None:
        return None
    gain = bn.weight.detach() * torch.rsqrt(bn.running_var + bn.eps)
    # A gain of exactly 0 folds to an all-zero channel: any latent weight satisfies the bound.
    return torch.where(gain.abs() < EPS, torch.full_like(gain, EPS), gain)


def deployed_weight(layer: QuantWeightLayer) -> torch.Tensor:
    """The float weight that export quantizes: latent weight times the BatchNorm gain (eval mode).

    Example:
        >>> deployed_weight(QuantWeightLayer((2, 3), bias=False, wbits=8)).shape
        torch.Size([2, 3])
    """
    gain = deployed_gain(layer)
    weight = layer.weight.detach()
    return weight if gain is None else weight * gain.view((-1,) + (1,) * (weight.dim() - 1))


class WeightClipper:
    """Projects every quantized layer's deployed weights onto |w| <= bound; call after each optimizer step.
    """

    def __init__(self, model: nn.Module, bound: float, per_layer: bool = False):
        if not bound > 0:
            raise ValueError(f"the clipping bound must be > 0, got {bound!r}")
        self.layers = [m for m in model.modules() if isinstance(m, QuantWeightLayer)]
        self.bound, self.per_layer = float(bound), per_layer
        self._bounds: list[float] | None = None

    def bounds(self) -> list[float]:
        """The absolute bound of each layer (relative bounds are fixed at the first call)."""
        if self._bounds is None:
            self._bounds = [self.bound * float(deployed_weight(layer).abs().max()) if self.per_layer else self.bound
                            for layer in self.layers]
        return self._bounds

    @torch.no_grad()
    def __call__(self) -> None:
        for layer, bound in zip(self.layers, self.bounds()):
            bound *= MARGIN
            gain = deployed_gain(layer)
            if gain is None:
                layer.weight.clamp_(-bound, bound)
                continue
            shape = (-1,) + (1,) * (layer.weight.dim() - 1)
            limit = (bound / gain.abs()).view(shape)
            layer.weight.copy_(torch.maximum(torch.minimum(layer.weight, limit), -limit))
