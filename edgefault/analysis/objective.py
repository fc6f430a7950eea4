"""A trained model's loss as a closure over the weights the sharpness metrics measure.

The loss is the mean cross-entropy of the eval-mode model (BatchNorm folded with its running
statistics, every quantizer active: the function the int8 model computes) on a fixed set of
training images. Two weight spaces are offered:

- ``quantized`` (the default): the dequantized weights of every QuantConv2d/QuantLinear, i.e.
  the integer codes times their per-channel scales, BatchNorm folded in: exactly the values
  the exported int8 model stores and a memory fault corrupts. A perturbation is added after
  the weight quantizer (the layers' ``weight_perturbation`` hook, where SAQ perturbs), so the
  loss is continuous in it and the latent weights are never written.
- ``latent``: the layers' float ``.weight`` parameters that training updates; a perturbed
  latent weight is quantized again (scale recalibrated, codes re-rounded) before use.

Biases, BatchNorm parameters and activation step sizes are held fixed in both spaces.
"""

from __future__ import annotations

from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from edgefault.errors import EdgefaultError
from edgefault.models.layers import QuantWeightLayer

WEIGHT_SPACES = ("quantized", "latent")


def dequantized_weight(layer: QuantWeightLayer) -> torch.Tensor:
    """The weight the deployed layer multiplies by: int codes times per-channel scales (eval-mode folding).

    Example:
        >>> from edgefault.models import QuantLinear
        >>> dequantized_weight(QuantLinear(4, 2)).shape
        torch.Size([2, 4])
    """
    codes, scale = layer.integer_weight()
    return codes.to(scale.dtype) * scale.view((-1,) + (1,) * (codes.dim() - 1))


class ModelObjective:
    """Mean cross-entropy of ``model`` on ``images``/``labels`` as a loss closure over ``params``.

    Use as a context manager: entering puts the model in eval mode, freezes every parameter
    and makes ``params`` the differentiable weights of the chosen space; leaving restores the
    model's mode and ``requires_grad`` flags and removes the perturbation hooks. Calling the
    objective yields one loss term per mini-batch of ``batch_size`` images (their sum is the
    mean over all images), so gradients and Hessian-vector products fit in bounded memory.
    """

    def __init__(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500,
                 space: str = "quantized"):
        if space not in WEIGHT_SPACES:
            raise EdgefaultError(f"weight space must be one of {', '.join(WEIGHT_SPACES)}, got {space!r}")
        if len(images) == 0 or len(images) != len(labels):
            raise EdgefaultError(f"need as many labels as images, and at least one ({len(images)}, {len(labels)})")
        named = [(name, m) for name, m in model.named_modules() if isinstance(m, QuantWeightLayer)]
        if not named:
            raise EdgefaultError("the model has no quantized convolution or linear layers to measure")
        self.model, self.images, self.labels = model, images, labels
        self.batch_size, self.space = batch_size, space
        self.layer_names = tuple(name for name, _ in named)
        self._layers = [m for _, m in named]
        self.params: list[torch.Tensor] = []
        self.reference: list[torch.Tensor] = []
        self._saved_flags: list[tuple[nn.Parameter, bool]] = []
        self._was_training = model.training

    @property
    def parameter_count(self) -> int:
        """How many weights the metrics range over (lenet5: 61470)."""
        return sum(layer.weight.numel() for layer in self._layers)

    def __enter__(self) -> "ModelObjective":
        if any(layer.weight_perturbation is not None for layer in self._layers):
            raise RuntimeError("a layer already carries a weight perturbation; is another analysis running?")
        self._was_training = self.model.training
        self.model.eval()
        self._saved_flags = [(p, p.requires_grad) for p in self.model.parameters()]
        for param, _ in self._saved_flags:
            param.requires_grad_(False)
        if self.space == "quantized":
            self.reference = [dequantized_weight(layer) for layer in self._layers]
            self.params = [torch.zeros_like(w, requires_grad=True) for w in self.reference]
            for layer, offset in zip(self._layers, self.params):
                layer.weight_perturbation = offset
        else:
            self.params = [layer.weight.requires_grad_(True) for layer in self._layers]
            self.reference = [layer.weight.detach() for layer in self._layers]
        return self

    def __exit__(self, *exc) -> None:
        for layer in self._layers:
            layer.weight_perturbation = None
        for param, flag in self._saved_flags:
            param.requires_grad_(flag)
        self.model.train(self._was_training)
        self.params, self.reference = [], []

    def __call__(self) -> Iterator[torch.Tensor]:
        total = len(self.labels)
        for start in range(0, total, self.batch_size):
            logits = self.model(self.images[start : start + self.batch_size])
            # A sum over the batch divided by the full count: the terms add up to the mean loss.
            yield F.cross_entropy(logits, self.labels[start : start + self.batch_size], reduction="sum") / total

    @torch.no_grad()
    def accuracy(self) -> float:
        """Top-1 accuracy of the model at its current weights on the objective's images.
        """
        correct = 0
        for start in range(0, len(self.labels), self.batch_size):
            logits = self.model(self.images[start : start + self.batch_size])
            correct += int((logits.argmax(1) == self.labels[start : start + self.batch_size]).sum())
        return correct / len(self.labels)
