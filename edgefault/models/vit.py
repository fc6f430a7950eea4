"""A small vision transformer (Dosovitskiy et al. 2021) whose every product runs on integers in ONNX Runtime.

Patch embedding (a quantized stride-``patch`` convolution), a learned position embedding,
``depth`` pre-norm blocks of multi-head self-attention and an MLP, mean pooling over the tokens,
a final LayerNorm and a linear head. The token stream is kept as a 2-D ``[batch * tokens, dim]``
tensor, so every linear layer is a plain ``Gemm`` in the export (QGemm after ONNX Runtime's
fusion, per-channel int8 weights like the CNNs); attention reshapes it to
``[batch, heads, tokens, head_dim]`` only for its two activation-by-activation products.

Where the quantizers sit is what ONNX Runtime 1.32 fuses (measured, see notes/readme_export.md):

* every linear layer reads a quantized tensor and its output is quantized at once (QGemm);
* q, k and v are quantized (signed), so ``q @ k^T`` is DQ -> MatMul, which ONNX Runtime runs
  as MatMulIntegerToFloat (int8 products, float scores), and ``softmax(scores) @ v`` is
  DQ -> MatMul -> Q, fused to QLinearMatMul. The scores are not quantized on purpose: a
  quantizer there makes DQ -> Softmax -> Q fuse to QLinearSoftmax, whose table-based exp rounds
  ~6% of the attention codes differently from a float softmax (measured), and the errors grow
  through the blocks (top-1 parity 96.8% instead of >= 99.5%);
* the residual stream is quantized after every addition (QLinearAdd);
* LayerNormalization and the token mean stay float between a DequantizeLinear and a
  QuantizeLinear (ONNX Runtime has no integer kernel for them); they carry no int8 weights.

The MLP's activation is ReLU, or FATReLU with ``fat_threshold`` > 0: its quantizers have the
role ``activation``, so sparsity, the L1 penalty and ``eval``'s sparsity table count them.
Signed intermediate tensors use the role ``residual``, the softmax output ``pool`` (unsigned, no threshold).
The 1/sqrt(head_dim) factor of attention is folded into the initial query weights, so no float Mul
breaks the QLinearMatMul fusion.
"""

from __future__ import annotations

import torch
from torch import nn

from edgefault.errors import EdgefaultError
from edgefault.models.blocks import QuantizedClassifier, conv, linear, pool_quant, relu_quant, signed_quant
from edgefault.models.quant import QuantSettings
from edgefault.models.registry import register_model


class Attention(nn.Module):
    """Multi-head self-attention on a ``[batch * tokens, dim]`` stream, quantized before every product."""

    def __init__(self, settings: QuantSettings, dim: int, heads: int, tokens: int):
        super().__init__()
        self.tokens, self.heads, self.head_dim = tokens, heads, dim // heads
        self.query, self.query_quant = linear(settings, dim, dim), signed_quant(settings, "residual")
        self.key, self.key_quant = linear(settings, dim, dim), signed_quant(settings, "residual")
        self.value, self.value_quant = linear(settings, dim, dim), signed_quant(settings, "residual")
        with torch.no_grad():
            self.query.weight.mul_(self.head_dim ** -0.5)
        self.weights_quant = pool_quant(settings)
        self.mixed_quant = signed_quant(settings, "residual")
        self.proj = linear(settings, dim, dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(-1, self.tokens, self.heads, self.head_dim).permute(0, 2, 1, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self._heads(self.query_quant(self.query(x)))
        k = self.key_quant(self.key(x)).reshape(-1, self.tokens, self.heads, self.head_dim).permute(0, 2, 3, 1)
        v = self._heads(self.value_quant(self.value(x)))
        weights = self.weights_quant(torch.softmax(torch.matmul(q, k), dim=-1))
        mixed = self.mixed_quant(torch.matmul(weights, v))
        return self.proj(mixed.permute(0, 2, 1, 3).reshape(-1, self.heads * self.head_dim))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(LN(x)), then x + MLP(LN(x)), the stream quantized after each sum."""

    def __init__(self, settings: QuantSettings, dim: int, heads: int, mlp_dim: int, tokens: int):
        super().__init__()
        self.norm1, self.norm1_quant = nn.LayerNorm(dim), signed_quant(settings, "residual")
        self.attn, self.attn_quant = Attention(settings, dim, heads, tokens), signed_quant(settings, "residual")
        self.sum1_quant = signed_quant(settings, "residual")
        self.norm2, self.norm2_quant = nn.LayerNorm(dim), signed_quant(settings, "residual")
        self.fc1, self.act = linear(settings, dim, mlp_dim), relu_quant(settings)
        self.fc2, self.mlp_quant = linear(settings, mlp_dim, dim), signed_quant(settings, "residual")
        self.sum2_quant = signed_quant(settings, "residual")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.sum1_quant(x + self.attn_quant(self.attn(self.norm1_quant(self.norm1(x)))))
        mlp = self.mlp_quant(self.fc2(self.act(self.fc1(self.norm2_quant(self.norm2(x))))))
        return self.sum2_quant(x + mlp)


class VisionTransformer(QuantizedClassifier):
    """Patch embedding, position embedding, pre-norm blocks, token mean, LayerNorm and a linear head."""

    def __init__(self, in_channels: int, input_size: int, num_classes: int, settings: QuantSettings, *,
                 patch: int, dim: int, depth: int, heads: int, mlp_dim: int):
        super().__init__((in_channels, input_size, input_size), num_classes, settings)
        if input_size % patch:
            raise EdgefaultError(f"vit_tiny: patch size {patch} does not divide the image size {input_size}")
        if dim % heads:
            raise EdgefaultError(f"vit_tiny: {heads} heads do not divide the width {dim}")
        self.dim, self.tokens = dim, (input_size // patch) ** 2
        self.patch_embed = conv(settings, in_channels, dim, patch, stride=patch, padding=0, batchnorm=False)
        self.patch_quant = signed_quant(settings, "residual")
        # Unit-variance positions: at the 0.02 of ViT-B they vanish below the embedding quantizer's step
        # (~0.2 here) and the blocks see a bag of patches (3 epochs: 65% instead of 87% on mnist5k).
        self.position = nn.Parameter(torch.randn(self.tokens, dim))
        self.embed_quant = signed_quant(settings, "residual")
        self.blocks = nn.Sequential(*(Block(settings, dim, heads, mlp_dim, self.tokens) for _ in range(depth)))
        self.pool_quant = signed_quant(settings, "residual")
        self.norm, self.norm_quant = nn.LayerNorm(dim), signed_quant(settings, "residual")
        self.head, self.logits_quant = linear(settings, dim, num_classes), signed_quant(settings, "logits")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_quant(self.patch_embed(self.input_quant(x)))  # [batch, dim, side, side]
        x = x.reshape(-1, self.dim, self.tokens).permute(0, 2, 1)  # [batch, tokens, dim]
        x = self.embed_quant(x + self.position).reshape(-1, self.dim)  # [batch * tokens, dim]
        x = self.blocks(x)
        x = self.pool_quant(x.reshape(-1, self.tokens, self.dim).mean(dim=1))
        return self.logits_quant(self.head(self.norm_quant(self.norm(x))))


@register_model
def vit_tiny(*, in_channels: int = 1, input_size: int = 28, num_classes: int = 10, wbits: int = 8, abits: int = 8,
             fat_threshold: float = 0.0, patch: int = 7, dim: int = 64, depth: int = 3, heads: int = 4,
             mlp_dim: int = 128) -> VisionTransformer:
    """A ViT of 3 blocks, width 64, 4 heads, 7x7 patches (Example: ``create_model("vit_tiny", depth=1)``)."""
    return VisionTransformer(in_channels, input_size, num_classes, QuantSettings(wbits, abits, fat_threshold),
                             patch=patch, dim=dim, depth=depth, heads=heads, mlp_dim=mlp_dim)
