"""Watching the post-activation quantizers: per-layer sparsity and the L1 activation penalty."""

from __future__ import annotations

import torch
from torch import nn

from edgefault.models.quant import ActQuant


def activation_quantizers(model: nn.Module) -> dict[str, ActQuant]:
    """The post-activation (ReLU/FATReLU) quantizers of a model, by module name, in definition order.

    Example:
        >>> from edgefault.models import create_model
        >>> list(activation_quantizers(create_model("lenet5")))[:2]
        ['act1', 'act2']
    """
    return {name: m for name, m in model.named_modules() if isinstance(m, ActQuant) and m.role == "activation"}


class ActivationMonitor:
    """Forward hooks on the activation quantizers that count exact zeros and sum an L1 penalty.

    Use as a context manager so the hooks are always removed.

    Example:
        >>> from edgefault.models import create_model
        >>> model = create_model("lenet5").eval()
        >>> with ActivationMonitor(model) as monitor:
        ...     _ = model(torch.randn(2, 1, 28, 28))
        >>> 0.0 <= monitor.sparsity()["overall"] <= 1.0
        True
    """

    def __init__(self, model: nn.Module, track_l1: bool = False):
        self.quantizers = activation_quantizers(model)
        self.track_l1 = track_l1
        self.zeros = {name: 0 for name in self.quantizers}
        self.totals = {name: 0 for name in self.quantizers}
        self.l1_terms: list[torch.Tensor] = []
        self._handles = []

    def _hook(self, name: str):
        def record(module, inputs, output):
            self.zeros[name] += int((output.detach() == 0).sum())
            self.totals[name] += output.numel()
            if self.track_l1:
                self.l1_terms.append(output.abs().mean())

        return record

    def __enter__(self) -> "ActivationMonitor":
        self._handles = [q.register_forward_hook(self._hook(name)) for name, q in self.quantizers.items()]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def take_l1(self) -> torch.Tensor:
        """Sum of the mean |activation| of every quantizer since the last call (the L1 penalty), then reset."""
        total = torch.stack(self.l1_terms).sum() if self.l1_terms else torch.zeros(())
        self.l1_terms = []
        return total

    def sparsity(self) -> dict[str, float]:
        """Share of exact zeros per layer, and ``overall`` over all post-activation values."""
        result = {name: self.zeros[name] / max(self.totals[name], 1) for name in self.quantizers}
        result["overall"] = sum(self.zeros.values()) / max(sum(self.totals.values()), 1)
        return result
