"""Factories that build the quantized pieces of a model from its shared :class:`QuantSettings`."""

from __future__ import annotations

from torch import nn

from edgefault.models.layers import QuantConv2d, QuantLinear
from edgefault.models.quant import ActQuant, QuantSettings


class QuantizedClassifier(nn.Module):
    """Base of every registered model: knows its input shape and class count.

    Subclasses quantize their input first (``self.input_quant``) and their logits last, so the
    exported graph is integer from the first convolution to the classifier.
    """

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int, settings: QuantSettings):
        super().__init__()
        self.input_shape, self.num_classes, self.quant = tuple(input_shape), num_classes, settings
        self.input_quant = signed_quant(settings, role="input")


def relu_quant(settings: QuantSettings) -> ActQuant:
    """ReLU (or FATReLU when the threshold is set) fused with its unsigned activation quantizer."""
    return ActQuant(min(settings.abits, ACTIVATION_MAX_BITS), signed=False, threshold=settings.fat_threshold,
                    role="activation")


# Activation codes keep at most 7 bits, 0..127. ONNX Runtime's u8 x s8 kernels on AVX2 CPUs without
# VNNI sum pairs of products in saturating int16 (vpmaddubsw): 255 * 127 * 2 overflows, and even
# 127 * 128 * 2 (a faulty -128 weight) does not. At 8 bits a signed input (zero point 128, large
# codes everywhere) made the first convolution saturate, and an exported LeNet disagreed with
# PyTorch on 1.2% of images; clipped-weight models still disagreed on 0.7% through post-ReLU layers.
# At 7 bits no pair can saturate, so the deployed integer model equals PyTorch's on every x86 CPU
# (ONNX Runtime's and OpenVINO's advice for such CPUs is the same "reduce range").
ACTIVATION_MAX_BITS = 7


def signed_quant(settings: QuantSettings, role: str) -> ActQuant:
    """A signed activation quantizer (the input, residual branches, logits), at most 7-bit codes.

    Example:
        >>> q = signed_quant(QuantSettings(abits=8), "input")
        >>> q.max_code, q.zero_point
        (127, 64)
    """
    return ActQuant(min(settings.abits, ACTIVATION_MAX_BITS), signed=True, role=role)


def pool_quant(settings: QuantSettings) -> ActQuant:
    """Unsigned quantizer after average pooling of non-negative activations (no threshold: not an activation)."""
    return ActQuant(min(settings.abits, ACTIVATION_MAX_BITS), signed=False, role="pool")


def conv(settings: QuantSettings, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
         padding: int | None = None, batchnorm: bool = True) -> QuantConv2d:
    """A quantized convolution; 'same' padding by default, BatchNorm folded in by default."""
    padding = kernel_size // 2 if padding is None else padding
    return QuantConv2d(in_channels, out_channels, kernel_size, stride, padding, bias=True,
                       batchnorm=batchnorm, wbits=settings.wbits)


def linear(settings: QuantSettings, in_features: int, out_features: int) -> QuantLinear:
    """A quantized fully connected layer."""
    return QuantLinear(in_features, out_features, bias=True, wbits=settings.wbits)
