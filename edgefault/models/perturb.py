"""Perturb parameters and restore them exactly: the one helper of sharpness-aware training and of sharpness analysis."""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch


@contextlib.contextmanager
def restoring(params: Sequence[torch.Tensor]) -> Iterator[list[torch.Tensor]]:
    """Save the parameters' values, yield the copies, and write them back bit for bit on exit.

    Restoring by copying (not by subtracting the perturbation) keeps the weights exact:
    ``(w + e) - e`` is not always ``w`` in floating point.

    Example:
        >>> x = torch.tensor([0.1])
        >>> with restoring([x]) as (saved,):
        ...     _ = x.add_(1e-3)
        >>> x.tolist()
        [0.10000000149011612]
    """
    saved = [p.detach().clone() for p in params]
    try:
        yield saved
    finally:
        with torch.no_grad():
            for param, value in zip(params, saved):
                param.copy_(value)


def set_offset(params: Sequence[torch.Tensor], origin: Sequence[torch.Tensor],
               offsets: Sequence[torch.Tensor]) -> None:
    """Set each parameter to ``origin + offset`` in place (``origin`` from :func:`restoring`).

    Example:
        >>> x = torch.zeros(2)
        >>> set_offset([x], [torch.ones(2)], [torch.ones(2)]); x.tolist()
        [2.0, 2.0]
    """
    with torch.no_grad():
        for param, base, offset in zip(params, origin, offsets):
            param.copy_(base + offset)
