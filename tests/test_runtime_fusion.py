"""What ONNX Runtime's QDQ fusion needs on this x86 CPU, pinned as tests.

The exporter relies on these findings (notes/readme_eval.md has the table): each test builds
a small hand-made QDQ graph and checks which kernels the optimized graph runs.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgefault.runtime.graph import optimized_kernel_counts

ACT_SCALE = 0.05


class QdqGraph:
    """A tiny QDQ graph under construction: 1x8x8 input, activations of one type and zero point."""

    def __init__(self, act: str = "u8", zero_point: int = 0) -> None:
        self.dtype = np.uint8 if act == "u8" else np.int8
        self.zero_point = zero_point
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.rng = np.random.default_rng(0)
        self.count = 0

    def const(self, array) -> str:
        self.count += 1
        name = f"c{self.count}"
        self.initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(self, op: str, inputs: list[str], **attrs) -> str:
        self.count += 1
        output = f"{op.lower()}{self.count}"
        self.nodes.append(helper.make_node(op, inputs, [output], **attrs))
        return output

    def quantize(self, x: str) -> str:
        """Q only: returns the integer tensor."""
        scale, zero = self.const(np.float32(ACT_SCALE)), self.const(self.dtype(self.zero_point))
        self._scale_zero = (scale, zero)
        return self.node("QuantizeLinear", [x, scale, zero])

    def dequantize(self, q: str) -> str:
        return self.node("DequantizeLinear", [q, *self._scale_zero])

    def qdq(self, x: str) -> str:
        return self.dequantize(self.quantize(x))

    def threshold(self, q: str, level: int = 3) -> str:
        """FATReLU on the integer tensor: keep values above the threshold, else the zero point."""
        above = self.node("Greater", [q, self.const(self.dtype(level))])
        return self.node("Where", [above, q, self._scale_zero[1]])

    def weight(self, shape: tuple[int, ...], per_channel: bool = True) -> tuple[str, np.ndarray]:
        values = self.rng.integers(-127, 128, size=shape).astype(np.int8)
        count = shape[0] if per_channel else 1
        scales = (self.rng.random(count) * 0.01 + 0.001).astype(np.float32)
        if per_channel:
            zero = np.zeros(count, np.int8)
            out = self.node("DequantizeLinear", [self.const(values), self.const(scales), self.const(zero)], axis=0)
        else:
            out = self.node("DequantizeLinear", [self.const(values), self.const(scales[0]), self.const(np.int8(0))])
        return out, scales

    def bias(self, weight_scales: np.ndarray, count: int, scale_factor: float = 1.0) -> str:
        """An int32 bias whose scale is input scale x weight scale (times ``scale_factor``)."""
        scale = (np.float32(ACT_SCALE) * weight_scales * np.ones(count, np.float32) * np.float32(scale_factor))
        values = self.rng.integers(-100, 100, count).astype(np.int32)
        return self.node(
            "DequantizeLinear",
            [self.const(values), self.const(scale.astype(np.float32)), self.const(np.zeros(count, np.int32))],
            axis=0,
        )

    def conv(self, x: str, cin: int, cout: int, relu: bool = True, bias_scale_factor: float = 1.0) -> str:
        weight, scales = self.weight((cout, cin, 3, 3))
        y = self.node("Conv", [x, weight, self.bias(scales, cout, bias_scale_factor)], pads=[1, 1, 1, 1])
        return self.node("Relu", [y]) if relu else y

    def gemm(self, x: str, features: int, classes: int = 10) -> str:
        weight, scales = self.weight((classes, features))
        return self.node("Gemm", [x, weight, self.bias(scales, classes)], transB=1)

    def model(self, output: str, classes: int = 10) -> bytes:
        self.nodes.append(helper.make_node("Identity", [output], ["logits"]))
        graph = helper.make_graph(
            self.nodes,
            "fusion_probe",
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 8, 8])],
            [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])],
            self.initializers,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        onnx.checker.check_model(model)
        return model.SerializeToString()


def conv_net(graph: QdqGraph, relu: bool = True, bias_scale_factor: float = 1.0, thresholded: bool = False) -> bytes:
    """input -> QDQ -> conv -> [relu] -> Q [-> threshold] -> DQ -> conv -> ... -> QDQ -> Flatten -> QDQ -> Gemm."""
    x = graph.qdq("input")
    for cin in (1, 4):
        y = graph.conv(x, cin, 4, relu, bias_scale_factor)
        q = graph.quantize(y)
        x = graph.dequantize(graph.threshold(q) if thresholded else q)
    flat = graph.qdq(graph.node("Flatten", [x], axis=1))
    return graph.model(graph.gemm(flat, 4 * 8 * 8))


def kernels(data: bytes):
    return optimized_kernel_counts(data)


def test_u8_activations_with_s8_per_channel_weights_fuse_and_relu_is_dropped():
    counts = kernels(conv_net(QdqGraph("u8", 0)))
    assert counts.ops.get("QLinearConv") == 2 and counts.ops.get("QGemm") == 1
    assert counts.float_kernels == 0 and "Relu" not in counts.ops


def test_int32_bias_must_use_input_scale_times_weight_scale():
    assert kernels(conv_net(QdqGraph("u8", 0), bias_scale_factor=1.001)).float_kernels == 0
    mismatched = kernels(conv_net(QdqGraph("u8", 0), bias_scale_factor=1.1))
    assert mismatched.ops.get("Conv") == 2  # silently left as float convolutions


def test_s8_activations_fuse_only_when_relu_can_be_dropped():
    with_relu_zero_at_0 = kernels(conv_net(QdqGraph("s8", 0)))
    assert with_relu_zero_at_0.ops.get("FusedConv") == 2 and with_relu_zero_at_0.ops.get("QGemm") == 1
    assert kernels(conv_net(QdqGraph("s8", 0), relu=False)).float_kernels == 0
    assert kernels(conv_net(QdqGraph("s8", -128))).float_kernels == 0


def test_uint8_threshold_between_q_and_dq_keeps_neighbouring_convs_fused():
    counts = kernels(conv_net(QdqGraph("u8", 0), thresholded=True))
    assert counts.ops.get("QLinearConv") == 2 and counts.float_kernels == 0
    assert counts.ops.get("Greater") == 2 and counts.ops.get("Where") == 2


@pytest.mark.parametrize("op, fused", [("Add", "QLinearAdd"), ("GlobalAveragePool", "QLinearGlobalAveragePool")])
def test_dq_op_q_becomes_a_qlinear_op(op, fused):
    graph = QdqGraph("u8", 0)
    x = graph.qdq("input")
    a = graph.dequantize(graph.quantize(graph.conv(x, 1, 4)))
    b = graph.dequantize(graph.quantize(graph.conv(a, 4, 4)))
    y = graph.qdq(graph.node("Add", [a, b]) if op == "Add" else graph.node("GlobalAveragePool", [b]))
    features = 4 * 8 * 8 if op == "Add" else 4
    counts = kernels(graph.model(graph.gemm(graph.qdq(graph.node("Flatten", [y], axis=1)), features)))
    assert counts.ops.get(fused) == 1 and counts.float_kernels == 0


def test_maxpool_between_qdq_runs_on_uint8():
    graph = QdqGraph("u8", 0)
    y = graph.dequantize(graph.quantize(graph.conv(graph.qdq("input"), 1, 4)))
    pooled = graph.qdq(graph.node("MaxPool", [y], kernel_shape=[2, 2], strides=[2, 2]))
    counts = kernels(graph.model(graph.gemm(graph.qdq(graph.node("Flatten", [pooled], axis=1)), 4 * 4 * 4)))
    assert counts.ops.get("NhwcMaxPool") == 1 and "MaxPool" not in counts.ops


def test_last_gemm_needs_qdq_on_its_input_not_a_q_after_it():
    graph = QdqGraph("u8", 0)
    y = graph.dequantize(graph.quantize(graph.conv(graph.qdq("input"), 1, 4)))
    unquantized_flatten = graph.node("Flatten", [y], axis=1)
    assert kernels(graph.model(graph.gemm(unquantized_flatten, 4 * 8 * 8))).ops.get("Gemm") == 1
    graph = QdqGraph("u8", 0)
    y = graph.dequantize(graph.quantize(graph.conv(graph.qdq("input"), 1, 4)))
    counts = kernels(graph.model(graph.gemm(graph.qdq(graph.node("Flatten", [y], axis=1)), 4 * 8 * 8)))
    assert counts.ops.get("QGemm") == 1 and counts.float_kernels == 0  # float logits straight out of QGemm


def test_matmul_plus_add_fuses_only_with_a_q_after_it():
    def build(q_after: bool) -> bytes:
        graph = QdqGraph("u8", 0)
        y = graph.dequantize(graph.quantize(graph.conv(graph.qdq("input"), 1, 4)))
        flat = graph.qdq(graph.node("Flatten", [y], axis=1))
        weight, _ = graph.weight((4 * 8 * 8, 10), per_channel=False)
        out = graph.node("Add", [graph.node("MatMul", [flat, weight]), graph.const(np.zeros(10, np.float32))])
        return graph.model(graph.qdq(out) if q_after else out)

    assert kernels(build(False)).ops.get("Gemm") == 1
    assert kernels(build(True)).ops.get("QGemm") == 1


def test_relu_before_q_is_dropped_only_when_the_zero_point_is_the_type_minimum():
    assert kernels(conv_net(QdqGraph("u8", 128))).ops.get("FusedConv") == 2  # Relu stays, convs stay float


def test_float_output_gemm_needs_an_int32_bias_or_none():
    def build(bias: str) -> bytes:
        graph = QdqGraph("u8", 0)
        y = graph.dequantize(graph.quantize(graph.conv(graph.qdq("input"), 1, 4)))
        flat = graph.qdq(graph.node("Flatten", [y], axis=1))
        weight, scales = graph.weight((10, 4 * 8 * 8))
        extra = {"none": [], "int32": [graph.bias(scales, 10)], "float": [graph.const(np.zeros(10, np.float32))]}
        return graph.model(graph.node("Gemm", [flat, weight, *extra[bias]], transB=1))

    assert kernels(build("none")).ops.get("QGemm") == 1
    assert kernels(build("int32")).ops.get("QGemm") == 1
    assert kernels(build("float")).ops.get("Gemm") == 1  # a float bias leaves the last layer in float
