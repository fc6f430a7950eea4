"""The exported graph: int8 weights feeding DequantizeLinear, int32 biases, FATReLU and clipping on uint8 codes."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, numpy_helper
from torch import nn

from edgefault.errors import EdgefaultError
from edgefault.export import build_onnx
from edgefault.models import QuantSettings, QuantWeightLayer, create_model, link_input_quantizers
from edgefault.models.blocks import QuantizedClassifier, linear, relu_quant, signed_quant
from edgefault.runtime import optimized_kernel_counts


class TinyNet(QuantizedClassifier):
    """A 2x2-pixel classifier built only from the blocks: the exporter needs no change for it."""

    def __init__(self, settings: QuantSettings):
        super().__init__((1, 2, 2), 3, settings)
        self.flatten, self.drop = nn.Flatten(), nn.Dropout(0.1)
        self.fc1, self.act = linear(settings, 4, 5), relu_quant(settings)
        self.fc2, self.logits_quant = linear(settings, 5, 3), signed_quant(settings, "logits")
        link_input_quantizers(self)  # what create_model does: biases train on the int32 grid

    def forward(self, x):
        x = self.flatten(self.input_quant(x))
        return self.logits_quant(self.fc2(self.drop(self.act(self.fc1(x)))))


def calibrated(model: nn.Module, seed: int = 0) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    model.train()
    with torch.no_grad():
        model(torch.randn(64, *model.input_shape, generator=generator))
    return model.eval()


def tensors(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def consumers(model: onnx.ModelProto, name: str) -> list[onnx.NodeProto]:
    return [node for node in model.graph.node if name in node.input]


def run_subgraph(model: onnx.ModelProto, source: str, target: str, value: np.ndarray) -> np.ndarray:
    """Run the part of ``model`` between tensors ``source`` and ``target`` on ``value``."""
    inferred = onnx.shape_inference.infer_shapes(model)
    part = onnx.utils.Extractor(inferred).extract_model([source], [target])
    session = ort.InferenceSession(part.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {source: value})[0]


@pytest.fixture(scope="module")
def lenet_fat():
    torch.manual_seed(0)
    return calibrated(create_model("lenet5", fat_threshold=0.3))


def test_int8_weights_feed_dequantize_with_the_trained_codes(lenet_fat):
    graph = build_onnx(lenet_fat)
    values = tensors(graph)
    layers = {name: m for name, m in lenet_fat.named_modules() if isinstance(m, QuantWeightLayer)}
    assert sorted(layers) == ["conv1", "conv2", "fc1", "fc2", "fc3"]
    for name, layer in layers.items():
        codes, scale = layer.integer_weight()
        weight = next(t for t in graph.graph.initializer if t.name == f"{name}.weight")
        assert weight.data_type == TensorProto.INT8
        np.testing.assert_array_equal(values[f"{name}.weight"], codes.numpy())
        (dq,) = consumers(graph, f"{name}.weight")
        assert dq.op_type == "DequantizeLinear" and dq.input[0] == f"{name}.weight"
        assert [a.i for a in dq.attribute if a.name == "axis"] == [0]
        np.testing.assert_array_equal(values[dq.input[1]], scale.numpy())
        assert values[dq.input[2]].dtype == np.int8 and not values[dq.input[2]].any()


def test_biases_are_int32_at_input_times_weight_scale(lenet_fat):
    values = tensors(build_onnx(lenet_fat))
    for name, source in (("conv1", "input_quant"), ("fc1", "act2"), ("fc3", "act4")):
        layer, quant = lenet_fat.get_submodule(name), lenet_fat.get_submodule(source)
        expected_scale = np.float32(quant.step_size().item()) * layer.integer_weight()[1].numpy()
        assert values[f"{name}.bias"].dtype == np.int32
        np.testing.assert_array_equal(values[f"{name}.bias_scale"], expected_scale)
        # The model keeps its bias on that grid, so the int32 codes hold it exactly.
        np.testing.assert_allclose(values[f"{name}.bias"] * expected_scale, layer.deployed_bias().numpy(), rtol=1e-6)


def test_fat_threshold_stays_on_the_uint8_codes():
    model = calibrated(TinyNet(QuantSettings(fat_threshold=0.25)))
    with torch.no_grad():
        model.act.step.fill_(0.1)
    assert model.act.threshold_code() == 2  # codes 0, 1, 2 (values <= 0.25) become 0
    graph = build_onnx(model)
    assert tensors(graph)["act.threshold_code"] == np.array(2, np.uint8)
    producers = {node.output[0]: node for node in graph.graph.node}
    assert producers["act"].op_type == "Mul"  # codes * (codes > t)
    quantized, mask = (producers[name] for name in producers["act"].input)
    # 7-bit activation codes (models/blocks.py): QuantizeLinear, then a Clip to 0..127, then the threshold.
    assert (quantized.op_type, mask.op_type, producers[mask.input[0]].op_type) == ("Clip", "Cast", "Greater")
    assert producers[quantized.input[0]].op_type == "QuantizeLinear"
    assert list(producers[mask.input[0]].input) == [quantized.output[0], "act.threshold_code"]
    fc1 = np.array([[0.04, 0.06, 0.15, 0.24, 0.26]], np.float32)  # codes 0, 1, 2, 2, 3 (round half to even)
    np.testing.assert_array_equal(run_subgraph(graph, "fc1", "act", fc1), [[0, 0, 0, 0, 3]])
    np.testing.assert_array_equal(run_subgraph(graph, "fc1", "act", np.array([[-1, 0.3, 0.35, 25.4, 99]], np.float32)),
                                  [[0, 3, 4, 127, 127]])


def test_fewer_bits_clip_codes_in_the_integer_domain():
    model = calibrated(TinyNet(QuantSettings(wbits=4, abits=4, fat_threshold=0.25)))
    with torch.no_grad():
        model.act.step.fill_(0.1)
    graph = build_onnx(model)
    assert np.abs(tensors(graph)["fc1.weight"]).max() <= 7
    out = run_subgraph(graph, "fc1", "act", np.array([[0.2, 0.3, 1.2, 1.6, 9.0]], np.float32))
    np.testing.assert_array_equal(out, [[0, 3, 12, 15, 15]])
    torch_codes = model.act(torch.tensor([[0.2, 0.3, 1.2, 1.6, 9.0]])) / model.act.step_size()
    np.testing.assert_array_equal(torch.round(torch_codes).detach().numpy(), out)
    pixels = (np.array([100, -100, 0, 1], np.float32) * model.input_quant.step_size().item()).reshape(1, 1, 2, 2)
    signed = run_subgraph(graph, "input", "input_quant", pixels.astype(np.float32))
    np.testing.assert_array_equal(signed.ravel(), [15, 0, 8, 9])  # signed 4-bit: zero point 8, codes 0..15


def test_a_new_architecture_exports_and_runs_integer_kernels():
    model = calibrated(TinyNet(QuantSettings()))
    graph = build_onnx(model)
    counts = optimized_kernel_counts(graph.SerializeToString())
    assert (counts.integer_kernels, counts.float_kernels) == (2, 0)
    x = np.random.default_rng(0).standard_normal((16, 1, 2, 2)).astype(np.float32)
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    step = model.logits_quant.step_size().item()
    assert np.abs(session.run(None, {"input": x})[0] - expected).max() <= 1.001 * step


def test_float_reference_has_dequantized_weights_and_no_qdq(lenet_fat):
    graph = build_onnx(lenet_fat, float_reference=True)
    ops = {node.op_type for node in graph.graph.node}
    assert not ops & {"QuantizeLinear", "DequantizeLinear"}
    assert {"Conv", "Gemm", "Greater", "Mul"} <= ops
    codes, scale = lenet_fat.conv2.integer_weight()
    np.testing.assert_array_equal(tensors(graph)["conv2.weight"], (codes.float() * scale.view(-1, 1, 1, 1)).numpy())
    assert optimized_kernel_counts(graph.SerializeToString()).integer_kernels == 0


def test_unsupported_layers_and_training_mode_are_one_line_errors():
    class WithGelu(TinyNet):
        def forward(self, x):
            return nn.functional.gelu(super().forward(x))

    with pytest.raises(EdgefaultError, match="gelu"):
        build_onnx(calibrated(WithGelu(QuantSettings())))
    with pytest.raises(EdgefaultError, match="eval mode"):
        build_onnx(create_model("lenet5").train())

    class Unquantized(TinyNet):
        def forward(self, x):
            return self.logits_quant(self.fc2(self.act(self.fc1(torch.flatten(x, 1)))))

    with pytest.raises(EdgefaultError, match="no ActQuant"):
        build_onnx(calibrated(Unquantized(QuantSettings())))
