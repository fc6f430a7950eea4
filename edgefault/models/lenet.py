"""LeNet-5 for 28x28 (or 32x32) inputs, with ReLU/FATReLU and quantized weights and activations."""

from __future__ import annotations

import torch
from torch import nn

from edgefault.models.blocks import QuantizedClassifier, conv, linear, relu_quant, signed_quant
from edgefault.models.quant import QuantSettings
from edgefault.models.registry import register_model


class LeNet5(QuantizedClassifier):
    """conv5x5(6) - pool - conv5x5(16) - pool - fc120 - fc84 - fc(classes), LeCun et al. 1998, with ReLU."""

    def __init__(self, in_channels: int, input_size: int, num_classes: int, settings: QuantSettings):
        super().__init__((in_channels, input_size, input_size), num_classes, settings)
        side = ((input_size // 2) - 4) // 2
        self.conv1, self.act1 = conv(settings, in_channels, 6, 5, padding=2, batchnorm=False), relu_quant(settings)
        self.pool1 = nn.MaxPool2d(2)
        self.conv2, self.act2 = conv(settings, 6, 16, 5, padding=0, batchnorm=False), relu_quant(settings)
        self.pool2 = nn.MaxPool2d(2)
        self.fc1, self.act3 = linear(settings, 16 * side * side, 120), relu_quant(settings)
        self.fc2, self.act4 = linear(settings, 120, 84), relu_quant(settings)
        self.fc3, self.logits_quant = linear(settings, 84, num_classes), signed_quant(settings, "logits")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_quant(x)
        x = self.pool1(self.act1(self.conv1(x)))
        x = self.pool2(self.act2(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = self.act3(self.fc1(x))
        x = self.act4(self.fc2(x))
        return self.logits_quant(self.fc3(x))


@register_model
def lenet5(*, in_channels: int = 1, input_size: int = 28, num_classes: int = 10,
           wbits: int = 8, abits: int = 8, fat_threshold: float = 0.0) -> LeNet5:
    """LeNet-5 (Example: ``create_model("lenet5", fat_threshold=0.5)``)."""
    return LeNet5(in_channels, input_size, num_classes, QuantSettings(wbits, abits, fat_threshold))
