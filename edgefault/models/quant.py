"""Fake quantizers with straight-through estimators: the arithmetic the int8 ONNX model reproduces.

Weights: per output channel, symmetric, zero point 0, ``bits`` in 2..8, scale = max|w| / (2^(b-1) - 1)
(calibrated from the weights themselves at every step, so the export reads the same integers).
Activations: per tensor with a learned step size (LSQ, Esser et al. 2020), stored as uint8: unsigned
tensors (after ReLU) use zero point 0; signed ones (inputs, residual branches, logits) use the mid
code 2^(b-1) as zero point, which ONNX Runtime's x86 kernels fuse where int8 activations do not.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from edgefault.errors import EdgefaultError

MIN_BITS, MAX_BITS = 2, 8

# The floor of norms, scales and gains, so that nothing divides by zero.
EPS = 1e-12


def check_bits(name: str, bits: int) -> int:
    """Validate a bit width for weights or activations.

    Example:
        >>> check_bits("wbits", 8)
        8
    """
    if not isinstance(bits, int) or not MIN_BITS <= bits <= MAX_BITS:
        raise EdgefaultError(f"{name} must be an integer in {MIN_BITS}..{MAX_BITS}, got {bits!r}")
    return bits


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round to nearest (half to even, as ONNX QuantizeLinear does), passing gradients straight through.

    Example:
        >>> round_ste(torch.tensor([0.4, 1.6]))
        tensor([0., 2.])
    """
    return x + (torch.round(x) - x).detach()


def scale_gradient(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Identity in the forward pass; multiplies the gradient by ``factor`` (LSQ's step-size gradient scale)."""
    return (x - x * factor).detach() + x * factor


def weight_scale(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """Per-output-channel symmetric scale: max|w| / (2^(b-1) - 1), never zero.

    Example:
        >>> weight_scale(torch.tensor([[1.27, -0.5]]), 8)
        tensor([0.0100])
    """
    qmax = 2 ** (bits - 1) - 1
    return (weight.detach().abs().flatten(1).amax(dim=1) / qmax).clamp_min(EPS)


def quantize_weight(weight: torch.Tensor, bits: int,
                    max_range: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (integer codes as float, per-channel scale); codes lie in [-(2^(b-1)-1), 2^(b-1)-1].

    The codes carry straight-through gradients, so ``codes * scale`` is the fake-quantized weight.
    ``max_range`` (a learned clipping range, :mod:`edgefault.train.learned_clip`) caps each
    channel's range at ``min(max|w|, max_range)``; weights beyond it saturate at the top code, and
    the range gets LSQ's gradient through the scale.

    Example:
        >>> codes, scale = quantize_weight(torch.tensor([[1.27, -0.5]]), 8)
        >>> codes
        tensor([[127., -50.]])
        >>> quantize_weight(torch.tensor([[1.27, -0.5]]), 8, max_range=torch.tensor(0.635))[0]
        tensor([[ 127., -100.]])
    """
    qmax = 2 ** (bits - 1) - 1
    scale = weight_scale(weight, bits)
    if max_range is not None:
        scale = torch.minimum(scale, max_range.abs().clamp_min(1e-8) / qmax)
    shape = (-1,) + (1,) * (weight.dim() - 1)
    codes = torch.clamp(round_ste(weight / scale.view(shape)), -qmax, qmax)
    return codes, scale


@dataclasses.dataclass(frozen=True)
class QuantSettings:
    """Bit widths and the activation-sparsity threshold shared by every layer of a model.

    Example:
        >>> QuantSettings(wbits=8, abits=8, fat_threshold=0.0)
        QuantSettings(wbits=8, abits=8, fat_threshold=0.0)
    """

    wbits: int = 8
    abits: int = 8
    fat_threshold: float = 0.0

    def __post_init__(self) -> None:
        check_bits("wbits", self.wbits)
        check_bits("abits", self.abits)
        if not (isinstance(self.fat_threshold, (int, float)) and math.isfinite(self.fat_threshold)) or self.fat_threshold < 0:
            raise EdgefaultError(f"fat_threshold must be a finite number >= 0, got {self.fat_threshold!r}")


class ActQuant(nn.Module):
    """Per-tensor activation fake quantizer with a learned step size (LSQ).

    Unsigned quantizers clamp at code 0 and so include the ReLU; with ``threshold`` T > 0 they are
    the forced-activation-threshold ReLU (FATReLU, Kurtz et al. 2020) on the quantized value:
    codes with ``code * step <= T`` become 0, i.e. codes ``<= floor(T / step)`` (an integer test
    the ONNX graph repeats on the uint8 tensor). ``role`` names what the tensor is:
    ``input``, ``activation`` (post-ReLU: counted for sparsity and the L1 penalty), ``residual``,
    ``pool`` or ``logits``.
    """

    ROLES = ("input", "activation", "residual", "pool", "logits")

    def __init__(self, bits: int, signed: bool, threshold: float = 0.0, role: str = "activation"):
        super().__init__()
        check_bits("abits", bits)
        if role not in self.ROLES:
            raise ValueError(f"role must be one of {self.ROLES}, got {role!r}")
        if threshold and signed:
            raise ValueError("a forced-activation threshold needs an unsigned (post-ReLU) quantizer")
        self.bits, self.signed, self.threshold, self.role = bits, signed, float(threshold), role
        self.step = nn.Parameter(torch.tensor(1.0))
        self.register_buffer("initialized", torch.tensor(False))

    @property
    def zero_point(self) -> int:
        return 2 ** (self.bits - 1) if self.signed else 0

    @property
    def max_code(self) -> int:
        return 2**self.bits - 1

    def step_size(self) -> torch.Tensor:
        """The positive step (ONNX scale) that forward uses."""
        return self.step.abs().clamp_min(1e-8)

    def threshold_code(self) -> int:
        """Largest code that FATReLU zeroes (-1: none); recomputed from the current step."""
        if self.threshold <= 0:
            return -1
        return int(math.floor(self.threshold / float(self.step_size().detach())))

    @torch.no_grad()
    def _initialize(self, x: torch.Tensor) -> None:
        # LSQ's initial step: 2 E|x| / sqrt(Qp), from the first training batch.
        positive_max = self.max_code - self.zero_point
        self.step.fill_(max(2 * x.abs().mean().item() / math.sqrt(positive_max), 1e-4))
        self.initialized.fill_(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and not bool(self.initialized):
            self._initialize(x)
        positive_max = self.max_code - self.zero_point
        step = scale_gradient(self.step_size(), 1.0 / math.sqrt(x[0].numel() * positive_max))
        codes = torch.clamp(round_ste(x / step) + self.zero_point, 0, self.max_code)
        if self.threshold > 0:
            # FATReLU as an integer test on the codes; the mask passes no gradient, like a ReLU.
            codes = codes * (codes.detach() > self.threshold_code())
        return (codes - self.zero_point) * step

    def extra_repr(self) -> str:
        return f"bits={self.bits}, signed={self.signed}, threshold={self.threshold}, role={self.role!r}"
