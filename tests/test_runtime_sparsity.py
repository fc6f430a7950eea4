"""Activation sparsity and MAC-skip share on a tiny hand-built graph with known zeros."""

from __future__ import annotations

import itertools

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from edgefault.runtime.activations import MacLayer, conv_input_weights, coverage, find_mac_layers, \
    find_quantized_tensors
from edgefault.runtime.inputs import PreparedInputs
from edgefault.runtime.sparsity import measure_sparsity
from onnx_builders import classifier


def tiny_model() -> onnx.ModelProto:
    """input 1x4x4 -> Q(zp 10) -> DQ -> Conv(2 ch, 3x3, stride 2, pad 1, zero weights, bias -1/+5) -> Relu
    -> Q(zp 0) -> DQ -> Flatten -> Q -> DQ -> Gemm(3 classes).

    Conv outputs equal the bias, so channel 0 is always zero after Relu and channel 1 never is.
    """
    def tensor(name, array):
        return numpy_helper.from_array(np.asarray(array), name)

    initializers = [
        tensor("one", np.float32(1.0)),
        tensor("zp_in", np.uint8(10)),
        tensor("zp0", np.uint8(0)),
        tensor("w_q", np.zeros((2, 1, 3, 3), np.int8)),
        tensor("w_s", np.ones(2, np.float32)),
        tensor("w_zp", np.zeros(2, np.int8)),
        tensor("b", np.array([-1.0, 5.0], np.float32)),
        tensor("fc_q", np.ones((3, 8), np.int8)),
        tensor("fc_s", np.float32(1.0)),
        tensor("fc_zp", np.int8(0)),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["input", "one", "zp_in"], ["q_in"], name="quant_in"),
        helper.make_node("DequantizeLinear", ["q_in", "one", "zp_in"], ["dq_in"]),
        helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_zp"], ["w"], axis=0),
        helper.make_node("Conv", ["dq_in", "w", "b"], ["c"], name="conv", strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("QuantizeLinear", ["r", "one", "zp0"], ["q_c"]),
        helper.make_node("DequantizeLinear", ["q_c", "one", "zp0"], ["dq_c"]),
        helper.make_node("Flatten", ["dq_c"], ["f"], axis=1),
        helper.make_node("QuantizeLinear", ["f", "one", "zp0"], ["q_f"]),
        helper.make_node("DequantizeLinear", ["q_f", "one", "zp0"], ["dq_f"]),
        helper.make_node("DequantizeLinear", ["fc_q", "fc_s", "fc_zp"], ["fc_w"]),
        helper.make_node("Gemm", ["dq_f", "fc_w"], ["logits"], name="fc", transB=1),
    ]
    return classifier(nodes, initializers, (1, 4, 4), 3)


def tiny_inputs() -> PreparedInputs:
    images = np.ones((2, 1, 4, 4), np.float32)
    images[0, 0, 0, 0] = images[0, 0, 1, 1] = 0.0  # quantized to the zero point 10
    return PreparedInputs(images, np.zeros(2, np.int64))


def test_graph_analysis_finds_tensors_and_layers():
    model = tiny_model()
    tensors = find_quantized_tensors(model)
    assert [(t.name, t.zero_point) for t in tensors] == [("q_in", (10,)), ("q_c", (0,)), ("q_f", (0,))]
    layers = find_mac_layers(model, tensors)
    assert [(layer.node, layer.activation, layer.kind) for layer in layers] == [
        ("conv", "q_in", "conv"), ("fc", "q_f", "linear")]
    assert layers[1].out_features == 3


def test_sparsity_and_mac_skip_match_hand_counts():
    report = measure_sparsity(tiny_model(), tiny_inputs(), "input")
    shares = {a.tensor: a.zero_share for a in report.activations}
    assert shares == {"q_in": pytest.approx(2 / 32), "q_c": 0.5, "q_f": 0.5}
    # Conv, stride 2, pad 1, 3 taps on a length-4 axis: 2 outputs per axis, coverage [1, 2, 1, 1].
    # Dense MACs per image (a dense array's, padding taps included) = 2 out x 1 in x 9 taps x 4 positions = 72;
    # 2 * 5 * 5 = 50 of them read stored values, the other 22 fall on padding and are zero inputs.
    # Zeros of image 0 at (0,0) and (1,1) skip 2*1*1 + 2*2*2 = 10 more.
    conv, fc = report.layers
    assert conv.macs_per_image == 72 and conv.skip_share == pytest.approx((22 + 10 + 22) / 144)
    assert fc.macs_per_image == 24 and fc.skip_share == pytest.approx(0.5)
    assert report.macs_per_image == 96
    assert report.mac_skip_share == pytest.approx((54 + 2 * 12) / (144 + 48))


def test_coverage_of_a_padded_axis():
    assert coverage(4, 3, 1, 1, 1, 1).tolist() == [2, 3, 3, 2]
    assert coverage(4, 3, 2, 1, 1, 1).tolist() == [1, 2, 1, 1]


def brute_force_weights(layer: MacLayer, height: int, width: int) -> np.ndarray:
    """Count, for each input position of one channel, the MACs that read it, by walking every output tap."""
    (kh, kw), (sh, sw), (dh, dw) = layer.kernel, layer.strides, layer.dilations
    top, left, bottom, right = layer.pads
    out_h = (height + top + bottom - dh * (kh - 1) - 1) // sh + 1
    out_w = (width + left + right - dw * (kw - 1) - 1) // sw + 1
    counts = np.zeros((height, width), np.int64)
    for oh, ow, i, j in itertools.product(range(out_h), range(out_w), range(kh), range(kw)):
        y, x = oh * sh - top + i * dh, ow * sw - left + j * dw
        if 0 <= y < height and 0 <= x < width:
            counts[y, x] += layer.out_channels // layer.group
    return counts


@pytest.mark.parametrize(
    "kernel, strides, dilations, pads, group",
    [
        ((3, 3), (1, 1), (1, 1), (1, 1, 1, 1), 1),
        ((3, 2), (2, 1), (1, 2), (0, 1, 2, 0), 2),
        ((5, 5), (3, 2), (2, 1), (2, 2, 2, 2), 4),
    ],
)
def test_conv_input_weights_match_brute_force(kernel, strides, dilations, pads, group):
    layer = MacLayer("c", "Conv", "x", "conv", out_channels=8, group=group, kernel=kernel, strides=strides,
                     dilations=dilations, pads=pads)
    assert np.array_equal(conv_input_weights(layer, (9, 7)), brute_force_weights(layer, 9, 7))


def test_same_upper_padding_matches_explicit_pads():
    same = MacLayer("c", "Conv", "x", "conv", out_channels=4, kernel=(3, 3), strides=(2, 2), dilations=(1, 1),
                    pads=(0, 0, 0, 0), auto_pad="SAME_UPPER")
    # Length 8, stride 2, 3 taps: 4 outputs need 1 padding cell, put at the end by SAME_UPPER.
    explicit = MacLayer("c", "Conv", "x", "conv", out_channels=4, kernel=(3, 3), strides=(2, 2), dilations=(1, 1),
                        pads=(0, 0, 1, 1))
    assert np.array_equal(conv_input_weights(same, (8, 8)), conv_input_weights(explicit, (8, 8)))
