"""Quantization-aware, activation-sparse models and their registry.

Importing this package registers the built-in architectures: lenet5, resnet20, resnet18, vgg_small, vit_tiny.
"""

from edgefault.models import lenet, resnet, vgg, vit  # noqa: F401  (registers the built-in models)
from edgefault.models.blocks import QuantizedClassifier
from edgefault.models.layers import QuantConv2d, QuantLinear, QuantWeightLayer
from edgefault.models.monitor import ActivationMonitor, activation_quantizers
from edgefault.models.quant import ActQuant, QuantSettings, quantize_weight
from edgefault.models.registry import available_models, create_model, model_settings, register_model
from edgefault.models.tracing import link_input_quantizers, trace_model

__all__ = [
    "ActQuant", "ActivationMonitor", "QuantConv2d", "QuantLinear", "QuantSettings", "QuantWeightLayer",
    "QuantizedClassifier", "activation_quantizers", "available_models", "create_model", "model_settings",
    "link_input_quantizers", "quantize_weight", "register_model", "trace_model",
]
