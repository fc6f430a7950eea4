"""Exported models agree with PyTorch and run only integer conv/linear kernels in ONNX Runtime.

One LeNet-5 and one ResNet-20 are trained for a few dozen steps on the built-in data (ResNet-20
on a 14x14 pooled copy, four times cheaper), enough for logits that are not all tied; the FATReLU
and 4-bit cases reuse their weights with the activation steps recalibrated.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from edgefault.data import Dataset, load_dataset
from edgefault.export import ExportSettings, build_onnx, export_model
from edgefault.models import ActQuant, QuantWeightLayer, create_model
from edgefault.runtime import ModelMetadata

# Until the models train with biases on the int32 grid the deployed kernels use (x_scale * w_scale),
# ONNX Runtime rounds each bias by up to half a grid step that PyTorch never saw; the error
# compounds through ResNet-20 and 4-bit layers (measured: 91-97.5% agreement; 100% with biases on
# the grid). The other cases therefore move the biases onto the grid first (a no-op once the models do).
BIAS_GRID = pytest.mark.xfail(strict=True, reason="models/layers.py: float biases vs the deployed int32 bias grid")
INTEGER_LAYERS = {"lenet5": 5, "resnet20": 22}


@pytest.fixture(scope="module")
def datasets() -> dict[str, Dataset]:
    mnist = load_dataset("mnist5k")

    def pool(images: np.ndarray) -> np.ndarray:
        return images.reshape(len(images), 1, 14, 2, 14, 2).mean(axis=(3, 5)).astype(np.float32)

    small = Dataset("mnist5k", pool(mnist.train_images), mnist.train_labels, pool(mnist.test_images),
                    mnist.test_labels, mnist.class_names, mnist.mean, mnist.std)
    return {"lenet5": mnist, "resnet20": small}


def train_briefly(name: str, data: Dataset, steps: int, batch: int) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = create_model(name, input_size=data.input_shape[1])
    images = torch.from_numpy(data.normalized(data.train_images))
    labels = torch.from_numpy(data.train_labels)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        index = torch.randint(0, len(images), (batch,), generator=generator)
        loss = torch.nn.functional.cross_entropy(model(images[index]), labels[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def variant(model: torch.nn.Module, data: Dataset, **settings) -> torch.nn.Module:
    """The trained weights under other quantization settings, activation steps recalibrated on one batch."""
    spec = dict(model.spec)
    spec.update(settings)
    copy = create_model(spec.pop("name"), **spec)
    copy.load_state_dict(model.state_dict())
    for module in copy.modules():
        if isinstance(module, ActQuant):
            module.initialized.fill_(False)  # LSQ re-initializes the step for the new bit width
        elif isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = 0.0  # keep the trained running statistics
    copy.train()
    with torch.no_grad():
        copy(torch.from_numpy(data.normalized(data.train_images[:256])))
    return copy.eval()


@pytest.fixture(scope="module")
def models(datasets):
    base = {"lenet5": train_briefly("lenet5", datasets["lenet5"], 30, 32),
            "resnet20": train_briefly("resnet20", datasets["resnet20"], 12, 32)}

    def get(name: str, **settings) -> torch.nn.Module:
        return variant(base[name], datasets[name], **settings) if settings else base[name]

    return get


def snap_biases_to_grid(model: torch.nn.Module) -> torch.nn.Module:
    """Move each layer's deployed bias onto the grid of the exported int32 bias."""
    scales = {t.name: numpy_helper.to_array(t) for t in build_onnx(model).graph.initializer}
    with torch.no_grad():
        for name, layer in model.named_modules():
            if isinstance(layer, QuantWeightLayer):
                grid = torch.tensor(scales[f"{name}.bias_scale"])
                bias = layer.deployed_bias()
                shift = torch.round(bias / grid) * grid - bias
                (layer.bn.bias if getattr(layer, "bn", None) is not None else layer.bias).add_(shift)
    return model


def check(report, name: str) -> None:
    assert (report.integer_kernels, report.float_kernels) == (INTEGER_LAYERS[name], 0)
    assert report.agreement >= 0.995, f"agreement {report.agreement}, gap {report.max_logit_gap_steps} steps"


@pytest.mark.parametrize("name, settings", [("lenet5", {}), ("lenet5", {"fat_threshold": 0.3}),
                                            pytest.param("resnet20", {}, marks=BIAS_GRID)])
def test_parity_of_the_model_as_trained(name, settings, models, datasets, tmp_path):
    report = export_model(models(name, **settings), tmp_path / "model.onnx", datasets[name],
                          settings=ExportSettings(keep_on_parity_failure=True, limit=500))
    check(report, name)


@pytest.mark.parametrize("name, settings", [
    ("lenet5", {"wbits": 4, "abits": 4, "fat_threshold": 0.3}),
    ("resnet20", {}),
    ("resnet20", {"fat_threshold": 0.3}),
    ("resnet20", {"wbits": 4, "abits": 4, "fat_threshold": 0.3}),
])
def test_parity_with_biases_on_the_deployed_grid(name, settings, models, datasets, tmp_path):
    model = snap_biases_to_grid(models(name, **settings))
    report = export_model(model, tmp_path / "model.onnx", datasets[name], settings=ExportSettings(limit=500))
    check(report, name)


def test_export_writes_metadata_that_round_trips(models, datasets, tmp_path):
    model, data = models("lenet5", fat_threshold=0.3), datasets["lenet5"]
    path = tmp_path / "out" / "lenet5.onnx"
    report = export_model(model, path, data)
    loaded = onnx.load(path)
    onnx.checker.check_model(loaded, full_check=True)
    meta = ModelMetadata.from_model(loaded)
    assert meta == report.metadata
    assert (meta.input_name, meta.input_shape, meta.layout) == ("input", (1, 28, 28), "NCHW")
    assert (meta.mean, meta.std, meta.num_classes, meta.class_names) == (data.mean, data.std, 10, data.class_names)
    assert (meta.wbits, meta.abits, meta.dataset) == (8, 8, "mnist5k")
    assert meta.recipe["fat_threshold"] == 0.3 and meta.recipe["name"] == "lenet5"
    assert meta.clean_accuracy == report.onnx_accuracy
    assert report.weight_tensors == 5 and report.weight_bytes == 6 * 25 + 16 * 6 * 25 + 120 * 400 + 84 * 120 + 10 * 84
    assert list(tmp_path.joinpath("out").iterdir()) == [path]  # no temporary file left behind
