"""One optimization step, conventional or sharpness-aware (SAM, ASAM, SAQ).

SAM (Foret et al. 2021) ascends to w + rho g/||g|| and descends with the gradient found there.
ASAM (Kwon et al. 2021) scales the ascent by T = |w| + eta: e = rho T^2 g / ||T g||.
SAQ (Liu et al. 2023) perturbs the *quantized* weights: e = rho g_q / ||g|| with g_q the gradient
with respect to each layer's fake-quantized weight, added after the quantizer, and one global
norm over those, the biases and the BatchNorm affine parameters (which are perturbed directly,
as in the SAQ authors' code). The second pass's gradient reaches the latent weights through the
straight-through estimator. Every perturbation is undone before the optimizer step.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
from torch import nn

from edgefault.models.layers import QuantWeightLayer
from edgefault.models.quant import EPS
from edgefault.models.perturb import restoring, set_offset

LossClosure = Callable[[], tuple[torch.Tensor, torch.Tensor]]  # returns (loss, logits)


@contextlib.contextmanager
def frozen_batchnorm_statistics(model: nn.Module) -> Iterator[None]:
    """Keep BatchNorm running statistics still during a second, perturbed forward pass."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum


def plain_step(closure: LossClosure, optimizer: torch.optim.Optimizer) -> tuple[torch.Tensor, torch.Tensor]:
    """A conventional step: forward, backward, update.
    """
    optimizer.zero_grad(set_to_none=True)
    loss, logits = closure()
    loss.backward()
    optimizer.step()
    return loss.detach(), logits.detach()


def _ascend_and_descend(model, closure, optimizer, perturb: Callable[[], Callable[[], None]]):
    optimizer.zero_grad(set_to_none=True)
    loss, logits = closure()
    loss.backward()
    restore = perturb()
    optimizer.zero_grad(set_to_none=True)
    try:
        with frozen_batchnorm_statistics(model):
            perturbed_loss, _ = closure()
        perturbed_loss.backward()
    finally:
        restore()
    optimizer.step()
    return loss.detach(), logits.detach()


def _shift_parameters(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> Callable[[], None]:
    """Add each offset to its parameter; return the call that restores them exactly."""
    stack = contextlib.ExitStack()
    params = [param for param, _ in pairs]
    set_offset(params, stack.enter_context(restoring(params)), [offset for _, offset in pairs])
    return stack.close


def sam_step(model: nn.Module, closure: LossClosure, optimizer: torch.optim.Optimizer, rho: float,
             adaptive: bool = False, eta: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """SAM, or ASAM with ``adaptive=True``: perturb every parameter, take the gradient there, restore, step.
    """

    def perturb():
        params = [p for p in model.parameters() if p.grad is not None]
        with torch.no_grad():
            scales = [(p.abs() + eta) if adaptive else torch.ones_like(p) for p in params]
            norm = torch.sqrt(sum(((s * p.grad) ** 2).sum() for s, p in zip(scales, params))).clamp_min(EPS)
            offsets = [rho * s * s * p.grad / norm for s, p in zip(scales, params)]
        return _shift_parameters(list(zip(params, offsets)))

    return _ascend_and_descend(model, closure, optimizer, perturb)


def _saq_direct_parameters(model: nn.Module) -> list[torch.Tensor]:
    """Biases and BatchNorm affine parameters: perturbed in parameter space by SAQ."""
    direct = []
    for module in model.modules():
        if isinstance(module, QuantWeightLayer) and module.bias is not None:
            direct.append(module.bias)
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine:
            direct += [module.weight, module.bias]
    return direct


def saq_step(model: nn.Module, closure: LossClosure, optimizer: torch.optim.Optimizer,
             rho: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Sharpness-aware quantization: perturb the quantized weights after the quantizer.
    """
    layers = [m for m in model.modules() if isinstance(m, QuantWeightLayer)]
    for layer in layers:
        layer.capture_quantized_weight = True

    def perturb():
        for layer in layers:
            layer.capture_quantized_weight = False
        direct = [p for p in _saq_direct_parameters(model) if p.grad is not None]
        with torch.no_grad():
            grads = [layer.quantized_weight.grad for layer in layers] + [p.grad for p in direct]
            norm = torch.sqrt(sum((g**2).sum() for g in grads)).clamp_min(EPS)
            for layer in layers:
                layer.weight_perturbation = rho * layer.quantized_weight.grad / norm
                layer.quantized_weight = None
            restore_direct = _shift_parameters([(p, rho * p.grad / norm) for p in direct])

        def restore() -> None:
            for layer in layers:
                layer.weight_perturbation = None
            restore_direct()

        return restore

    try:
        return _ascend_and_descend(model, closure, optimizer, perturb)
    finally:
        for layer in layers:
            layer.capture_quantized_weight = False
            layer.quantized_weight = None
