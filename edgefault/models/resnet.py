"""CIFAR-style ResNets (He et al. 2016): ResNet-20 (3 stages x 3 blocks) and ResNet-18 (4 x 2)."""

from __future__ import annotations

import torch
from torch import nn

from edgefault.models.blocks import QuantizedClassifier, conv, linear, pool_quant, relu_quant, signed_quant
from edgefault.models.quant import QuantSettings
from edgefault.models.registry import register_model


class BasicBlock(nn.Module):
    """Two 3x3 convolutions and a shortcut (a quantized 1x1 projection when the shape changes).

    The branch and the projected shortcut are quantized as signed tensors before the addition, so
    the exported graph adds two uint8 tensors (QLinearAdd) and applies ReLU/FATReLU on the result.
    """

    def __init__(self, settings: QuantSettings, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1, self.act1 = conv(settings, in_channels, out_channels, 3, stride), relu_quant(settings)
        self.conv2, self.branch_quant = conv(settings, out_channels, out_channels, 3), signed_quant(settings, "residual")
        self.shortcut = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = conv(settings, in_channels, out_channels, 1, stride, padding=0)
            self.shortcut_quant = signed_quant(settings, "residual")
        self.act_out = relu_quant(settings)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch = self.branch_quant(self.conv2(self.act1(self.conv1(x))))
        skip = x if self.shortcut is None else self.shortcut_quant(self.shortcut(x))
        return self.act_out(branch + skip)


class CifarResNet(QuantizedClassifier):
    """Stem conv3x3, stages of basic blocks, global average pooling, a linear classifier."""

    def __init__(self, widths: tuple[int, ...], depths: tuple[int, ...], in_channels: int, input_size: int,
                 num_classes: int, settings: QuantSettings):
        super().__init__((in_channels, input_size, input_size), num_classes, settings)
        self.stem, self.stem_act = conv(settings, in_channels, widths[0], 3), relu_quant(settings)
        blocks, channels = [], widths[0]
        for stage, (width, depth) in enumerate(zip(widths, depths)):
            for index in range(depth):
                stride = 2 if stage > 0 and index == 0 else 1
                blocks.append(BasicBlock(settings, channels, width, stride))
                channels = width
        self.blocks = nn.Sequential(*blocks)
        self.pool, self.pool_quant = nn.AdaptiveAvgPool2d(1), pool_quant(settings)
        self.fc, self.logits_quant = linear(settings, channels, num_classes), signed_quant(settings, "logits")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem_act(self.stem(self.input_quant(x)))
        x = self.blocks(x)
        x = torch.flatten(self.pool_quant(self.pool(x)), 1)
        return self.logits_quant(self.fc(x))


@register_model
def resnet20(*, in_channels: int = 1, input_size: int = 28, num_classes: int = 10,
             wbits: int = 8, abits: int = 8, fat_threshold: float = 0.0) -> CifarResNet:
    """ResNet-20: widths 16/32/64, three blocks per stage (Example: ``create_model("resnet20", in_channels=3)``)."""
    settings = QuantSettings(wbits, abits, fat_threshold)
    return CifarResNet((16, 32, 64), (3, 3, 3), in_channels, input_size, num_classes, settings)


@register_model
def resnet18(*, in_channels: int = 3, input_size: int = 32, num_classes: int = 10,
             wbits: int = 8, abits: int = 8, fat_threshold: float = 0.0) -> CifarResNet:
    """CIFAR-style ResNet-18: widths 64..512, two blocks per stage (Example: ``create_model("resnet18")``)."""
    settings = QuantSettings(wbits, abits, fat_threshold)
    return CifarResNet((64, 128, 256, 512), (2, 2, 2, 2), in_channels, input_size, num_classes, settings)
