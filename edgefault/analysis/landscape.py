"""Filter-normalized loss landscapes (Li, Xu, Taylor, Studer and Goldstein, NeurIPS 2018).

A random Gaussian direction d is rescaled filter by filter, d_i <- d_i ||w_i|| / ||d_i||, where a
filter is one output channel of a convolution or one output row of a linear layer. The loss is
then sampled along w + a d (1-D) or on the plane w + a d1 + b d2 (2-D). Filter normalization
removes the scale invariance of ReLU networks (and the scale a quantizer or BatchNorm puts on a
layer's weights), so landscapes of different models can be compared side by side. Vectors
(biases, BatchNorm parameters) get a zero direction, as in the paper.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from edgefault.analysis.curvature import LossClosure, StepCallback, loss_value
from edgefault.models.perturb import restoring, set_offset
from edgefault.models.quant import EPS


def filter_normalized_direction(weights: Sequence[torch.Tensor], generator: torch.Generator) -> list[torch.Tensor]:
    """A random direction whose every filter has the norm of the matching weight filter.

    Tensors of one dimension or fewer (biases, BatchNorm scales and shifts) get zeros and use no
    random numbers, so adding or removing them does not change the other tensors' directions.
    A filter whose weights are all zero gets a zero direction.

    Example:
        >>> w = torch.tensor([[3.0, 4.0], [0.0, 1.0]])
        >>> d, b = filter_normalized_direction([w, torch.ones(2)], torch.Generator().manual_seed(0))
        >>> d.norm(dim=1).tolist(), b.tolist()
        ([5.0, 1.0], [0.0, 0.0])
    """
    directions = []
    for weight in weights:
        if weight.dim() <= 1:
            directions.append(torch.zeros_like(weight))
            continue
        direction = torch.randn(weight.shape, generator=generator, dtype=weight.dtype).to(weight.device)
        shape = (-1,) + (1,) * (weight.dim() - 1)
        weight_norms = weight.detach().flatten(1).norm(dim=1)
        direction_norms = direction.flatten(1).norm(dim=1).clamp_min(EPS)
        directions.append(direction * (weight_norms / direction_norms).view(shape))
    return directions


def grid(extent: float, points: int) -> np.ndarray:
    """``points`` evenly spaced coordinates from -extent to extent (0 included when points is odd).

    Example:
        >>> grid(1.0, 5).tolist()
        [-1.0, -0.5, 0.0, 0.5, 1.0]
    """
    values = np.linspace(-extent, extent, points)
    if points % 2:
        values[points // 2] = 0.0  # exactly: the middle point is the trained weights themselves
    return values


def landscape_1d(closure: LossClosure, params: Sequence[torch.Tensor], direction: Sequence[torch.Tensor],
                 alphas: Sequence[float], on_step: StepCallback | None = None) -> np.ndarray:
    """Loss at ``params + a * direction`` for each a in ``alphas``; the parameters are restored exactly.

    Example:
        >>> x = torch.zeros(1)
        >>> landscape_1d(lambda: (x**2).sum(), [x], [torch.ones(1)], [-1.0, 0.0, 2.0]).tolist()
        [1.0, 0.0, 4.0]
    """
    losses = np.empty(len(alphas))
    with restoring(params) as origin:
        for index, alpha in enumerate(alphas):
            set_offset(params, origin, [float(alpha) * d for d in direction])
            losses[index] = loss_value(closure)
            if on_step is not None:
                on_step()
    return losses


def landscape_2d(closure: LossClosure, params: Sequence[torch.Tensor],
                 directions: tuple[Sequence[torch.Tensor], Sequence[torch.Tensor]],
                 alphas: Sequence[float], betas: Sequence[float],
                 on_step: StepCallback | None = None) -> np.ndarray:
    """Loss at ``params + a * d1 + b * d2``: an array indexed [b, a] (rows follow ``betas``).

    Example:
        >>> x = torch.zeros(2)
        >>> d1, d2 = [torch.tensor([1.0, 0.0])], [torch.tensor([0.0, 1.0])]
        >>> landscape_2d(lambda: (x**2).sum(), [x], (d1, d2), [0.0, 1.0], [0.0, 2.0]).tolist()
        [[0.0, 1.0], [4.0, 5.0]]
    """
    first, second = directions
    losses = np.empty((len(betas), len(alphas)))
    with restoring(params) as origin:
        for row, beta in enumerate(betas):
            for column, alpha in enumerate(alphas):
                set_offset(params, origin, [float(alpha) * a + float(beta) * b for a, b in zip(first, second)])
                losses[row, column] = loss_value(closure)
                if on_step is not None:
                    on_step()
    return losses
