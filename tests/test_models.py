"""The model registry and the built-in architectures."""

import operator

import pytest
import torch

from edgefault.errors import EdgefaultError
from edgefault.models import ActivationMonitor, available_models, create_model, register_model, trace_model
from edgefault.models.registry import _BUILDERS


def test_registry_lists_the_built_in_models():
    assert {"lenet5", "resnet20", "resnet18", "vgg_small"} <= set(available_models())


@pytest.mark.parametrize(
    "name, settings",
    [("lenet5", {}), ("resnet20", {}), ("vgg_small", {"in_channels": 1, "input_size": 28}),
     ("resnet20", {"in_channels": 3, "input_size": 32, "num_classes": 100})],
)
def test_models_train_and_evaluate_on_their_input_shape(name, settings):
    model = create_model(name, **settings)
    x = torch.randn(4, *model.input_shape)
    logits = model.train()(x)
    assert logits.shape == (4, model.num_classes)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    assert model.eval()(x).shape == (4, model.num_classes)


def test_unknown_model_and_unknown_settings_are_refused_by_name():
    with pytest.raises(EdgefaultError, match="unknown model 'lenet7'.*lenet5"):
        create_model("lenet7")
    with pytest.raises(EdgefaultError, match="takes no setting 'depth'"):
        create_model("lenet5", depth=3)


def test_a_new_architecture_is_one_registered_function():
    @register_model
    def tiny_test_net(*, num_classes: int = 3):
        return torch.nn.Linear(2, num_classes)

    try:
        model = create_model("tiny_test_net", num_classes=5)
        assert model.out_features == 5 and model.spec == {"name": "tiny_test_net", "num_classes": 5}
    finally:
        _BUILDERS.pop("tiny_test_net")


def test_trace_keeps_quantized_layers_as_leaves():
    graph = trace_model(create_model("resnet20"))
    targets = [str(node.target) for node in graph.graph.nodes if node.op == "call_module"]
    assert targets[:3] == ["input_quant", "stem", "stem_act"]
    assert "blocks.6.shortcut" in targets
    # By identity, not by name: a target's repr holds a hex address, which can itself read "add".
    assert sum(node.op == "call_function" and node.target in (operator.add, torch.add) for node in graph.graph.nodes) == 9


def test_fatrelu_threshold_raises_measured_sparsity():
    torch.manual_seed(0)
    x = torch.randn(64, 1, 28, 28)
    sparsity = {}
    for threshold in (0.0, 1.0):
        model = create_model("lenet5", fat_threshold=threshold)
        model.train()(x)  # initializes the activation step sizes identically for both
        with ActivationMonitor(model.eval()) as monitor:
            model(x)
        sparsity[threshold] = monitor.sparsity()["overall"]
    assert sparsity[1.0] > sparsity[0.0] > 0.2
