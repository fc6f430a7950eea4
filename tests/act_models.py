"""Tiny hand-built quantized graphs for the activation-memory tests.

``residual_qdq`` is a QDQ net whose hidden activation is read twice (a residual Add) and whose
MaxPool input is not read by a compute op: input [N, 2, 4, 4] float, output ``logits`` [N, 3].
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def residual_qdq(seed: int = 0, opset: int = 17) -> onnx.ModelProto:
    """Q(input) -> DQ -> Conv -> Q (c_q) -> MaxPool (p_q) -> Flatten (f_q) -> DQ -> MatMul -> Q (h_q);
    Add(DQ(h_q), DQ(h_q)) -> Q (s_q) -> DQ -> MatMul -> Q (out_q) -> DQ -> logits."""
    rng = np.random.default_rng(seed)

    def const(name, value):
        return numpy_helper.from_array(np.asarray(value), name)

    inits = [
        const("x.s", np.float32(0.02)), const("x.z", np.uint8(128)),
        const("cw", rng.integers(-60, 60, (4, 2, 3, 3)).astype(np.int8)), const("cw.s", np.float32(0.01)),
        const("c.s", np.float32(0.03)), const("c.z", np.uint8(0)),
        const("mw", rng.integers(-60, 60, (16, 6)).astype(np.int8)), const("mw.s", np.float32(0.02)),
        const("h.s", np.float32(0.05)), const("h.z", np.uint8(10)),
        const("s.s", np.float32(0.08)), const("s.z", np.uint8(20)),
        const("ow", rng.integers(-60, 60, (6, 3)).astype(np.int8)), const("ow.s", np.float32(0.02)),
        const("o.s", np.float32(0.1)), const("o.z", np.int8(0)),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["input", "x.s", "x.z"], ["x_q"]),
        helper.make_node("DequantizeLinear", ["x_q", "x.s", "x.z"], ["x_f"]),
        helper.make_node("DequantizeLinear", ["cw", "cw.s"], ["cw_f"]),
        helper.make_node("Conv", ["x_f", "cw_f"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("QuantizeLinear", ["c", "c.s", "c.z"], ["c_q"]),
        helper.make_node("MaxPool", ["c_q"], ["p_q"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p_q"], ["f_q"]),
        helper.make_node("DequantizeLinear", ["f_q", "c.s", "c.z"], ["f_f"]),
        helper.make_node("DequantizeLinear", ["mw", "mw.s"], ["mw_f"]),
        helper.make_node("MatMul", ["f_f", "mw_f"], ["h"]),
        helper.make_node("QuantizeLinear", ["h", "h.s", "h.z"], ["h_q"]),
        helper.make_node("DequantizeLinear", ["h_q", "h.s", "h.z"], ["h_a"]),
        helper.make_node("DequantizeLinear", ["h_q", "h.s", "h.z"], ["h_b"]),
        helper.make_node("Add", ["h_a", "h_b"], ["s"]),
        helper.make_node("QuantizeLinear", ["s", "s.s", "s.z"], ["s_q"]),
        helper.make_node("DequantizeLinear", ["s_q", "s.s", "s.z"], ["s_f"]),
        helper.make_node("DequantizeLinear", ["ow", "ow.s"], ["ow_f"]),
        helper.make_node("MatMul", ["s_f", "ow_f"], ["o"]),
        helper.make_node("QuantizeLinear", ["o", "o.s", "o.z"], ["out_q"]),
        helper.make_node("DequantizeLinear", ["out_q", "o.s", "o.z"], ["logits"]),
    ]
    graph = helper.make_graph(nodes, "residual", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                               ["N", 2, 4, 4])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def float_only() -> onnx.ModelProto:
    """A float MatMul: nothing integer to store."""
    w = numpy_helper.from_array(np.ones((4, 3), np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["input", "w"], ["logits"])], "float",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model
