"""The model registry: ``@register_model`` adds an architecture, ``create_model`` builds one by name.

A builder is a function with keyword-only settings; ``create_model`` refuses settings the
builder does not take, so a typo is an error instead of a silently ignored option.
"""

from __future__ import annotations

import inspect
from typing import Callable

from torch import nn

from edgefault.errors import EdgefaultError
from edgefault.models.layers import QuantWeightLayer
from edgefault.models.tracing import link_input_quantizers

_BUILDERS: dict[str, Callable[..., nn.Module]] = {}


def register_model(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register ``builder`` under its function name.

    Example:
        >>> @register_model
        ... def tiny(*, num_classes: int = 10): ...
    """
    name = builder.__name__
    if name in _BUILDERS and _BUILDERS[name] is not builder:
        raise ValueError(f"model {name!r} is registered twice")
    _BUILDERS[name] = builder
    return builder


def available_models() -> list[str]:
    """Names of the registered architectures.

    Example:
        >>> "lenet5" in available_models()
        True
    """
    return sorted(_BUILDERS)


def model_settings(name: str) -> dict[str, object]:
    """The settings a registered model takes, with their defaults.

    Example:
        >>> model_settings("lenet5")["wbits"]
        8
    """
    builder = _lookup(name)
    return {p.name: p.default for p in inspect.signature(builder).parameters.values()}


def _lookup(name: str) -> Callable[..., nn.Module]:
    if name not in _BUILDERS:
        raise EdgefaultError(f"unknown model {name!r}; available: {', '.join(available_models())}")
    return _BUILDERS[name]


def create_model(name: str, **settings) -> nn.Module:
    """Build a registered model; unknown settings are refused.

    The model keeps its name and resolved settings in ``model.spec`` so a checkpoint can rebuild it.

    Example:
        >>> model = create_model("lenet5", wbits=8, abits=8, fat_threshold=0.5)
        >>> model.spec["name"], model.input_shape
        ('lenet5', (1, 28, 28))
    """
    builder = _lookup(name)
    accepted = model_settings(name)
    unknown = sorted(set(settings) - set(accepted))
    if unknown:
        raise EdgefaultError(
            f"model {name!r} takes no setting {', '.join(map(repr, unknown))}; it takes {', '.join(accepted)}"
        )
    model = builder(**settings)
    if any(isinstance(m, QuantWeightLayer) for m in model.modules()):
        link_input_quantizers(model)
    model.spec = {"name": name, **accepted, **settings}
    return model
