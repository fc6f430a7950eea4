"""A small VGG: three stages of two 3x3 convolutions and max pooling, then two linear layers."""

from __future__ import annotations

import torch
from torch import nn

from edgefault.models.blocks import QuantizedClassifier, conv, linear, pool_quant, relu_quant, signed_quant
from edgefault.models.quant import QuantSettings
from edgefault.models.registry import register_model


class VGGSmall(QuantizedClassifier):
    """(conv-conv-pool) x 3 with widths 32/64/128, global average pooling, fc256, fc(classes)."""

    def __init__(self, in_channels: int, input_size: int, num_classes: int, settings: QuantSettings):
        super().__init__((in_channels, input_size, input_size), num_classes, settings)
        layers, channels = [], in_channels
        for width in (32, 64, 128):
            for _ in range(2):
                layers += [conv(settings, channels, width, 3), relu_quant(settings)]
                channels = width
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.pool, self.pool_quant = nn.AdaptiveAvgPool2d(1), pool_quant(settings)
        self.fc1, self.act_fc = linear(settings, channels, 256), relu_quant(settings)
        self.fc2, self.logits_quant = linear(settings, 256, num_classes), signed_quant(settings, "logits")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(self.input_quant(x))
        x = torch.flatten(self.pool_quant(self.pool(x)), 1)
        return self.logits_quant(self.fc2(self.act_fc(self.fc1(x))))


@register_model
def vgg_small(*, in_channels: int = 3, input_size: int = 32, num_classes: int = 10,
              wbits: int = 8, abits: int = 8, fat_threshold: float = 0.0) -> VGGSmall:
    """Small VGG (Example: ``create_model("vgg_small", in_channels=1, input_size=28)``)."""
    return VGGSmall(in_channels, input_size, num_classes, QuantSettings(wbits, abits, fat_threshold))
