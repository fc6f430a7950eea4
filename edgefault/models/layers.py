"""Quantization-aware convolution and linear layers, with BatchNorm folded during training.

BatchNorm is folded into the convolution during QAT (Jacob et al., CVPR 2018): in training the
batch statistics of a float convolution fold into the weights, which are then quantized; in
evaluation the running statistics fold in. So the quantized weights the network trains with are
the very integers the exported model stores, and the int8 model computes what the eval-mode
PyTorch model computes.

For sharpness-aware quantization (SAQ) each layer can keep its fake-quantized weight for the
first pass (``capture_quantized_weight``) and add a perturbation after the quantizer
(``weight_perturbation``) in the second pass. Mitigations hook in at two points: a learned
clipping range ``weight_range`` caps the quantizer's range (:mod:`edgefault.train.learned_clip`),
and ``code_fault`` rewrites the integer codes of one forward pass, with a straight-through
gradient, as random bit error training does (:mod:`edgefault.train.randbet`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from edgefault.models.quant import check_bits, quantize_weight, round_ste


class QuantWeightLayer(nn.Module):
    """Shared parts of quantized conv and linear layers: latent weight, folding hook, SAQ hooks."""

    def __init__(self, weight_shape: tuple[int, ...], bias: bool, wbits: int):
        super().__init__()
        self.wbits = check_bits("wbits", wbits)
        self.weight = nn.Parameter(torch.empty(weight_shape))
        nn.init.kaiming_normal_(self.weight, nonlinearity="relu")
        self.bias = nn.Parameter(torch.zeros(weight_shape[0])) if bias else None
        self.weight_perturbation: torch.Tensor | None = None
        self.capture_quantized_weight = False
        self.quantized_weight: torch.Tensor | None = None
        self.weight_range: nn.Parameter | None = None
        self.code_fault = None  # Callable[[codes], faulty codes] for one forward pass, or None
        self.input_quant: tuple = ()  # (ActQuant,) feeding this layer; set by link_input_quantizers

    def folded_weight_and_bias(self, x: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.weight, self.bias

    def _quantized(self, x: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        weight, bias = self.folded_weight_and_bias(x)
        codes, scale = quantize_weight(weight, self.wbits, self.weight_range)
        if self.code_fault is not None:
            plain = codes.detach()
            codes = codes + (self.code_fault(plain) - plain)
        bias = self._bias_on_accumulator_grid(bias, scale)
        quantized = codes * scale.view((-1,) + (1,) * (codes.dim() - 1))
        if self.capture_quantized_weight:
            quantized.retain_grad()
            self.quantized_weight = quantized
        if self.weight_perturbation is not None:
            quantized = quantized + self.weight_perturbation
        return quantized, bias

    def _bias_on_accumulator_grid(self, bias: torch.Tensor | None, scale: torch.Tensor) -> torch.Tensor | None:
        # Integer kernels add round(bias / (input_step * weight_scale)) to their int32 accumulator;
        # rounding the bias the same way here keeps PyTorch and the int8 model in step.
        if bias is None or not self.input_quant:
            return bias
        grid = (self.input_quant[0].step_size() * scale).detach()
        return round_ste(bias / grid) * grid

    @torch.no_grad()
    def integer_weight(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The deployed weight: int8 codes and per-channel float scales (eval-mode folding).

        Example:
            >>> codes, scale = QuantLinear(4, 2).integer_weight()
            >>> codes.dtype, scale.shape
            (torch.int8, torch.Size([2]))
        """
        was_training = self.training
        self.eval()
        try:
            weight, _ = self.folded_weight_and_bias(None)
            codes, scale = quantize_weight(weight, self.wbits, self.weight_range)
        finally:
            self.train(was_training)
        return codes.to(torch.int8), scale.float()

    @torch.no_grad()
    def deployed_bias(self) -> torch.Tensor:
        """The float bias of the deployed layer (BatchNorm folded with running statistics, on the int32
        accumulator grid when the input quantizer is known); zeros if none."""
        was_training = self.training
        self.eval()
        try:
            weight, bias = self.folded_weight_and_bias(None)
            bias = self._bias_on_accumulator_grid(bias, quantize_weight(weight, self.wbits, self.weight_range)[1])
        finally:
            self.train(was_training)
        return bias.detach().float() if bias is not None else torch.zeros(self.weight.shape[0])


class QuantConv2d(QuantWeightLayer):
    """Conv2d with per-channel symmetric fake-quantized weights and optional folded BatchNorm.

    Example:
        >>> conv = QuantConv2d(1, 4, 3, padding=1, batchnorm=True)
        >>> conv(torch.randn(2, 1, 8, 8)).shape
        torch.Size([2, 4, 8, 8])
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, bias: bool = True, batchnorm: bool = False, wbits: int = 8):
        # A bias before BatchNorm is redundant: BatchNorm's shift takes its place.
        super().__init__((out_channels, in_channels, kernel_size, kernel_size), bias and not batchnorm, wbits)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.bn = nn.BatchNorm2d(out_channels) if batchnorm else None

    def folded_weight_and_bias(self, x):
        if self.bn is None:
            return self.weight, self.bias
        bn = self.bn
        if self.training and x is not None:
            # Batch statistics come from the float convolution; running statistics track them.
            y = F.conv2d(x, self.weight, None, self.stride, self.padding)
            mean = y.mean(dim=(0, 2, 3))
            var = y.var(dim=(0, 2, 3), unbiased=False)
            with torch.no_grad():
                count = y.numel() / y.shape[1]
                bn.running_mean.lerp_(mean, bn.momentum)
                bn.running_var.lerp_(var * count / max(count - 1, 1), bn.momentum)
                bn.num_batches_tracked += 1
        else:
            mean, var = bn.running_mean, bn.running_var
        gain = bn.weight * torch.rsqrt(var + bn.eps)
        weight = self.weight * gain.view(-1, 1, 1, 1)
        bias = bn.bias - mean * gain
        return weight, bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self._quantized(x)
        return F.conv2d(x, weight, bias, self.stride, self.padding)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, batchnorm={self.bn is not None}, wbits={self.wbits}")


class QuantLinear(QuantWeightLayer):
    """Linear layer with per-output-channel symmetric fake-quantized weights.

    Example:
        >>> QuantLinear(8, 3)(torch.randn(2, 8)).shape
        torch.Size([2, 3])
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, wbits: int = 8):
        super().__init__((out_features, in_features), bias, wbits)
        self.in_features, self.out_features = in_features, out_features
        nn.init.uniform_(self.weight, -1 / math.sqrt(in_features), 1 / math.sqrt(in_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self._quantized(x)
        return F.linear(x, weight, bias)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, wbits={self.wbits}"
