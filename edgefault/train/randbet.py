"""Random bit error training (RandBET; Stutz, Chandramoorthy, Hein, Schiele, MLSys 2021).

Each step takes the gradient of the clean quantized model and the gradient of the same model
whose integer weight codes carry fresh random bit errors, clamps the second elementwise to
[-clamp, clamp] (a few flipped high bits can make it huge), and descends along their average.

The faults follow ``inject --kind flip`` semantics on the stored bits: a k-bit weight has k
cells in two's complement, each flips independently with probability ``rate``, and the faulty
k-bit code is sign-extended (so an int8 code may become -128, as on a device). They are drawn
on the codes of the training forward pass (BatchNorm folded with the batch statistics), fresh
every step from the run's own generator; the perturbed pass keeps the BatchNorm running
statistics still. The gradient reaches the latent weights straight through the faults: the
faulty code is ``codes + (faulty - codes).detach()``, so d(faulty)/d(codes) = 1, as in the
authors' code, which applies the perturbed model's gradient to the clean weights.

Curriculum: injection starts once an exponential moving average of the clean training loss has
fallen below ``loss_threshold`` (0 starts at once); the authors start it once the clean loss is
low, because bit errors on an untrained model only slow training down.

RandBET wraps the step's optimizer (:meth:`RandBET.wrap`), so it composes with a conventional
step and with SAM, ASAM and SAQ: the clean half is whatever gradient that step would apply.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from edgefault.models.layers import QuantWeightLayer
from edgefault.train.steps import frozen_batchnorm_statistics

LOSS_AVERAGE = 0.9  # weight of the past in the curriculum's moving average of the clean loss
DENSE_RATE = 0.25  # above this rate one uniform draw per stored bit is cheaper than sampling the gaps


def flip_code_bits(codes: torch.Tensor, rate: float, bits: int, generator: torch.Generator) -> torch.Tensor:
    """Flip each of the ``bits`` stored two's-complement bits of integer ``codes`` independently w.p. ``rate``.

    Codes are floats holding integers (the quantizer's output); the result is sign-extended from
    ``bits`` bits, in the same dtype.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> flip_code_bits(torch.tensor([5.0, -3.0]), 1.0, 8, g)  # every bit flips: ~x = -x - 1
        tensor([-6.,  2.])
    """
    words = codes.to(torch.int32) & ((1 << bits) - 1)
    mask = _dense_mask(words, rate, bits, generator) if rate > DENSE_RATE else _sparse_mask(words, rate, bits, generator)
    words = words ^ mask
    words = torch.where(words >= 1 << (bits - 1), words - (1 << bits), words)
    return words.to(codes.dtype)


def _dense_mask(words: torch.Tensor, rate: float, bits: int, generator: torch.Generator) -> torch.Tensor:
    mask = torch.zeros_like(words)
    for bit in range(bits):
        hits = torch.rand(words.shape, generator=generator, device=words.device) < rate
        mask |= hits.to(torch.int32) << bit
    return mask


def _sparse_mask(words: torch.Tensor, rate: float, bits: int, generator: torch.Generator) -> torch.Tensor:
    # Bernoulli(rate) over all numel * bits cells, drawn as geometric gaps between faulty cells:
    # the cost follows the number of faults, not of bits (the same trick as edgefault.faults' sampler).
    total = words.numel() * bits
    mask = torch.zeros(words.numel(), dtype=torch.int32, device=words.device)
    if rate <= 0 or total == 0:
        return mask.view(words.shape)
    expected = total * rate
    scale = math.log1p(-rate)
    positions, last = [], -1
    while last < total:
        draws = int(expected + 6 * math.sqrt(expected) + 16)
        uniform = torch.rand(draws, generator=generator, device=words.device, dtype=torch.float64)
        gaps = torch.floor(torch.log1p(-uniform) / scale).to(torch.int64) + 1
        chunk = last + torch.cumsum(gaps, 0)
        positions.append(chunk)
        last = int(chunk[-1])
    cells = torch.cat(positions)
    cells = cells[cells < total]
    mask.index_put_((cells // bits,), (1 << (cells % bits)).to(torch.int32), accumulate=True)  # distinct bits: sum = or
    return mask.view(words.shape)


class RandBET:
    """The RandBET state of one training run: its layers, generator and curriculum.
    """

    def __init__(self, model: nn.Module, rate: float, generator: torch.Generator, clamp: float = 0.05,
                 loss_threshold: float = 0.0):
        self.model = model
        self.layers = [m for m in model.modules() if isinstance(m, QuantWeightLayer)]
        self.rate, self.clamp, self.loss_threshold = float(rate), float(clamp), float(loss_threshold)
        self.generator = generator
        self.active = loss_threshold <= 0
        self.started_at: int | None = 0 if self.active else None
        self._average: float | None = None
        self._steps = 0

    def observe(self, clean_loss: torch.Tensor | float) -> None:
        """Feed one step's clean loss to the curriculum (starts injection below the threshold)."""
        self._steps += 1
        value = float(clean_loss)
        self._average = value if self._average is None else LOSS_AVERAGE * self._average + (1 - LOSS_AVERAGE) * value
        if not self.active and self._average < self.loss_threshold:
            self.active, self.started_at = True, self._steps

    def wrap(self, optimizer: torch.optim.Optimizer, closure) -> torch.optim.Optimizer:
        """The optimizer a step should use: its ``step()`` first adds the bit-error gradient (once active)."""
        return _AveragedOptimizer(optimizer, self, closure) if self.active and self.rate > 0 else optimizer

    def perturbed_gradients(self, closure) -> None:
        """Replace each parameter's gradient with the clean/bit-error average (the clean one is in ``.grad``)."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        clean = [p.grad for p in params]
        for p in params:
            p.grad = None
        for layer in self.layers:
            bits = layer.wbits
            layer.code_fault = lambda codes, bits=bits: flip_code_bits(codes, self.rate, bits, self.generator)
        try:
            with frozen_batchnorm_statistics(self.model):
                loss, _ = closure()
            loss.backward()
        finally:
            for layer in self.layers:
                layer.code_fault = None
        with torch.no_grad():
            for p, g in zip(params, clean):
                perturbed = p.grad
                if g is None and perturbed is None:
                    continue
                total = torch.zeros_like(p) if g is None else g
                if perturbed is not None:
                    total = total + perturbed.clamp(-self.clamp, self.clamp)
                p.grad = total / 2


class _AveragedOptimizer:
    """Stands in for the optimizer inside one step: ``step()`` averages in the bit-error gradient, then steps."""

    def __init__(self, optimizer: torch.optim.Optimizer, randbet: RandBET, closure):
        self.optimizer, self.randbet, self.closure = optimizer, randbet, closure

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        self.randbet.perturbed_gradients(self.closure)
        self.optimizer.step()
