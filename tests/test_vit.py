"""vit_tiny: registry, FATReLU sparsity on its MLP, and an export whose every product is an integer kernel."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edgefault.export import ExportSettings, export_model
from edgefault.models import ActivationMonitor, activation_quantizers, create_model
from edgefault.models.layers import QuantLinear
from edgefault.onnxio import load_model
from edgefault.runtime import PreparedInputs, measure_sparsity
from edgefault.runtime.graph import FLOAT_KERNELS, INTEGER_KERNELS


def test_vit_tiny_is_registered_and_its_sparsity_is_its_mlp_activations():
    model = create_model("vit_tiny", depth=2, fat_threshold=0.0)
    assert list(activation_quantizers(model)) == ["blocks.0.act", "blocks.1.act"]
    torch.manual_seed(0)
    x = torch.randn(16, 1, 28, 28)
    logits = model.train()(x)
    assert logits.shape == (16, 10)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    sparsity = {}
    for threshold in (0.0, 1.0):
        torch.manual_seed(0)
        net = create_model("vit_tiny", depth=2, fat_threshold=threshold)
        net.train()(x)  # the same step-size initialization for both
        with ActivationMonitor(net.eval()) as monitor:
            net(x)
        sparsity[threshold] = monitor.sparsity()["overall"]
    assert sparsity[1.0] > sparsity[0.0] > 0.2


def test_vit_tiny_refuses_a_patch_that_does_not_tile_the_image():
    with pytest.raises(ValueError, match="patch size 5 does not divide the image size 28"):
        create_model("vit_tiny", patch=5)


@pytest.fixture(scope="module")
def trained_vit(mnist5k):
    """A one-block vit_tiny trained for one pass over 1,024 images (about 2 s)."""
    torch.manual_seed(0)
    model = create_model("vit_tiny", depth=1, fat_threshold=0.3)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    images = torch.from_numpy(mnist5k.normalized(mnist5k.train_images[:1024]))
    labels = torch.from_numpy(mnist5k.train_labels[:1024])
    model.train()
    for start in range(0, len(images), 64):
        loss = F.cross_entropy(model(images[start:start + 64]), labels[start:start + 64])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def test_vit_export_runs_every_product_on_integers_and_matches_pytorch(trained_vit, mnist5k, tmp_path):
    report = export_model(trained_vit, tmp_path / "vit.onnx", mnist5k, settings=ExportSettings(limit=300))
    ops = report.op_counts
    linears = sum(isinstance(m, QuantLinear) for m in trained_vit.modules())
    assert ops.get("QGemm") == linears and ops.get("QLinearConv") == 1  # every weight-bearing layer
    assert not any(ops.get(op) for op in FLOAT_KERNELS)  # no float Conv/Gemm/MatMul at all
    # q @ k^T and softmax(scores) @ v: two activation-by-activation products per block, both integer.
    assert sorted(report.activation_products.values()) == ["MatMulIntegerToFloat", "QLinearMatMul"]
    assert set(report.activation_products.values()) <= INTEGER_KERNELS
    assert report.passed and report.agreement >= 0.995 and report.torch_accuracy > 0.3
    assert report.weight_tensors == linears + 1


def test_eval_sparsity_covers_the_vit_mlp_activations(trained_vit, mnist5k, tmp_path):
    export_model(trained_vit, tmp_path / "vit.onnx", mnist5k, settings=ExportSettings(limit=50))
    images = np.ascontiguousarray(mnist5k.normalized(mnist5k.test_images[:100]))
    prepared = PreparedInputs(images, mnist5k.test_labels[:100])
    report = measure_sparsity(load_model(tmp_path / "vit.onnx"), prepared, "input")
    by_tensor = {a.tensor: a for a in report.activations}
    assert by_tensor["blocks_0_act"].elements_per_image == 16 * 128  # every token of every image counted
    with ActivationMonitor(trained_vit) as monitor:
        trained_vit(torch.from_numpy(images))
    assert by_tensor["blocks_0_act"].zero_share == pytest.approx(monitor.sparsity()["blocks.0.act"], abs=0.002)
    assert by_tensor["blocks_0_act"].zero_share > 0.3  # FATReLU at T = 0.3 on the MLP
    fc2 = next(layer for layer in report.layers if layer.node == "blocks_0_fc2")
    assert fc2.macs_per_image == 16 * 128 * 64
